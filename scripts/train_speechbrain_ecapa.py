"""A SpeechBrain ECAPA-TDNN speaker model trained on synthesized speech, saved in the published folder layout.

    python scripts/train_speechbrain_ecapa.py /tmp/spk-trained --channels 512 --steps 300

Every weight is trained (unlike the random folders of the tests): speakers are espeak-ng voices (language voice
+ variant at a fixed pitch and speed), the encoder and SpeechBrain's cosine classifier learn them with
SpeechBrain's additive angular margin loss, then `mean_var_norm_emb` takes the global mean of the training
embeddings, as spkrec-ecapa-voxceleb's does. The modules are SpeechBrain's own (from the folder's
hyperparams.yaml); the folder is then what `voxport build --arch speechbrain` reads, with trained weight
distributions instead of initial ones.

Also writes, beside the folder, `<folder>-heldout/`: WAV files of utterances the training never saw (other
sentences of the training speakers, and speakers not trained on), for `voxport build --audio` and evaluation.
Prints the training accuracy and the equal error rate on held-out trials. Needs espeak-ng.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from make_ecapa_checkpoint import FEMALE, LANGUAGES, MALE  # noqa: E402

from voxport.evaluate.speakers import eer, same_speaker, trial_scores  # noqa: E402
from voxport.verify.speech import CLIPS, SR, Voice, speech_available, synthesize  # noqa: E402

# sentences every speaker may say (the verification clips' sentences excluded)
SENTENCES = [s for lang in LANGUAGES.values() for s in lang] + [
    "The museum opens at ten and closes late on Fridays.",
    "Fresh bread is sold at the market every morning.",
    "He forgot his umbrella and came home soaking wet.",
    "Our neighbours planted three apple trees last spring.",
    "The orchestra played until well after midnight.",
    "Remember to switch off the lights before you leave.",
]


def speakers(rng, n: int) -> list:
    """n distinct voices: a language voice with a male or female variant, pitch and speed fixed per speaker."""
    held = {(v.voice, v.pitch, v.speed) for v, _ in CLIPS}
    langs = ["en-us", "en", "pt-br", "pt", "es", "de", "fr", "it"]
    out, seen = [], set()
    while len(out) < n:
        gender = "male" if len(out) % 2 == 0 else "female"
        variant = (MALE if gender == "male" else FEMALE)[int(rng.integers(len(MALE if gender == "male" else FEMALE)))]
        lang = langs[int(rng.integers(len(langs)))]
        v = Voice(lang.split("-")[0], f"{lang}+{variant}", gender, speed=int(rng.integers(125, 196)), pitch=int(rng.integers(25, 76)))
        key = (v.voice, v.pitch // 10, v.speed // 20)
        if key in seen or (v.voice, v.pitch, v.speed) in held:
            continue
        seen.add(key)
        out.append(v)
    return out


def synth_all(voices: list, sentences: list) -> list:
    """Per voice, the clips of the given sentences."""
    return [[synthesize(s, v) for s in sentences] for v in voices]


def crop(rng, a: np.ndarray, length: int) -> np.ndarray:
    if len(a) < length:
        a = np.concatenate([a, np.zeros(length - len(a), np.float32)])
    start = int(rng.integers(0, len(a) - length + 1))
    x = a[start:start + length].astype(np.float64)
    x = x / (np.abs(x).max() + 1e-9) * 10 ** rng.uniform(-1.0, 0.0)
    return np.clip(x + 10 ** rng.uniform(-4.5, -2.5) * rng.standard_normal(length), -1, 1).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--channels", type=int, default=512, help="ECAPA width C (spkrec-ecapa-voxceleb: 1024)")
    ap.add_argument("--speakers", type=int, default=48)
    ap.add_argument("--unseen", type=int, default=8, help="extra speakers for held-out trials only")
    ap.add_argument("--train-utts", type=int, default=10)
    ap.add_argument("--test-utts", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=2.0, help="training crop length")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not speech_available():
        print("espeak-ng is not installed: apt-get install espeak-ng", file=sys.stderr)
        return 2
    if os.path.exists(args.folder):
        print(f"{args.folder} exists; remove it first", file=sys.stderr)
        return 2
    import torch
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    from voxport.archs.speechbrain import make_folder

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    voices = speakers(rng, args.speakers + args.unseen)
    order = rng.permutation(len(SENTENCES))
    train_s = [SENTENCES[i] for i in order[: args.train_utts]]
    test_s = [SENTENCES[i] for i in order[args.train_utts: args.train_utts + args.test_utts]]
    train = synth_all(voices[: args.speakers], train_s)
    test = synth_all(voices, test_s)
    print(f"synthesized {sum(map(len, train)) + sum(map(len, test))} utterances of {len(voices)} voices in {time.time() - t0:.0f} s",
          flush=True)

    labels = [f"spk{i:03d}" for i in range(args.speakers)]
    C = args.channels
    tmp = tempfile.mkdtemp(prefix=".train-", dir=os.path.dirname(os.path.abspath(args.folder)) or ".")
    try:
        make_folder(tmp, channels=(C, C, C, C, 3 * C), lin_neurons=192, n_mels=80, attention_channels=128, se_channels=128,
                    classifier="ecapa", labels=labels, emb_norm=True, seed=args.seed)
        hp = load_hyperpyyaml(open(os.path.join(tmp, "hyperparams.yaml")).read())
        feats, norm, model, clf = hp["compute_features"], hp["mean_var_norm"], hp["embedding_model"], hp["classifier"]
        model.load_state_dict(torch.load(os.path.join(tmp, "embedding_model.ckpt"), weights_only=True))
        loss_fn = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
        params = list(model.parameters()) + list(clf.parameters())
        opt = torch.optim.Adam(params, lr=2e-3, weight_decay=2e-5)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=args.steps, pct_start=0.15)
        length = int(args.seconds * SR)

        def embed(w):
            x = feats(w)
            return model(norm(x, torch.ones(len(w))), torch.ones(len(w)))

        model.train()
        clf.train()
        hits, seen = 0, 0
        for step in range(args.steps):
            spk = rng.integers(args.speakers, size=args.batch)
            w = torch.from_numpy(np.stack([crop(rng, train[s][int(rng.integers(len(train[s])))], length) for s in spk]))
            y = torch.from_numpy(spk).long()
            out = clf(embed(w))  # [B, 1, speakers] cosine scores
            loss = loss_fn(out, y[:, None])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            hits += int((out.squeeze(1).argmax(-1) == y).sum())
            seen += len(y)
            if (step + 1) % 25 == 0:
                print(f"step {step + 1}/{args.steps}: loss {loss.item():.3f}, train accuracy {hits / seen:.3f} "
                      f"({time.time() - t0:.0f} s)", flush=True)
                hits, seen = 0, 0
        model.eval()
        clf.eval()

        def embed_clips(clips):
            with torch.no_grad():
                return torch.cat([embed(torch.from_numpy(c)[None]) for c in clips]).squeeze(1)

        # global embedding mean from the training utterances (spkrec-ecapa-voxceleb's mean_var_norm_emb)
        mvn = hp["mean_var_norm_emb"]
        mvn.__init__(norm_type="global", std_norm=False)
        mvn.train()
        with torch.no_grad():
            all_train = embed_clips([c for spk in train for c in spk])
            mvn(all_train[:, None], torch.ones(len(all_train)))
        mvn.eval()
        torch.save(model.state_dict(), os.path.join(tmp, "embedding_model.ckpt"))
        torch.save(clf.state_dict(), os.path.join(tmp, "classifier.ckpt"))
        mvn._save(os.path.join(tmp, "mean_var_norm_emb.ckpt"))
        with open(os.path.join(tmp, "hyperparams.yaml")) as f:
            text = f.read().replace("(random weights, published layout)", f"(trained on {args.speakers} synthesized voices)")
        with open(os.path.join(tmp, "hyperparams.yaml"), "w") as f:
            f.write(text)

        # held-out trials: every pair of test utterances (training speakers' other sentences + unseen speakers)
        flat = [(i, c) for i, spk in enumerate(test) for c in spk]
        e = embed_clips([c for _, c in flat])
        scores, same = trial_scores(e.numpy()), same_speaker([i for i, _ in flat])
        print(f"held-out EER {eer(scores, same)[0]:.3f} over {len(scores)} trials ({int(same.sum())} same-speaker); "
              f"training took {time.time() - t0:.0f} s", flush=True)
        heldout = args.folder.rstrip("/") + "-heldout"
        os.makedirs(heldout, exist_ok=True)
        import soundfile as sf

        for i, spk in enumerate(test):
            for j, c in enumerate(spk):
                name = f"{labels[i] if i < args.speakers else f'unseen{i - args.speakers:02d}'}_{j}.wav"
                sf.write(os.path.join(heldout, name), c, SR)
        os.rename(tmp, args.folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
