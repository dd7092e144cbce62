"""SpeechBrain ECAPA-TDNN pretrained folders (the layout of speechbrain/spkrec-ecapa-voxceleb and
speechbrain/lang-id-voxlingua107-ecapa): speaker embeddings, and class scores when the folder has a classifier.

The folder is loaded with SpeechBrain itself (`EncoderClassifier`), which is the reference: `encode_batch` for
the embeddings (then `mean_var_norm_emb` when the folder has it) and `classify_batch` for the scores. The
exported module wraps SpeechBrain's own encoder layers and lifts what does not export into members:
- the Fbank front end (STFT, power spectrum, mel filterbank, dB with the top_db floor per clip): the STFT as a
  strided Conv1d holding the windowed DFT basis (both exporters, both opsets); the filterbank matrix is read from
  SpeechBrain's Filterbank once;
- the relative-length masking: `attention_mask` gives each row's valid samples, the relative length is
  valid / total as SpeechBrain's `wav_lens`, and the frame masks of the sentence mean normalisation, the SE
  blocks and the attentive statistics pooling are built from it with the same float32 arithmetic.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

import numpy as np

from ..errors import CheckpointError
from . import register
from .base import ArchSpec, Case, Loaded, Recipe
from .dsp import dft_basis
from .source import card_license, checkpoint_record, read_license, recorded_folder, resolve_checkpoint, sha256_file

ECAPA = "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"
FBANK = "speechbrain.lobes.features.Fbank"
FILES = ["hyperparams.yaml", "embedding_model.ckpt", "mean_var_norm_emb.ckpt", "classifier.ckpt", "label_encoder.txt"]
# hyperpyyaml tags that import or call Python: only these packages may be named (a yaml from a stranger is code)
CALL_TAG = re.compile(r"!(new|name|apply|module):\s*([A-Za-z_][\w.]*)")
ALLOWED = ("speechbrain.", "torch.nn.")


def _quiet():
    import logging

    for name in ("speechbrain", "speechbrain.utils", "speechbrain.utils.fetching", "speechbrain.utils.parameter_transfer"):
        logging.getLogger(name).setLevel(logging.ERROR)


def check_yaml(path: str) -> str:
    """Refuse, before SpeechBrain runs it, a hyperparams.yaml that calls code outside SpeechBrain and torch.nn, or
    whose encoder is not ECAPA-TDNN. Returns the text."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path} ({type(e).__name__}); pass a SpeechBrain pretrained folder") from None
    if re.search(r"!include\b", text):
        raise CheckpointError(f"{os.path.basename(path)} includes another file (!include); inline it, then run again")
    for tag, target in CALL_TAG.findall(text):
        if not target.startswith(ALLOWED):
            raise CheckpointError(f"hyperparams.yaml calls {target} (!{tag}:); voxport runs only speechbrain.* and torch.nn.* "
                                  "from a yaml: remove it or pass a published SpeechBrain folder")
    m = re.search(r"^embedding_model:\s*!new:\s*([\w.]+)", text, re.M)
    if not m:
        raise CheckpointError("hyperparams.yaml has no top-level `embedding_model: !new:...`; pass a SpeechBrain "
                              "EncoderClassifier folder (e.g. spkrec-ecapa-voxceleb)")
    if m.group(1) != ECAPA:
        raise CheckpointError(f"the encoder is {m.group(1)}; --arch speechbrain supports the ECAPA-TDNN encoder "
                              f"({ECAPA}) only, not x-vector or ResNet encoders yet")
    return text


