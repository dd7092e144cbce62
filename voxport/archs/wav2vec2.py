"""The transformers wav2vec2 family: wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech(-SAT).

Task from the checkpoint: ...ForSequenceClassification -> audio-classification, ...ForCTC -> CTC ASR,
...ForXVector -> speaker embeddings (`embeddings`), ...Model -> frame embeddings (`last_hidden_state`).
The graph takes `attention_mask` exactly when the feature extractor returns one (layer-norm
checkpoints); group-norm checkpoints change with padding, so they get none and verify reports how far
a padded clip drifts.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from ..errors import CheckpointError
from . import register
from .base import ArchSpec, Case, Loaded, Recipe
from .ctc_tokenizer import build_tokenizer, ctc_tokenizer_files, greedy_decode, read_ctc_tokenizer  # noqa: F401
from .source import card_license, checkpoint_record, read_license, recorded_folder, resolve_checkpoint, weight_files

PADDING_INVARIANT = 1e-4  # PyTorch padded-with-mask vs alone below this counts as invariant
MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat")
# Transformers.js routes by model_type; types its pipelines do not know run through wav2vec2's classes
# (the graph is self-contained, the JS model class only feeds it).
JS_CTC_TYPES = ("wav2vec2", "hubert", "unispeech", "unispeech-sat")
JS_CLS_TYPES = ("wav2vec2", "hubert", "wavlm", "unispeech", "unispeech-sat")
CONFIG_CLASSES = {
    "wav2vec2": "Wav2Vec2Config", "hubert": "HubertConfig", "wavlm": "WavLMConfig",
    "data2vec-audio": "Data2VecAudioConfig", "unispeech": "UniSpeechConfig", "unispeech-sat": "UniSpeechSatConfig",
}
CLASS_PREFIX = {
    "wav2vec2": "Wav2Vec2", "hubert": "Hubert", "wavlm": "WavLM", "data2vec-audio": "Data2VecAudio",
    "unispeech": "UniSpeech", "unispeech-sat": "UniSpeechSat",
}
PRESETS = {
    # a few-layer model for tests and demos
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                 conv_dim=(32, 32, 32), conv_kernel=(8, 8, 8), conv_stride=(4, 4, 4),
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
    # small enough for tests, with most weights in MatMuls (as in real models)
    "small": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                  conv_dim=(32, 32, 32), conv_kernel=(8, 8, 8), conv_stride=(4, 4, 4),
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=8),
    # wav2vec2-base (95M) and XLS-R-300M shapes, for benchmarks
    "base": dict(),
    "xls-r-300m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    # XLS-R-1B's shape (965M parameters): a float32 file over 2 GB, written with external data
    "xls-r-1b": dict(hidden_size=1280, num_hidden_layers=48, num_attention_heads=16, intermediate_size=5120),
}
# config.json architectures suffix -> (task, outputs {name: verify kind}); the first suffix found wins
HEADS = {
    "ForCTC": ("ctc", {"logits": "logits"}),
    "ForSequenceClassification": ("cls", {"logits": "logits"}),
    "ForXVector": ("xvector", {"embeddings": "embedding"}),
    "Model": ("frames", {"last_hidden_state": "frames"}),
}
TASK_HEADS = {task: head for head, (task, _) in HEADS.items()}
DEFAULT_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("abcdefghijklmnopqrstuvwxyz'") + list("áâãàçéêíóôõú")


def _quiet_transformers():
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def make_checkpoint(folder: str, model_type: str = "wav2vec2", task: str = "cls", norm: str = "layer",
                    preset: str = "tiny", seed: int = 0, vocab: list | None = None, num_labels: int = 2,
                    spread: bool = False) -> str:
    """Save a random-weight checkpoint in the layout save_pretrained writes (plus feature extractor and vocab).

    spread: biases and normalisation weights drawn around their initial values, as in trained checkpoints. Fresh
    ones are all 0 or 1: onnxsim then drops the zero-bias Adds and merges the equal tensors, and the graph is not
    the one a real checkpoint exports (benchmarks and fusion tests need the real one)."""
    import torch
    import transformers

    _quiet_transformers()
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"unknown model type '{model_type}'; choose one of {', '.join(MODEL_TYPES)}")
    if preset not in PRESETS:
        raise CheckpointError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    kw = dict(PRESETS[preset])
    layer = norm == "layer"
    kw.update(feat_extract_norm="layer" if layer else "group", do_stable_layer_norm=layer)
    if model_type == "data2vec-audio":
        kw.pop("feat_extract_norm")
        kw.pop("do_stable_layer_norm")
        layer = True  # data2vec-audio always uses layer norm in its feature encoder
    vocab = vocab or DEFAULT_VOCAB
    if task not in TASK_HEADS:
        raise CheckpointError(f"unknown task '{task}'; choose one of {', '.join(TASK_HEADS)}")
    if task == "ctc":
        kw.update(vocab_size=len(vocab), pad_token_id=0)
    elif task in ("cls", "xvector"):
        kw.update(num_labels=num_labels, id2label={i: f"label_{i}" for i in range(num_labels)},
                  label2id={f"label_{i}": i for i in range(num_labels)})
    if task == "xvector" and preset in ("tiny", "small"):  # the x-vector head at test size
        kw.update(tdnn_dim=(64, 64, 64, 64, 96), xvector_output_dim=48)
    if model_type in ("wavlm",):
        kw.setdefault("num_buckets", 32)
    config = getattr(transformers, CONFIG_CLASSES[model_type])(**kw)
    cls = getattr(transformers, CLASS_PREFIX[model_type] + TASK_HEADS[task])
    torch.manual_seed(seed)
    model = cls(config).eval()
    if task == "cls":
        # a head with some spread, so decisions are not all ties
        with torch.no_grad():
            model.classifier.weight.normal_(0, 1.0)
    if spread:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.02)
                elif p.dim() == 1 and name.endswith("weight"):  # LayerNorm / GroupNorm scales
                    p.copy_(1 + 0.05 * torch.randn_like(p))
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    fe = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                               do_normalize=True, return_attention_mask=layer)
    fe.save_pretrained(folder)
    if task == "ctc":
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"tokenizer_class": "Wav2Vec2CTCTokenizer", "pad_token": "<pad>", "unk_token": "<unk>",
                       "bos_token": "<s>", "eos_token": "</s>", "word_delimiter_token": "|", "do_lower_case": False}, f)
    return folder


def _module(model, uses_mask: bool, task: str, frames: bool = False):
    """The checkpoint's model as one export-ready module: (input_values[, attention_mask]) -> its output(s).

    x-vector heads: transformers pools the TDNN frames row by row in a Python loop over the batch (a trace would
    freeze the batch size); here the same mean and unbiased standard deviation come from a frame mask.
    frames: a classifier or CTC model also returns the encoder's last_hidden_state (its last hidden_states entry)."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_values, attention_mask=None):
            if task == "xvector":
                return (self.xvector(input_values, attention_mask),)
            if frames:
                out = self.model(input_values, attention_mask=attention_mask, output_hidden_states=True)
                return out.logits, out.hidden_states[-1]
            out = self.model(input_values, attention_mask=attention_mask)
            return (out.last_hidden_state,) if task == "frames" else out.logits

        def xvector(self, input_values, attention_mask):
            m = self.model
            base = getattr(m, m.base_model_prefix)
            weighted = m.config.use_weighted_layer_sum
            out = base(input_values, attention_mask=attention_mask, output_hidden_states=weighted)
            if weighted:
                norm = torch.nn.functional.softmax(m.layer_weights, dim=-1)
                h = (torch.stack(out.hidden_states, dim=1) * norm.view(-1, 1, 1)).sum(dim=1)
            else:
                h = out.last_hidden_state
            h = m.projector(h)
            for layer in m.tdnn:
                h = layer(h)
            if attention_mask is None:
                stats = torch.cat([h.mean(dim=1), h.std(dim=1)], dim=-1)
            else:
                n = m._get_tdnn_output_lengths(m._get_feat_extract_output_lengths(attention_mask.sum(dim=1)))
                # transformers' TDNN lengths ignore dilation: a row may count more frames than the TDNN gave, and
                # h[i, :n] then takes them all; keep.sum() is that min(n, frames)
                keep = (torch.arange(h.shape[1], device=h.device)[None, :] < n[:, None]).to(h.dtype)[..., None]
                count = keep.sum(dim=1)
                mean = (h * keep).sum(dim=1) / count
                var = (((h - mean[:, None]) ** 2) * keep).sum(dim=1) / (count - 1)
                stats = torch.cat([mean, var.sqrt()], dim=-1)
            return m.feature_extractor(stats)

    class HeadNoMask(Head):
        def forward(self, input_values):
            return Head.forward(self, input_values)

    return (Head() if uses_mask else HeadNoMask()).eval()


