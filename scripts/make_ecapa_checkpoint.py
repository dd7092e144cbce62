"""An ECAPA voice-gender checkpoint made trained-like from synthesized speech, in the upstream layout.

    python scripts/make_ecapa_checkpoint.py --C 1024 --seed 1 --out /tmp/ecapa-speech-1024

Random init from --seed (PyTorch's default initializers), then:
1. BatchNorm statistics from espeak-ng speech: every BatchNorm in train mode with a cumulative average
   (momentum None) over batches of random crops, at random gains, of many voices and languages;
2. a head fitted by logistic regression (Adam, cross-entropy) on male vs female voices: fc7 on the 192-d
   embedding, or with --head fc6 also fc6 (then bn6's statistics are re-estimated and fc7 refitted).

With --train-steps N every weight is trained instead (end to end, cross-entropy on male vs female crops of
1-2 s, Adam with a one-cycle schedule, BatchNorm on batch statistics), as the upstream model was trained:
trained weight and activation distributions, not initial ones (C=1024: ~1.4 s a step of 16 crops on 2 cores).

The voices and sentences here are disjoint from voxport.verify.speech.CLIPS, so the verification clips
stay held out. Writes config.json {"C": C} + model.safetensors (temporary folder, then renamed).
Needs espeak-ng (apt-get install espeak-ng).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from voxport.verify.speech import CLIPS, SR, Voice, speech_available, speech_clips, synthesize  # noqa: E402

LANGUAGES = {  # espeak-ng voice -> sentences (none of them in the verification set)
    "en-us": [
        "Yesterday the children painted a large picture of the harbour.",
        "My brother keeps his bicycle in the garden shed.",
        "Could you tell me the way to the train station?",
        "The weather will be cold and windy tomorrow afternoon.",
    ],
    "en": [
        "We had tea and biscuits before the meeting started.",
        "The library closes early on Sundays during the winter.",
        "A small dog was sleeping under the kitchen table.",
    ],
    "pt-br": [
        "O menino comprou pão e leite na padaria da esquina.",
        "Amanhã vamos viajar para o interior com a família.",
        "A professora explicou a lição com muita paciência.",
    ],
    "pt": [
        "O comboio para Lisboa parte às nove horas.",
        "Os pescadores voltaram cedo por causa do mau tempo.",
    ],
    "es": ["Mi abuela prepara una sopa deliciosa los domingos.", "El perro corre detrás de la pelota en el parque."],
    "fr": ["Nous avons visité le musée avec nos amis hier soir."],
    "de": ["Der Zug nach Berlin hat heute leider Verspätung."],
    "it": ["La nonna racconta sempre storie molto divertenti."],
}
# espeak-ng variants with a male or female voice (median f0 ~76-127 Hz male, 172-276 Hz female)
MALE = ["m2", "m4", "m6", "m8", "Alex", "Andy", "david", "ed", "john", "max", "paul", "rob",
        "robert", "travis", "victor", "benjamin", "marcelo", "pedro", "Diogo", "Henrique", "Hugo", "Mike", "Lee"]
FEMALE = ["f3", "Annie", "Alicia", "Andrea", "aunty", "belinda", "linda", "steph", "anika", "grandma"]


def training_voices(rng: np.random.Generator, per_gender: int = 24) -> list:
    """(Voice, sentence) pairs: every variant at least once, languages and sentences spread, pitch and speed varied."""
    held_out = {v.voice for v, _ in CLIPS}
    held_text = {t for _, t in CLIPS}
    langs = list(LANGUAGES)
    out = []
    for gender, variants in (("male", MALE), ("female", FEMALE)):
        for i in range(per_gender):
            variant = variants[i % len(variants)]
            lang = langs[int(rng.integers(len(langs)))] if i >= len(langs) else langs[i]
            text = LANGUAGES[lang][int(rng.integers(len(LANGUAGES[lang])))]
            voice = Voice(lang.split("-")[0], f"{lang}+{variant}", gender,
                          speed=int(rng.integers(130, 191)), pitch=int(rng.integers(35, 66)))
            assert voice.voice not in held_out and text not in held_text
            out.append((voice, text))
    return out


def crops(rng, clips: list, n: int, length: int) -> np.ndarray:
    """n random crops of `length` samples at random gains (peak 0.1-1), padded with a noise floor if short."""
    rows = []
    for _ in range(n):
        a = clips[int(rng.integers(len(clips)))]
        if len(a) < length:
            a = np.concatenate([a, np.zeros(length - len(a), np.float32)])
        start = int(rng.integers(0, len(a) - length + 1))
        x = a[start:start + length].astype(np.float64)
        x = x / (np.abs(x).max() + 1e-9) * 10 ** rng.uniform(-1.0, 0.0)
        x = x + 10 ** rng.uniform(-4.5, -2.5) * rng.standard_normal(length)
        rows.append(np.clip(x, -1, 1))
    return np.stack(rows).astype(np.float32)


def batchnorm_from_speech(model, rng, clips: list, batches: int = 16, batch_size: int = 8) -> None:
    """Every BatchNorm's running statistics: cumulative average over speech batches in train mode."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            length = int(rng.uniform(1.0, 2.5) * SR)
            model(torch.from_numpy(crops(rng, clips, batch_size, length)))
    for m in bns:
        m.momentum = 0.1
    model.eval()