def _build_front_end(fbank):
    """SpeechBrain's Fbank (no deltas, no context) as an exportable module: [B, N] -> [B, T, n_mels] dB."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    stft, fb = fbank.compute_STFT, fbank.compute_fbanks
    n_fft, hop, win = int(stft.n_fft), int(stft.hop_length), int(stft.win_length)
    window = stft.window.detach().float().cpu()
    # the mel matrix exactly as SpeechBrain builds it: its own forward on the identity, without the dB step
    log_mel = fb.log_mel
    fb.log_mel = False
    try:
        with torch.no_grad():
            matrix = fb(torch.eye(n_fft // 2 + 1)[None])[0].float()
    finally:
        fb.log_mel = log_mel

    class LogFbank(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_fft, self.hop, self.win = n_fft, hop, win
            self.multiplier, self.amin = float(fb.multiplier), float(fb.amin)
            self.db_offset = float(fb.multiplier * fb.db_multiplier)
            self.top_db = float(fb.top_db)
            self.log_mel = bool(log_mel)
            self.register_buffer("fb", matrix, persistent=False)
            # the window zero-padded to n_fft (centred, as torch.stft does) times the real DFT basis
            self.register_buffer("dft", dft_basis(window, n_fft), persistent=False)

        def forward(self, x):
            half = self.n_fft // 2
            y = F.conv1d(F.pad(x.unsqueeze(1), (half, half)), self.dft, stride=self.hop)  # center=True, zero padding
            re_, im = y[:, : half + 1], y[:, half + 1:]
            spec = re_ * re_ + im * im
            x = torch.matmul(spec.transpose(1, 2), self.fb)  # [B, T, n_mels]
            if not self.log_mel:
                return x
            x = self.multiplier * torch.log10(torch.clamp(x, min=self.amin)) - self.db_offset
            floor = x.amax(dim=(-2, -1), keepdim=True) - self.top_db
            return torch.max(x, floor)

    return LogFbank()


def _build_export(clf, info: dict):
    """The whole pipeline as one module: (input_values [B, N], attention_mask [B, N]) -> embeddings[, logits]."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from speechbrain.lobes.models.ECAPA_TDNN import TDNNBlock

    mods = clf.mods
    encoder = mods.embedding_model
    classifier = mods["classifier"] if info["has_classifier"] else None

    class SpeechBrainECAPA(nn.Module):
        def __init__(self):
            super().__init__()
            self.front_end = _build_front_end(mods.compute_features)
            self.encoder = encoder
            self.classifier = classifier
            self.sentence_rule = info["sentence_rule"]
            mean, std = info.get("emb_mean"), info.get("emb_std")
            self.has_emb_norm = mean is not None and info["normalized_embeddings"]
            self.register_buffer("emb_mean", torch.tensor(mean if mean is not None else [0.0]), persistent=False)
            self.register_buffer("emb_std", torch.tensor(std if std is not None else [1.0]), persistent=False)
            self.emb_std_used = std is not None

        def forward(self, input_values, attention_mask):
            # SpeechBrain's wav_lens: valid samples / total samples, in float32
            valid = attention_mask.sum(1).float()
            total = torch.ones_like(attention_mask).sum(1).float()
            rel = (valid / total).unsqueeze(1)  # [B, 1]
            feats = self.front_end(input_values)  # [B, T, F]
            ones = torch.ones_like(feats[:, :, 0])  # [B, T]
            frames = ones.sum(1, keepdim=True)  # T as float, per row
            t = torch.cumsum(ones, 1) - 1  # 0 .. T-1
            # sentence mean normalisation over the valid frames (InputNormalization, norm_type sentence, no std)
            if self.sentence_rule == "round":  # speechbrain 1.0: the first round(rel * T) frames
                keep = t < torch.round(rel * frames)
            else:  # speechbrain 1.1: frames t < rel * T - 1e-6
                keep = t < rel * frames - 1e-6
            keep = keep.float().unsqueeze(2)
            mean = (feats * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True)
            x = (feats - mean).transpose(1, 2)  # [B, F, T]
            # frame mask of the SE blocks and the pooling (speechbrain length_to_mask(rel * T))
            mask = (t < rel * frames).float().unsqueeze(1)  # [B, 1, T]
            xl = []
            for layer in self.encoder.blocks:
                x = layer(x) if isinstance(layer, TDNNBlock) else self._se_res2net(layer, x, mask)
                xl.append(x)
            x = torch.cat(xl[1:], dim=1)
            x = self.encoder.mfa(x)
            x = self._pool(self.encoder.asp, x, mask)
            x = self.encoder.asp_bn(x)
            emb = self.encoder.fc(x).transpose(1, 2)  # [B, 1, D]: what encode_batch returns
            out = emb.squeeze(1)
            if self.has_emb_norm:
                out = out - self.emb_mean
                if self.emb_std_used:
                    out = out / self.emb_std
            if self.classifier is None:
                return out
            return out, self.classifier(emb).squeeze(1)

        @staticmethod
        def _se_res2net(block, x, mask):
            residual = block.shortcut(x) if block.shortcut is not None else x
            x = block.res2net_block(block.tdnn1(x))
            x = block.tdnn2(x)
            se = block.se_block
            s = (x * mask).sum(dim=2, keepdim=True) / mask.sum(dim=2, keepdim=True)
            s = se.sigmoid(se.conv2(se.relu(se.conv1(s))))
            return s * x + residual

        @staticmethod
        def _pool(asp, x, mask):
            def stats(x, m):
                mean = (m * x).sum(2)
                std = torch.sqrt((m * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(asp.eps))
                return mean, std

            if asp.global_context:
                mean, std = stats(x, mask / mask.sum(dim=2, keepdim=True))
                L = x.shape[-1]
                attn = torch.cat([x, mean.unsqueeze(2).expand(-1, -1, L), std.unsqueeze(2).expand(-1, -1, L)], dim=1)
            else:
                attn = x
            attn = asp.conv(asp.tanh(asp.tdnn(attn)))
            attn = attn.masked_fill(mask == 0, float("-inf"))
            attn = F.softmax(attn, dim=2)
            mean, std = stats(x, attn)
            return torch.cat((mean, std), dim=1).unsqueeze(2)

    return SpeechBrainECAPA().eval()


def _sentence_rule(norm) -> str:
    """How the installed SpeechBrain's sentence normalisation counts valid frames for a relative length: probed."""
    import torch

    x = torch.tensor([[[1.0], [1.0], [1.0], [100.0], [100.0]]])  # 5 frames; rel * 5 = 3.4
    with torch.no_grad():
        y = norm(x, torch.tensor([0.68]))
    return "round" if abs(float(y[0, 0, 0])) < 1e-6 else "mask"


def _read_labels(clf, n: int) -> dict:
    enc = getattr(clf.hparams, "label_encoder", None)
    ind2lab = dict(getattr(enc, "ind2lab", {}) or {}) if enc is not None else {}
    if ind2lab and len(ind2lab) != n:
        raise CheckpointError(f"label_encoder.txt has {len(ind2lab)} labels but the classifier scores {n}; pass the matching files")
    if enc is not None and hasattr(enc, "ignore_len"):
        enc.ignore_len()  # the count was just checked
    return {i: str(ind2lab.get(i, f"LABEL_{i}")) for i in range(n)}


def _input_norm_info(norm) -> tuple:
    """(mean, std or None) of a global InputNormalization in eval mode, checked against the module itself."""
    import torch

    if getattr(norm, "norm_type", None) != "global":
        raise CheckpointError(f"mean_var_norm_emb has norm_type '{getattr(norm, 'norm_type', None)}'; only 'global' is supported")
    mean = torch.as_tensor(norm.glob_mean).detach().float().reshape(-1)
    std = None
    if norm.std_norm:
        eps = float(getattr(norm, "epsilon", getattr(norm, "eps", 1e-10)))
        std = torch.as_tensor(norm.glob_std).detach().float().reshape(-1).clamp(min=eps)
    probe = torch.linspace(-2, 2, mean.numel()).reshape(1, -1)
    with torch.no_grad():
        want = norm(probe, torch.ones(1)).reshape(-1)
    got = probe.reshape(-1) - mean
    if std is not None:
        got = got / std
    if not torch.allclose(want, got, atol=1e-5, rtol=1e-5):
        raise CheckpointError("mean_var_norm_emb does not act as (x - mean) / std with its stored statistics; "
                              "this SpeechBrain version is not supported")
    return mean.tolist(), (std.tolist() if std is not None else None)


def load_encoder_classifier(folder: str, text: str):
    """SpeechBrain's EncoderClassifier from a local folder, without the network: `pretrained_path` points at it."""
    _quiet()
    try:
        from speechbrain.inference.classifiers import EncoderClassifier
        from speechbrain.utils.fetching import LocalStrategy
    except ImportError:
        raise CheckpointError("SpeechBrain is not installed; run: pip install 'voxport[speechbrain]'") from None
    except Exception as e:  # e.g. speechbrain 1.0 with torchaudio 2.11
        raise CheckpointError(f"SpeechBrain cannot be imported ({type(e).__name__}: {str(e)[:120]}); run: "
                              "pip install 'voxport[speechbrain]' (speechbrain 1.1 or later)") from None
    folder = os.path.abspath(folder)
    overrides = {"pretrained_path": folder} if re.search(r"^pretrained_path:", text, re.M) else {}
    savedir = tempfile.mkdtemp(prefix="voxport-sb-")
    try:
        clf = EncoderClassifier.from_hparams(source=folder, savedir=savedir, overrides=overrides, run_opts={"device": "cpu"},
                                             local_strategy=LocalStrategy.COPY_SKIP_CACHE)
    except Exception as e:
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"SpeechBrain cannot load {os.path.basename(folder)} ({type(e).__name__}: {msg}); pass a "
                              "published pretrained folder (hyperparams.yaml + embedding_model.ckpt ...)") from None
    finally:
        shutil.rmtree(savedir, ignore_errors=True)
    clf.eval()
    return clf