@register
class Wav2Vec2Spec(ArchSpec):
    name = "wav2vec2"
    adds_embeddings = True  # classifier / CTC graphs: --embeddings adds the encoder's last_hidden_state
    # TorchScript for both (opset 17 needs it: dynamo writes 18). At 18, wav2vec2-base-sized cls, 2 threads,
    # 5 s, interleaved runs on a loaded machine: fp32 5247 vs 5197 ms and 6549 vs 5600 ms (TorchScript vs
    # dynamo; onnxsim removes dynamo's IsNaN guards, but 20 Erf stay unfused vs 6 Erf + 14 Gelu), while the
    # dynamo export took 184 s vs 88 s. No speed gain measured that pays for the slower export.
    routes = {18: "torchscript", 17: "torchscript"}
    # dynamic: weight-only dequantizes every transformer weight on each run (95M model, 5 s: 2095 ms vs
    # 1184 ms fp32); MatMulInteger keeps the 8-bit speed-up on CPU and WASM.
    # Per-channel on: measured parity is a tie, slightly better per channel on CTC. Dynamic q8, 'small'
    # preset, verify suite, per-channel vs per-tensor: wav2vec2 CTC layer-norm mean |dp| 5.2e-5 vs 6.0e-5,
    # frame agreement 98.5% vs 98.7%, CER 0.020 vs 0.016; WavLM CTC group-norm mean |dp| 5.3e-5 vs 5.8e-5,
    # CER 0.015 vs 0.019; wav2vec2 cls group-norm max |dp| 0.0057 vs 0.0076. Same file size.
    # dynamic-s8 (int8 weights, 7-bit range, u8 x s8 DynamicQuantizeMatMul) instead of QUInt8 weights: base-sized
    # classifier, AMD EPYC avx512_vnni, 2 threads, 1 s / 4 s: 0.67 / 0.62x fp32 against 0.78 / 0.82x (u8 x u8 has
    # no VNNI kernel); max |dp| 1.1e-4 vs 2.5e-4 on the verify cases. XLS-R-300M-sized CTC: 0.45 / 0.44x fp32.
    recipes = {"q8": Recipe("dynamic-s8", per_channel=True, why="int8 MatMulInteger weights (7-bit range, safe on AVX2 "
                            "without VNNI), per channel: the 8-bit speed-up on CPU and WASM (weight-only dequantizes every "
                            "transformer weight on each run)")}
    tolerance_profile = "wav2vec2"

    def load(self, checkpoint=None, random_init=False, seed=0, model_type="wav2vec2", task="cls", norm="layer",
             preset="tiny", revision=None, local=False, weights=None, embeddings=False, **kw) -> Loaded:
        """local/weights: a source record of a local folder (rebuilt from the folder this process loaded).
        Random weights are saved to a temporary checkpoint, read back whole, and the folder removed.
        embeddings: a classifier or CTC graph also outputs the encoder's frame embeddings (`last_hidden_state`)."""
        loaded = self._load(checkpoint, random_init, seed, model_type, task, norm, preset, revision, local, weights)
        if embeddings:
            if loaded.config["task"] not in ("cls", "ctc"):
                raise CheckpointError(f"--embeddings: this checkpoint's graph already outputs {self.output_names(loaded)[0]}; drop the flag")
            loaded.source["embeddings"] = True
            loaded.config["embeddings"] = True
            loaded.model = _module(loaded.model.model, loaded.config["uses_mask"], loaded.config["task"], frames=True)
        return loaded

    def _load(self, checkpoint, random_init, seed, model_type, task, norm, preset, revision, local, weights) -> Loaded:
        _quiet_transformers()
        if random_init:
            source = {"arch": self.name, "checkpoint": None, "random_init": True, "seed": seed, "model_type": model_type,
                      "task": task, "norm": norm, "preset": preset}
            tmp = tempfile.mkdtemp(prefix="voxport-w2v-")
            try:
                folder = make_checkpoint(tmp, model_type=model_type, task=task, norm=norm, preset=preset, seed=seed)
                return self._load_folder(folder, source)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        if not checkpoint:
            raise CheckpointError("pass --checkpoint FOLDER_OR_HUB_ID, or --random-init for a seeded tiny model")
        if local:
            checkpoint = recorded_folder(checkpoint, weights)
        folder = resolve_checkpoint(checkpoint, ["*.json", "*.txt", "LICENSE*", "README.md"], "a save_pretrained folder",
                                    revision=revision)
        files = weight_files(folder)
        if not files:
            raise CheckpointError(f"{checkpoint} has no model.safetensors or pytorch_model.bin; pass a save_pretrained folder")
        source = {"arch": self.name, **checkpoint_record(checkpoint, folder, files, revision), "random_init": False, "seed": None}
        return self._load_folder(folder, source)

    def _load_folder(self, folder, source) -> Loaded:
        """Everything later stages need is read here: nothing refers back to `folder` after loading."""
        import transformers

        try:
            cfg = transformers.AutoConfig.from_pretrained(folder)
        except Exception as e:
            raise CheckpointError(f"the checkpoint has no readable config.json ({str(e).splitlines()[0][:120]}); pass a save_pretrained folder") from None
        if cfg.model_type not in MODEL_TYPES:
            raise CheckpointError(f"model_type '{cfg.model_type}' is not in the wav2vec2 family ({', '.join(MODEL_TYPES)})")
        archs = cfg.architectures or []
        prefix = CLASS_PREFIX[cfg.model_type]
        head = next((h for h in HEADS if any(a == prefix + h or (h != "Model" and a.endswith(h)) for a in archs)), None)
        if head is None:
            raise CheckpointError(f"config.json architectures {archs} names no head voxport exports; supported: "
                                  + ", ".join(prefix + h for h in HEADS))
        task = HEADS[head][0]
        cls = getattr(transformers, prefix + head)
        try:
            # pytorch_model.bin is read with torch.load(weights_only=True): a pickle that runs code is refused
            model = cls.from_pretrained(folder, attn_implementation="eager", weights_only=True).eval()
        except Exception as e:
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CheckpointError(f"cannot load the weights of the checkpoint ({type(e).__name__}: {msg}); "
                                  "pass a save_pretrained folder whose config.json matches its weights") from None
        if os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            try:
                fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
            except Exception as e:
                raise CheckpointError(f"the checkpoint's preprocessor_config.json cannot be read ({type(e).__name__}); fix or remove it") from None
        else:
            fe = transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                                       return_attention_mask=getattr(cfg, "feat_extract_norm", "layer") == "layer")
        extra = {"folder": None if source.get("random_init") else folder, "feature_extractor": fe, "hf_config": cfg.to_dict(),
                 "license": read_license(folder), "card_license": card_license(folder)}
        if task == "ctc":
            tok = read_ctc_tokenizer(folder)
            extra.update(tokenizer=tok, vocab=tok.vocab, tokenizer_config=tok.config)
        config = {"model_type": cfg.model_type, "task": task, "uses_mask": bool(fe.return_attention_mask),
                  "do_normalize": bool(fe.do_normalize), "norm": getattr(cfg, "feat_extract_norm", "layer")}
        return Loaded(arch=self.name, model=_module(model, config["uses_mask"], task), source=source, config=config, extra=extra)

    def task(self, loaded):
        return {"ctc": "automatic-speech-recognition", "cls": "audio-classification"}.get(loaded.config["task"], "feature-extraction")

    def output_names(self, loaded):
        return list(self.output_kinds(loaded))

    def output_kinds(self, loaded):
        kinds = dict(HEADS[TASK_HEADS[loaded.config["task"]]][1])
        if loaded.config.get("embeddings"):
            kinds["last_hidden_state"] = "frames"
        return kinds

    def _outputs(self, loaded, input_values, attention_mask=None) -> dict:
        """The model's outputs for one batch: {output name: array}."""
        import torch

        args = (input_values,) if not loaded.config["uses_mask"] else (input_values, attention_mask if attention_mask is not None
                                                                        else torch.ones_like(input_values, dtype=torch.int64))
        with torch.inference_mode():
            out = loaded.model(*args)
        out = out if isinstance(out, tuple) else (out,)
        return {name: o.float().numpy() for name, o in zip(self.output_names(loaded), out)}

    def _main(self, loaded, input_values, attention_mask=None) -> np.ndarray:
        """The model's first output for one batch."""
        return next(iter(self._outputs(loaded, input_values, attention_mask).values()))

    def input_names(self, loaded):
        return ["input_values", "attention_mask"] if loaded.config["uses_mask"] else ["input_values"]

    def _lengths(self, loaded, n):
        import torch

        return int(loaded.model.model._get_feat_extract_output_lengths(torch.tensor(n)))

    def min_samples(self, loaded):
        """Fewest samples giving 2 frames out of the encoder (and out of an x-vector head's TDNN: its standard deviation
        needs 2)."""
        cfg = loaded.extra["hf_config"]
        # the TDNN's real context (kernel - 1) * dilation per layer
        lost = sum((k - 1) * d for k, d in zip(cfg["tdnn_kernel"], cfg["tdnn_dilation"])) if loaded.config["task"] == "xvector" else 0
        frames = lambda n: self._lengths(loaded, n) - lost  # noqa: E731
        lo, hi = 1, 400
        while frames(hi) < 2:
            hi *= 2
        while lo < hi:  # frames() grows with n
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if frames(mid) < 2 else (lo, mid)
        return lo

    def output_axes(self, loaded, output: str):
        per_frame = output == "last_hidden_state" or loaded.config["task"] == "ctc"
        return {0: "batch_size", 1: "num_frames"} if per_frame else {0: "batch_size"}

    def example_inputs(self, loaded):
        import torch

        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 16000, generator=g)
        if not loaded.config["uses_mask"]:
            return (x,)
        mask = torch.ones(2, 16000, dtype=torch.int64)
        mask[1, 12000:] = 0
        return (x, mask)

    def check_shapes(self, loaded):
        return [(1, 8000), (3, 13579), (5, 20000)]

    # onnxsim passes that hide the patterns from the fusions: MatMul + Add -> Reshape + Gemm + Reshape (every Linear),
    # and the Gelu's 0.5 folded into the next Conv (the feature encoder's Gelus)
    simplify_skip = ("fuse_matmul_add_bias_into_gemm", "fuse_matmul_add_bias_into_gemm_batched", "fuse_preceding_mul_into_conv")

    def fuse(self, loaded, onnx_model):
        """SkipLayerNormalization and exact Gelu written into the graph (voxport/archs/fusion.py says which ops and why);
        measured against optimum-onnx's export in the README ("Against optimum-onnx").

        Attention is not fused: com.microsoft Attention (and MultiHeadAttention) moved Chromium WebGPU's output by
        1.3e-3 in probabilities against onnxruntime-python on the same file (small group-norm model; the unfused graph
        and the SkipLayerNormalization + Gelu graph: 6.5e-8), while on CPU the fused attention was within the noise
        of the unfused one (wav2vec2-base-sized, 2 threads, 4 s: 1-2%)."""
        from .fusion import fuse_encoder

        cfg = loaded.extra["hf_config"]
        return fuse_encoder(onnx_model, cfg["num_attention_heads"], cfg["hidden_size"], attention=False)

    def keep_float(self, onnx_model):
        """Every Conv: the convolutional feature encoder and the positional conv. Quantizing them roughly
        doubles CTC logit error for little speed (measured: frame agreement 93.6% -> 86.7%)."""
        return sorted(n.name for n in onnx_model.graph.node if n.op_type == "Conv")

    def metadata(self, loaded):
        return {"model_type": loaded.config["model_type"], "uses_attention_mask": str(loaded.config["uses_mask"]).lower()}

    # verify
    def prepare(self, loaded, x):
        """Wav2Vec2FeatureExtractor with do_normalize: zero mean, unit variance per clip."""
        if loaded.config["do_normalize"]:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        return x.astype(np.float32)

    def cases(self, loaded):
        from .suite import speech_like

        prep = lambda x: self.prepare(loaded, x)  # noqa: E731
        n_min = self.min_samples(loaded)
        cases = [
            Case("speech 1 s", prep(speech_like(16000, 120, 1))[None]),
            Case("speech 2.5 s", prep(speech_like(40000, 210, 2))[None]),
            Case(f"minimum {n_min} samples", prep(speech_like(n_min, 150, 3))[None]),
            Case("silence 1 s", np.zeros((1, 16000), np.float32)),
            Case("batch 3 x 1 s", np.stack([prep(speech_like(16000, f, s)) for s, f in [(4, 100), (5, 180), (6, 240)]])),
        ]
        if loaded.config["uses_mask"]:
            lengths = [24000, 15000, 5600]
            x = np.zeros((3, max(lengths)), np.float32)
            mask = np.zeros((3, max(lengths)), np.int64)
            for i, (n, f0) in enumerate(zip(lengths, [110, 200, 160])):
                x[i, :n] = prep(speech_like(n, f0, 7 + i))
                mask[i, :n] = 1
            cases.append(Case("padded batch 1.5/0.94/0.35 s, masked", x, mask, lengths))
        return cases

    def reference(self, loaded, case):
        """PyTorch on each row alone (unpadded); frames a padded row does not have are NaN (not compared).

        A model that PyTorch itself does not keep padding-invariant under the mask (seen with
        data2vec-audio) is compared with PyTorch on the same padded batch instead, and the drift is reported.
        """
        if case.lengths is None:
            return super().reference(loaded, case)
        import torch

        rows = [self._outputs(loaded, torch.from_numpy(case.input_values[i:i + 1, :n])) for i, n in enumerate(case.lengths)]
        padded = super().reference(loaded, case)
        result = {}
        for name, full in (padded.items() if isinstance(padded, dict) else [(self.output_names(loaded)[0], padded)]):
            if full.ndim == 2:  # one vector per clip
                alone = np.stack([r[name][0] for r in rows])
            else:  # frames: NaN where a row alone has none
                alone = np.full(full.shape, np.nan, np.float32)
                for i, r in enumerate(rows):
                    alone[i, : r[name].shape[1]] = r[name][0]
            valid = np.isfinite(alone)
            drift = float(np.abs(full[valid] - alone[valid]).max())
            loaded.extra["masked_padding_drift"] = max(drift, loaded.extra.get("masked_padding_drift", 0.0))
            result[name] = alone if drift <= PADDING_INVARIANT else np.where(valid, full, np.nan).astype(np.float32)
        return result if isinstance(padded, dict) else result[self.output_names(loaded)[0]]

    def extra_checks(self, loaded, kind, cases, refs, outs):
        extra, reasons = {}, []
        if loaded.config["task"] == "ctc":
            pairs = []
            if refs and isinstance(refs[0], dict):  # with frame embeddings: transcripts come from the logits
                refs, outs = [r["logits"] for r in refs], [o["logits"] for o in outs]
            for ref, out in zip(refs, outs):
                for r, o in zip(ref, out):
                    valid = np.isfinite(r).all(-1)
                    pairs.append((self.transcribe(loaded, r[valid]), self.transcribe(loaded, o[valid])))
            same = sum(a == b for a, b in pairs)
            extra["transcripts_equal"] = f"{same}/{len(pairs)}"
            from ..ctc import cer

            extra["cer"] = round(cer([a for a, _ in pairs], [b for _, b in pairs]), 4)
            if kind == "fp32" and same != len(pairs):
                reasons.append(f"greedy transcripts differ from PyTorch in {len(pairs) - same} of {len(pairs)} clips")
        if not loaded.config["uses_mask"]:
            extra["padding_drift"] = self.padding_drift(loaded)
        elif loaded.extra.get("masked_padding_drift", 0.0) > PADDING_INVARIANT:
            # PyTorch itself: padded-with-mask vs alone
            extra["masked_padding_drift"] = loaded.extra["masked_padding_drift"]
        return extra, reasons

    def padding_drift(self, loaded) -> float:
        """Group-norm checkpoints: max |dlogit| between a clip alone and the same clip zero-padded by 60%, in PyTorch."""
        import torch

        from .suite import speech_like

        if "padding_drift" not in loaded.extra:
            x = self.prepare(loaded, speech_like(16000, 150, 11))
            padded = np.concatenate([x, np.zeros(9600, np.float32)])
            a = self._main(loaded, torch.from_numpy(x)[None])[0]
            b = self._main(loaded, torch.from_numpy(padded)[None])[0]
            if a.ndim == 2:  # frames
                b = b[: a.shape[0]]
            loaded.extra["padding_drift"] = float(np.abs(a - b).max())
        return loaded.extra["padding_drift"]

    def transcribe(self, loaded, logits) -> str:
        """Greedy CTC: argmax per frame, merge repeats, drop the blank (pad), `|` -> space."""
        tok = loaded.extra.get("tokenizer") or build_tokenizer(loaded.extra["vocab"], loaded.extra.get("tokenizer_config"))
        return greedy_decode(tok, logits.argmax(-1).tolist())

    # package
    def hf_config(self, loaded):
        cfg = json.loads(json.dumps(loaded.extra["hf_config"]))
        mt = cfg["model_type"]
        task = loaded.config["task"]
        js_types = JS_CTC_TYPES if task == "ctc" else JS_CLS_TYPES  # AutoModel (embeddings) knows the same types
        if mt not in js_types:
            cfg["voxport_model_type"] = mt
            cfg["model_type"] = "wav2vec2"
            cfg["architectures"] = ["Wav2Vec2" + TASK_HEADS[task]]
        for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
            cfg.pop(k, None)
        return cfg

    def preprocessor_config(self, loaded):
        d = loaded.extra["feature_extractor"].to_dict()
        d["feature_extractor_type"] = "Wav2Vec2FeatureExtractor"
        return d

    def extra_files(self, loaded):
        files = {}
        if loaded.config["task"] == "ctc":
            tok_json, tok_cfg = ctc_tokenizer_files(loaded.extra["tokenizer"])
            files["tokenizer.json"] = tok_json.encode("utf-8")
            files["tokenizer_config.json"] = json.dumps(tok_cfg, indent=2, ensure_ascii=False).encode("utf-8")
            files["vocab.json"] = json.dumps(loaded.extra["vocab"], ensure_ascii=False).encode("utf-8")
        if loaded.extra.get("license"):
            files["LICENSE"] = loaded.extra["license"]
        return files

    def card(self, loaded):
        src = loaded.source
        hub = None if src.get("random_init") or src.get("local") else src.get("checkpoint")
        task = loaded.config["task"]
        notes = [f"Source model type: `{loaded.config['model_type']}`; "
                 + ("takes `attention_mask` (layer-norm feature encoder): padded batches match each clip alone."
                    if loaded.config["uses_mask"] else
                    f"no attention mask (group-norm feature encoder): outputs change with padding "
                    f"(a clip padded by 60% drifts {self.padding_drift(loaded):.2e} in logits, in PyTorch too); run clips one at a time."),
                 "The convolutional feature encoder stays float in the 8-bit files."]
        if task == "xvector":
            cfg = loaded.extra["hf_config"]
            notes.append(f"`embeddings` [batch, {cfg['xvector_output_dim']}] is the x-vector head's output (`embeddings` of "
                         "transformers' XVectorOutput); its `logits` (the training objective's input) are not exported.")
            if loaded.config["uses_mask"]:
                notes.append("transformers pools a padded row over more TDNN frames than the row has (its TDNN lengths ignore "
                             "dilation), in PyTorch and here alike: for the same embedding as a clip alone, run clips one at a time.")
        if task == "frames" or loaded.config.get("embeddings"):
            notes.append(f"`last_hidden_state` [batch, frames, {loaded.extra['hf_config']['hidden_size']}]: one vector per "
                         "20 ms frame; the snippet averages them into one vector per clip.")
        if self.hf_config(loaded)["model_type"] != loaded.config["model_type"]:
            notes.append(f"`config.json` says `model_type: wav2vec2` (the original type is kept in `voxport_model_type`): "
                         f"Transformers.js picks its model class by `model_type` and has no {loaded.config['model_type']} "
                         f"class for this task; its wav2vec2 wrapper runs any graph with these inputs and outputs.")
        if loaded.source.get("random_init"):
            notes.append("The weights are seeded random numbers: for trying the pipeline, not for real predictions.")
        elif not loaded.extra.get("license") and loaded.extra.get("card_license") in (None, "other"):
            notes.append("The checkpoint came without a licence: add the weights' licence before publishing this folder.")
        what = {"ctc": "CTC speech recognition", "cls": "audio classification", "xvector": "speaker embeddings (x-vector)",
                "frames": "frame embeddings"}[task]
        card = {"title": f"{loaded.config['model_type']} {what} (ONNX)",
                "base_model": hub, "license": loaded.extra.get("card_license") or "other",
                "pipeline_tag": self.task(loaded), "notes": notes}
        if task in ("xvector", "frames") or loaded.config.get("embeddings"):
            card["embeddings"] = self.output_names(loaded)[-1]
        return card