def features(model, x: np.ndarray, chunk: int = 8):
    """(bn5 output, fc7 input) for a batch, in eval mode."""
    import torch

    got = {}
    h1 = model.bn5.register_forward_hook(lambda mod, i, o: got.__setitem__("bn5", o))
    h2 = model.fc7.register_forward_hook(lambda mod, i, o: got.__setitem__("emb", i[0]))
    z, e = [], []
    try:
        with torch.no_grad():
            for i in range(0, len(x), chunk):
                model(torch.from_numpy(x[i:i + chunk]))
                z.append(got["bn5"])
                e.append(got["emb"])
    finally:
        h1.remove()
        h2.remove()
    return torch.cat(z), torch.cat(e)


def fit_logistic(layer, X, y, steps: int, lr: float = 1e-2, weight_decay: float = 1e-3) -> float:
    """Fit a Linear layer (in place) by cross-entropy with Adam; returns the training accuracy."""
    import torch

    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(X), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((layer(X).argmax(1) == y).float().mean())


def fit_head(model, rng, male: list, female: list, n: int = 96, steps: int = 400, head: str = "fc7") -> dict:
    """Logistic-regression head on male (0) vs female (1) crops of 0.75-2 s."""
    import torch

    xs, ys = [], []
    for label, clips in ((0, male), (1, female)):
        for _ in range(n // 8):
            length = int(rng.uniform(0.75, 2.0) * SR)
            xs.append(crops(rng, clips, 8, length))
            ys += [label] * 8
    Z, E = zip(*(features(model, x) for x in xs))
    Z, E = torch.cat(Z), torch.cat(E)
    y = torch.tensor(ys)
    torch.manual_seed(int(rng.integers(1 << 30)))
    info = {"examples": len(y)}
    if head == "fc6":
        # fc6 and fc7 together on bn5's output, bn6 on batch statistics; then bn6's running statistics
        # from the new fc6 outputs, and fc7 refitted on the eval-mode embedding
        stack = torch.nn.Sequential(model.fc6, model.bn6, torch.nn.ReLU(), model.fc7)
        stack.train()
        info["fc6_train_accuracy"] = fit_logistic(stack, Z, y, steps, lr=1e-3)
        model.bn6.reset_running_stats()
        model.bn6.momentum = None
        with torch.no_grad():
            model.bn6(model.fc6(Z))
        model.bn6.momentum = 0.1
        model.eval()
        with torch.no_grad():
            E = torch.relu(model.bn6(model.fc6(Z)))
    for p in model.fc7.parameters():
        p.requires_grad_(True)
    info["train_accuracy"] = fit_logistic(model.fc7, E, y, steps)
    model.eval()
    return info


def train_end_to_end(model, rng, male: list, female: list, steps: int, batch: int = 16, lr: float = 1e-3,
                     log=print) -> dict:
    """Every weight trained on male (0) vs female (1) crops of 1-2 s; BatchNorm running statistics as in training."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    t0, hits, seen = time.time(), 0, 0
    for step in range(steps):
        length = int(rng.uniform(1.0, 2.0) * SR)
        half = batch // 2
        x = torch.from_numpy(np.concatenate([crops(rng, male, half, length), crops(rng, female, batch - half, length)]))
        y = torch.tensor([0] * half + [1] * (batch - half))
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        hits += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if (step + 1) % 50 == 0:
            log(f"step {step + 1}/{steps}: loss {loss.item():.3f}, train accuracy {hits / seen:.3f} ({time.time() - t0:.0f} s)")
            hits, seen = 0, 0
    model.eval()
    return {"train_steps": steps, "batch": batch}


def held_out_accuracy(model) -> dict:
    """Accuracy on voxport's verification clips (never used above), whole clips and 0.75 s windows."""
    import torch

    from voxport.archs.suite import windows

    whole = win = win_n = 0
    clips = speech_clips()
    with torch.no_grad():
        for c in clips:
            want = 0 if c.gender == "male" else 1
            whole += int(model(torch.from_numpy(c.audio[None])).argmax(1)[0] == want)
            w = windows(c.audio)
            win += int((model(torch.from_numpy(w)).argmax(1) == want).sum())
            win_n += len(w)
    return {"clips": f"{whole}/{len(clips)}", "windows_0.75s": f"{win}/{win_n}"}


def make_trained_like(model, seed: int, head: str = "fc7", train_steps: int = 0, log=print) -> dict:
    """BatchNorm statistics from speech and a fitted head (or, with train_steps, every weight trained), in place;
    `model` is any ECAPA_gender-layout module."""
    rng = np.random.default_rng(seed + 1000)
    t0 = time.time()
    pairs = training_voices(rng, per_gender=48 if train_steps else 24)
    audio = [(v.gender, synthesize(text, v)) for v, text in pairs]
    male = [a for g, a in audio if g == "male"]
    female = [a for g, a in audio if g == "female"]
    log(f"synthesized {len(audio)} training sentences ({len(male)} male, {len(female)} female) in {time.time() - t0:.0f} s")
    t0 = time.time()
    if train_steps:
        info = train_end_to_end(model, rng, male, female, train_steps, log=log)
        log(f"trained every weight in {time.time() - t0:.0f} s")
        info["held_out"] = held_out_accuracy(model)
        log(f"held-out verification clips: {info['held_out']}")
        return info
    batchnorm_from_speech(model, rng, male + female)
    log(f"BatchNorm statistics from speech in {time.time() - t0:.0f} s")
    t0 = time.time()
    info = fit_head(model, rng, male, female, head=head)
    log(f"head ({head}) fitted in {time.time() - t0:.0f} s: {info}")
    info["held_out"] = held_out_accuracy(model)
    log(f"held-out verification clips: {info['held_out']}")
    return info


def save_checkpoint(model, C: int, out: str, force: bool = False) -> None:
    """config.json + model.safetensors, written to a temporary folder and renamed."""
    from safetensors.torch import save_file

    if os.path.exists(out):
        if not force:
            raise FileExistsError(f"{out} exists; pass --force to replace it")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-ecapa-", dir=parent)
    try:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump({"C": C}, f)
        sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(tmp, "model.safetensors"))
        for name in ("config.json", "model.safetensors"):
            os.chmod(os.path.join(tmp, name), 0o644)
        os.chmod(tmp, 0o755)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--C", type=int, default=1024, help="channels (upstream: 1024)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    ap.add_argument("--head", choices=["fc7", "fc6"], default="fc7", help="fit fc7 only, or fc6 and fc7")
    ap.add_argument("--train-steps", type=int, default=0,
                    help="train every weight end to end for this many steps (0: BatchNorm statistics and a head only)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    a = ap.parse_args(argv)
    if not speech_available():
        print("espeak-ng is not installed; apt-get install espeak-ng", file=sys.stderr)
        return 2
    if os.path.exists(a.out) and not a.force:
        print(f"{a.out} exists; pass --force to replace it", file=sys.stderr)
        return 2
    import torch

    from voxport.archs.ecapa import build_model

    torch.manual_seed(a.seed)
    model = build_model(a.C)
    info = make_trained_like(model, a.seed, head=a.head, train_steps=a.train_steps)
    save_checkpoint(model, a.C, a.out, force=a.force)
    print(json.dumps({"out": a.out, "C": a.C, "seed": a.seed, **info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