def make_folder(folder: str, channels=(32, 32, 32, 32, 96), kernel_sizes=(5, 3, 3, 3, 1), dilations=(1, 2, 3, 4, 1),
                lin_neurons: int = 16, n_mels: int = 24, attention_channels: int = 16, se_channels: int = 16,
                res2net_scale: int = 4, classifier: str | None = "ecapa", labels: list | None = None,
                emb_norm: bool = True, encoder: str = ECAPA, seed: int = 0,
                pretrained_path: str = "speechbrain/spkrec-ecapa-voxceleb") -> str:
    """A random-weight SpeechBrain folder in the published layout (hyperparams.yaml naming the hub repo in
    `pretrained_path`, SpeechBrain's own checkpoint files). classifier: "ecapa" (cosine scores, as
    spkrec-ecapa-voxceleb), "xvector" (log-probabilities, as lang-id-voxlingua107-ecapa) or None.
    BatchNorm statistics come from speech-like audio, so activations have trained-like scales."""
    import torch
    from hyperpyyaml import load_hyperpyyaml

    from .suite import speech_like

    labels = list(labels or [f"id1000{i}" for i in range(5)])
    os.makedirs(folder, exist_ok=True)
    has_cls = classifier is not None
    enc_args = (f"    input_size: !ref <n_mels>\n    channels: {list(channels)}\n    kernel_sizes: {list(kernel_sizes)}\n"
                f"    dilations: {list(dilations)}\n    attention_channels: {attention_channels}\n"
                f"    se_channels: {se_channels}\n    res2net_scale: {res2net_scale}\n    lin_neurons: {lin_neurons}\n"
                if encoder == ECAPA else f"    in_channels: !ref <n_mels>\n    lin_neurons: {lin_neurons}\n")
    cls_yaml = {
        "ecapa": f"classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier\n    input_size: {lin_neurons}\n"
                 f"    out_neurons: !ref <out_n_neurons>\n",
        "xvector": f"classifier: !new:speechbrain.lobes.models.Xvector.Classifier\n    input_shape: [null, null, {lin_neurons}]\n"
                   f"    activation: !name:torch.nn.LeakyReLU\n    lin_blocks: 1\n    lin_neurons: 24\n"
                   f"    out_neurons: !ref <out_n_neurons>\n",
    }.get(classifier, "")
    loadables = ["embedding_model"] + (["mean_var_norm_emb"] if emb_norm else []) + (["classifier", "label_encoder"] if has_cls else [])
    ext = {"label_encoder": "txt"}
    text = (
        "# ############################################################################\n"
        "# Model: ECAPA for speaker embeddings (random weights, published layout)\n"
        "# ############################################################################\n\n"
        f"n_mels: {n_mels}\n\n# Pretrain folder (HuggingFace)\npretrained_path: {pretrained_path}\n\n"
        f"out_n_neurons: {len(labels)}\n\n"
        "compute_features: !new:speechbrain.lobes.features.Fbank\n    n_mels: !ref <n_mels>\n\n"
        "mean_var_norm: !new:speechbrain.processing.features.InputNormalization\n    norm_type: sentence\n    std_norm: False\n\n"
        f"embedding_model: !new:{encoder}\n{enc_args}\n"
        + (cls_yaml + "\n" if has_cls else "")
        + ("mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization\n    norm_type: global\n    std_norm: False\n\n"
           if emb_norm else "")
        + "modules:\n    compute_features: !ref <compute_features>\n    mean_var_norm: !ref <mean_var_norm>\n"
        "    embedding_model: !ref <embedding_model>\n"
        + ("    mean_var_norm_emb: !ref <mean_var_norm_emb>\n" if emb_norm else "")
        + ("    classifier: !ref <classifier>\n" if has_cls else "")
        + "\nlabel_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder\n\n"
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n    loadables:\n"
        + "".join(f"        {k}: !ref <{k}>\n" for k in loadables)
        + "    paths:\n"
        + "".join(f"        {k}: !ref <pretrained_path>/{k}.{ext.get(k, 'ckpt')}\n" for k in loadables)
    )
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as f:
        f.write(text)
    if encoder != ECAPA:
        return folder
    torch.manual_seed(seed)
    hp = load_hyperpyyaml(text)
    feats, norm, emb_model = hp["compute_features"], hp["mean_var_norm"], hp["embedding_model"]
    rng = np.random.default_rng(seed + 1)

    def embed(n_clips, train):
        waves = torch.from_numpy(np.stack([speech_like(16000, float(rng.uniform(85, 260)), seed=int(rng.integers(1 << 30)))
                                           for _ in range(n_clips)]))
        emb_model.train(train)
        with torch.no_grad():
            return emb_model(norm(feats(waves), torch.ones(n_clips)), torch.ones(n_clips))

    bns = [m for m in emb_model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    for _ in range(3):
        embed(4, True)
    for m in bns:
        m.momentum = 0.1
    emb_model.eval()
    torch.save(emb_model.state_dict(), os.path.join(folder, "embedding_model.ckpt"))
    embs = embed(8, False)
    if emb_norm:
        mvn = hp["mean_var_norm_emb"]
        mvn.train()
        mvn(embs, torch.ones(len(embs)))  # global statistics from these embeddings
        mvn._save(os.path.join(folder, "mean_var_norm_emb.ckpt"))
    if has_cls:
        cls = hp["classifier"]
        if classifier == "xvector":
            cls.train()
            with torch.no_grad():
                cls(embs)  # BatchNorm statistics
        cls.eval()
        torch.save(cls.state_dict(), os.path.join(folder, "classifier.ckpt"))
        enc = hp["label_encoder"]
        enc.update_from_iterable(labels)
        enc.save(os.path.join(folder, "label_encoder.txt"))
    return folder


def _min_samples(cfg: dict) -> int:
    """Every conv pads by reflection (pad < frames) and frames = 1 + samples // hop."""
    pad = max(d * (k - 1) // 2 for k, d in zip(cfg["kernel_sizes"], cfg["dilations"]))
    return max(1, pad * cfg["hop_length"])


@register
class SpeechBrainSpec(ArchSpec):
    name = "speechbrain"
    # One front end for both routes: the STFT as a Conv1d holding the windowed DFT basis. torch.stft exported by
    # dynamo (ONNX STFT) was measured against encode_batch on the same random C=32 folder: max |dlogit| 1.7e-4 and
    # max |d embedding| 5e-4 (onnxruntime's STFT kernel), against 1.9e-6 and 8.6e-6 for the DFT as a Conv1d.
    routes = {18: "dynamo", 17: "torchscript"}
    tolerance_profile = "speechbrain"
    # ECAPA-TDNN's convolutions carry the weights, as in the upstream ECAPA: weight-only q8 runs wherever fp32 runs
    # q8 first tries dynamic int8 on the MatMul form of the 1x1 convolutions (pointwise.py), as for ECAPA; kept
    # where it keeps the decisions with most products integer, else weight-only
    recipes = {"q8": Recipe("dynamic-s8", per_channel=True, min_integer_share=0.6,
                            why="dynamic int8 MatMul (u8 x s8, int8 dot products): the fast file where it keeps the model's outputs",
                            fallback=Recipe("weight-only", per_channel=True, why="int8 weights, one scale per output channel, "
                                            "float compute; runs everywhere fp32 runs, WebGPU included",
                                            alternatives=(Recipe("weight-only", per_channel=False, why="int8 weights, one scale "
                                                                 "per tensor: the smaller file where it keeps fewer nodes float"),))),
               "int8": Recipe("weight-only", per_channel=True, why="int8 weights per output channel, float compute"),
               "uint8": Recipe("dynamic", per_channel=True, why="QUInt8 weights and activations, integer kernels (CPU, WASM)")}

    def export_module(self, loaded, route):
        from .pointwise import pointwise_as_matmul

        # 1x1 convolutions over frames as MatMul (the form of onnxruntime's fast 8-bit kernels); squeeze-excitation
        # and the final fc act on one pooled vector
        return pointwise_as_matmul(loaded.model, skip=lambda name: "se_block" in name or name.startswith("encoder.fc"))[0].eval()

    normalizes_embeddings = True  # mean_var_norm_emb, on request

    def load(self, checkpoint=None, random_init=False, seed=0, revision=None, local=False, weights=None,
             normalize_embeddings=False, **kw) -> Loaded:
        """normalize_embeddings: `embeddings` after mean_var_norm_emb (encode_batch(wavs, normalize=True)); by default
        the vector encode_batch(wavs) returns, which verify_batch scores and enrolment databases hold."""
        if random_init:
            raise CheckpointError("--arch speechbrain needs --checkpoint: a SpeechBrain pretrained folder or hub id "
                                  "(e.g. speechbrain/spkrec-ecapa-voxceleb)")
        if not checkpoint:
            raise CheckpointError("pass --checkpoint FOLDER_OR_HUB_ID: a SpeechBrain pretrained folder (hyperparams.yaml + "
                                  "embedding_model.ckpt)")
        if local:
            checkpoint = recorded_folder(checkpoint, weights)
        folder = resolve_checkpoint(checkpoint, FILES + ["README.md", "LICENSE*"],
                                    "a SpeechBrain folder (hyperparams.yaml + embedding_model.ckpt)", revision=revision)
        yaml_path = os.path.join(folder, "hyperparams.yaml")
        if not os.path.isfile(yaml_path):
            raise CheckpointError(f"{checkpoint} has no hyperparams.yaml; pass a SpeechBrain pretrained folder")
        text = check_yaml(yaml_path)
        if not os.path.isfile(os.path.join(folder, "embedding_model.ckpt")):
            raise CheckpointError(f"{checkpoint} has no embedding_model.ckpt; pass a SpeechBrain pretrained folder")
        clf = load_encoder_classifier(folder, text)
        info = self._inspect(clf, folder)
        if normalize_embeddings and not info["has_embedding_norm"]:
            raise CheckpointError(f"{os.path.basename(os.path.normpath(folder))} has no mean_var_norm_emb to normalize the "
                                  "embeddings with; drop --normalized-embeddings")
        info["normalized_embeddings"] = bool(normalize_embeddings)
        files = [os.path.join(folder, n) for n in FILES if os.path.isfile(os.path.join(folder, n))]
        source = {"arch": self.name, **checkpoint_record(checkpoint, folder, files, revision), "random_init": False, "seed": None}
        if normalize_embeddings:
            source["normalize_embeddings"] = True
        model = _build_export(clf, info)
        config = {k: v for k, v in info.items() if k not in ("emb_mean", "emb_std")}
        extra = {"clf": clf, "info": info, "license": read_license(folder), "card_license": card_license(folder),
                 "yaml_sha256": sha256_file(yaml_path)}
        return Loaded(arch=self.name, model=model, source=source, config=config, extra=extra)

    def _inspect(self, clf, folder) -> dict:
        import torch
        from speechbrain.lobes.features import Fbank
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
        from speechbrain.processing.features import InputNormalization

        mods = clf.mods
        for key in ("compute_features", "mean_var_norm", "embedding_model"):
            if key not in mods:
                raise CheckpointError(f"hyperparams.yaml `modules` has no {key}; pass a SpeechBrain EncoderClassifier folder")
        enc, fe, norm = mods.embedding_model, mods.compute_features, mods.mean_var_norm
        if not isinstance(enc, ECAPA_TDNN):
            raise CheckpointError(f"the encoder is {type(enc).__name__}; --arch speechbrain supports ECAPA-TDNN only")
        if not isinstance(fe, Fbank) or fe.deltas or fe.context:
            raise CheckpointError("compute_features must be speechbrain's Fbank without deltas or context; other front ends "
                                  "are not supported yet")
        if not (isinstance(norm, InputNormalization) and norm.norm_type == "sentence" and not norm.std_norm):
            raise CheckpointError("mean_var_norm must be InputNormalization(norm_type=sentence, std_norm=False), as in the "
                                  "published ECAPA folders; other normalisations are not supported yet")
        if fe.compute_STFT.pad_mode != "constant" or not fe.compute_STFT.center or fe.compute_STFT.normalized_stft:
            raise CheckpointError("the Fbank STFT must be centred, zero-padded and unnormalised (SpeechBrain's defaults)")
        has_cls = "classifier" in mods and os.path.isfile(os.path.join(folder, "classifier.ckpt"))
        info = {
            "channels": [int(b) for b in enc.channels],
            "n_mels": int(fe.compute_fbanks.n_mels),
            "n_fft": int(fe.compute_STFT.n_fft),
            "win_length": int(fe.compute_STFT.win_length),
            "hop_length": int(fe.compute_STFT.hop_length),
            "sample_rate": int(fe.compute_STFT.sample_rate),
            "f_min": float(fe.compute_fbanks.f_min),
            "f_max": float(fe.compute_fbanks.f_max),
            "top_db": float(fe.compute_fbanks.top_db),
            "has_classifier": bool(has_cls),
            "has_embedding_norm": False,
            "sentence_rule": _sentence_rule(norm),
            "speechbrain_version": _version(),
        }
        # kernel and dilation of every block, from the layers themselves (the Res2Net blocks' own convs)
        ks, ds = [], []
        for b in list(enc.blocks) + [enc.mfa]:
            conv = b.conv.conv if hasattr(b, "conv") else b.res2net_block.blocks[0].conv.conv
            ks.append(int(conv.kernel_size[0]))
            ds.append(int(conv.dilation[0]))
        info["kernel_sizes"], info["dilations"] = ks, ds
        if info["sample_rate"] != 16000:
            raise CheckpointError(f"the Fbank runs at {info['sample_rate']} Hz; only 16 kHz models are supported")
        with torch.no_grad():
            emb = clf.encode_batch(torch.zeros(1, 16000))
        info["embedding_dim"] = int(emb.shape[-1])
        if os.path.isfile(os.path.join(folder, "mean_var_norm_emb.ckpt")) and "mean_var_norm_emb" in vars(clf.hparams):
            info["emb_mean"], info["emb_std"] = _input_norm_info(clf.hparams.mean_var_norm_emb)
            info["has_embedding_norm"] = True
        if has_cls:
            with torch.no_grad():
                n = int(clf.mods.classifier(emb).shape[-1])
            info["num_labels"] = n
            info["labels"] = _read_labels(clf, n)
            info["classifier"] = type(clf.mods.classifier).__module__ + "." + type(clf.mods.classifier).__name__
        return info

    # IO
    def task(self, loaded):
        return "audio-classification" if loaded.config["has_classifier"] else "feature-extraction"

    def input_names(self, loaded):
        return ["input_values", "attention_mask"]

    def output_names(self, loaded):
        return ["embeddings", "logits"] if loaded.config["has_classifier"] else ["embeddings"]

    def output_kinds(self, loaded):
        return {"embeddings": "embedding", "logits": "logits"} if loaded.config["has_classifier"] else {"embeddings": "embedding"}

    def min_samples(self, loaded):
        return _min_samples(loaded.config)

    def example_inputs(self, loaded):
        import torch

        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 12000, generator=g) * 0.1  # batch 2: a batch of 1 can fix the axis
        mask = torch.ones(2, 12000, dtype=torch.int64)
        mask[1, 9000:] = 0
        return (x, mask)

    def check_shapes(self, loaded):
        n = max(self.min_samples(loaded), 4000)
        return [(1, n), (3, n + 1234), (5, 2 * n + 77)]

    def keep_float(self, onnx_model):
        """The front end (every node the first Log depends on: DFT Conv and mel MatMul, as for the upstream ECAPA)
        and the encoder's first Conv, which reads the dB features. Weight-only q8 on random folders (suite + speech,
        encoder alone float vs quantized): C=32 max |d pairwise score| 0.035 -> 0.016, cosine 0.9991 -> 0.9996;
        C=64 0.015 -> 0.010; that conv is 2% of a C=1024 model's weights."""
        from .ecapa import front_end_nodes

        front = front_end_nodes(onnx_model, "Log")
        taken = set(front)
        first = next((n.name for n in onnx_model.graph.node if n.op_type == "Conv" and n.name not in taken), None)
        return sorted(front + ([first] if first else []))

    def metadata(self, loaded):
        c = loaded.config
        meta = {"front_end": json.dumps({k: c[k] for k in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels",
                                                               "f_min", "f_max", "top_db")}),
                "min_samples": str(self.min_samples(loaded)), "embedding_dim": str(c["embedding_dim"]),
                "speechbrain_version": c["speechbrain_version"]}
        if c["has_classifier"]:
            meta["labels"] = json.dumps(c["labels"])
        return meta

    # verify
    def cases(self, loaded):
        from .suite import ecapa_cases, speech_like

        n_min = self.min_samples(loaded)
        cases = ecapa_cases(n_min)
        lengths = [24000, 15000, 5600]
        x = np.zeros((3, max(lengths)), np.float32)
        mask = np.zeros((3, max(lengths)), np.int64)
        for i, (n, f0) in enumerate(zip(lengths, [110, 200, 160])):
            x[i, :n] = speech_like(n, f0, 21 + i)
            mask[i, :n] = 1
        cases.append(Case("padded batch 1.5/0.94/0.35 s, masked", x, mask, lengths))
        return cases

    def reference(self, loaded, case):
        """SpeechBrain itself: encode_batch (then mean_var_norm_emb) and classify_batch's scores (its classifier on
        encode_batch's output, one encoder pass for both), on the batch as given, with wav_lens = valid / total samples
        per row (float32, as the graph computes it). The tests check these against the calls themselves."""
        import torch

        clf = loaded.extra["clf"]
        x = torch.from_numpy(np.ascontiguousarray(case.input_values, dtype=np.float32))
        mask = case.attention_mask if case.attention_mask is not None else np.ones(x.shape, np.int64)
        lens = torch.from_numpy(mask.sum(1).astype(np.float32) / np.float32(mask.shape[1]))
        with torch.inference_mode():
            emb = clf.encode_batch(x, lens)  # normalize=False: what classify_batch and verify_batch score
            out = {}
            if loaded.config["normalized_embeddings"]:  # encode_batch(normalize=True)'s last step, without a second pass
                out["embeddings"] = clf.hparams.mean_var_norm_emb(emb, torch.ones(emb.shape[0])).squeeze(1).float().numpy()
            else:
                out["embeddings"] = emb.squeeze(1).float().numpy()
            if loaded.config["has_classifier"]:  # classify_batch: the classifier on encode_batch's output
                out["logits"] = clf.mods.classifier(emb).squeeze(1).float().numpy()
        return out

    # package
    def hf_config(self, loaded):
        c = loaded.config
        cfg = {"model_type": "wav2vec2",
               "architectures": ["Wav2Vec2ForSequenceClassification" if c["has_classifier"] else "Wav2Vec2Model"],
               "voxport_arch": self.name,
               "speechbrain": {k: c[k] for k in ("channels", "kernel_sizes", "dilations", "n_mels", "embedding_dim",
                                                 "has_embedding_norm", "normalized_embeddings", "speechbrain_version")}}
        if c["has_classifier"]:
            labels = c["labels"]
            cfg.update(id2label={str(k): v for k, v in labels.items()}, label2id={v: int(k) for k, v in labels.items()},
                       num_labels=len(labels))
        if c["has_embedding_norm"]:
            # mean_var_norm_emb's mean: normalized = encode_batch(wavs) - embedding_mean (global, no std)
            cfg["speechbrain"]["embedding_mean"] = [round(v, 8) for v in loaded.extra["info"]["emb_mean"]]
        return cfg

    def preprocessor_config(self, loaded):
        return {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": 16000,
                "padding_value": 0.0, "padding_side": "right", "do_normalize": False, "return_attention_mask": True}

    def extra_files(self, loaded):
        lic = loaded.extra.get("license")
        return {"LICENSE": lic} if lic else {}

    def card(self, loaded):
        c = loaded.config
        src = loaded.source
        hub = None if src.get("local") else src.get("checkpoint")
        notes = [
            "Loads in Transformers.js with `AutoFeatureExtractor` + `AutoModel` (the graph's outputs by name); `config.json` says "
            "`model_type: wav2vec2` because Transformers.js picks its model class by `model_type` and its wav2vec2 classes "
            "run any graph that takes `input_values`.",
            "SpeechBrain's Fbank front end and sentence mean normalisation are inside the graph: feed raw 16 kHz mono "
            "audio, unnormalised (`do_normalize: false`).",
            "`attention_mask` marks the valid samples of each row of a padded batch; the graph turns it into SpeechBrain's "
            "relative lengths (`wav_lens` = valid / total), so a padded batch gives what `encode_batch(wavs, wav_lens)` gives.",
            f"`embeddings` [batch, {c['embedding_dim']}] is "
            + ("`encode_batch(wavs, normalize=True)` (after `mean_var_norm_emb`, built with --normalized-embeddings); "
               "SpeechBrain's own `verify_batch` scores the un-normalised vector, which is "
               "`embeddings + config.speechbrain.embedding_mean`." if c["normalized_embeddings"] else
               "`encode_batch(wavs)` (normalize=False), the vector SpeechBrain's `verify_batch` scores and enrolment "
               "databases made with SpeechBrain hold"
               + (" (`embeddings - config.speechbrain.embedding_mean` is the `normalize=True` vector)." if c["has_embedding_norm"] else ".")),
            f"Minimum input: {self.min_samples(loaded)} samples.",
        ]
        if c["has_classifier"]:
            notes.append(f"`logits` [batch, {c['num_labels']}] are `classify_batch`'s scores ({c['classifier']}): cosine "
                         "similarities for ECAPA's Classifier, log-probabilities for the x-vector Classifier; the "
                         "audio-classification pipeline applies softmax to them.")
        if loaded.extra.get("license") is None and not loaded.extra.get("card_license"):
            notes.append("The checkpoint came without a licence: add the weights' licence before publishing this folder.")
        card = {"title": "SpeechBrain ECAPA-TDNN " + ("classifier and speaker embeddings" if c["has_classifier"] else "speaker embeddings")
                         + " (ONNX)",
                "base_model": hub, "license": loaded.extra.get("card_license") or "other",
                "pipeline_tag": "audio-classification" if c["has_classifier"] else "feature-extraction",
                "notes": notes, "embeddings": "embeddings"}
        if c["has_classifier"]:
            card["labels"] = c["labels"] if len(c["labels"]) <= 20 else None
        return card


def _version() -> str:
    try:
        import speechbrain

        return str(speechbrain.__version__)
    except Exception:
        return "unknown"
