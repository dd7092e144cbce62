"""What one model says about clips: the inputs Transformers.js's pipeline would feed, in mini-batches.

Every clip becomes segments (the whole clip, rolling windows, or CTC chunks), each normalized as
Wav2Vec2FeatureExtractor does when preprocessor_config.json says do_normalize. Segments of equal length
from several clips share a batch; a clip's result is put back together from its segments.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..errors import VoxportError
from .audio import ClipError


@dataclass(frozen=True)
class Options:
    batch_size: int = 8
    top_k: int = 5
    window_s: float | None = None
    hop_s: float | None = None
    ema: float | None = None
    chunk_length_s: float | None = None
    stride_length_s: float | None = None
    timestamps: str | None = None  # "word"
    skip_special_tokens: bool = False  # CTC: as Transformers.js decodes; default: as transformers' pipeline

    def check(self, folder) -> None:
        """Bad combinations are the user's mistake (exit 2), found before any file is read."""
        if self.batch_size < 1:
            raise VoxportError("--batch-size must be at least 1")
        windowed = self.window_s is not None or self.hop_s is not None or self.ema is not None
        if folder.is_ctc and windowed:
            raise VoxportError("--window-s/--hop-s/--ema are for classifiers; for CTC use --chunk-length-s/--stride-length-s")
        if not folder.is_ctc and (self.chunk_length_s is not None or self.stride_length_s is not None or self.timestamps):
            raise VoxportError("--chunk-length-s/--stride-length-s/--timestamps are for CTC folders; for classifiers use --window-s/--hop-s")
        if windowed and self.window_s is None:
            raise VoxportError("--hop-s and --ema need --window-s SECONDS")
        if self.window_s is not None and self.window_s <= 0:
            raise VoxportError("--window-s must be positive")
        if self.hop_s is not None and self.hop_s <= 0:
            raise VoxportError("--hop-s must be positive")
        if self.ema is not None and not 0 < self.ema <= 1:
            raise VoxportError("--ema is the weight of the newest window, in (0, 1]")
        if self.stride_length_s is not None and self.chunk_length_s is None:
            raise VoxportError("--stride-length-s needs --chunk-length-s SECONDS")
        if self.chunk_length_s is not None:
            if self.chunk_length_s <= 0:
                raise VoxportError("--chunk-length-s must be positive")
            stride = self.stride_length_s if self.stride_length_s is not None else self.chunk_length_s / 6
            if stride < 0 or 2 * stride >= self.chunk_length_s:
                raise VoxportError("--stride-length-s must be under half of --chunk-length-s")
        if self.timestamps not in (None, "word"):
            raise VoxportError("--timestamps takes word")


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def normalize(x: np.ndarray) -> np.ndarray:
    """Wav2Vec2FeatureExtractor's zero-mean unit-variance, per clip, in float32."""
    x = np.asarray(x, dtype=np.float32)
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)


def ctc_chunks(n: int, sr: int, align: int, chunk_length_s: float, stride_length_s: float | None) -> list:
    """(start, end, stride_left, stride_right) in samples, as transformers' ASR pipeline cuts long audio:
    lengths rounded to whole CTC frames (multiples of inputs_to_logits_ratio), no left stride on the first
    chunk, no right stride on the last, chunks no longer than their left stride skipped."""
    if stride_length_s is None:
        stride_length_s = chunk_length_s / 6
    chunk_len = int(round(chunk_length_s * sr / align) * align)
    left = right = int(round(stride_length_s * sr / align) * align)
    if chunk_len < left + right:
        raise VoxportError("--chunk-length-s must be longer than twice --stride-length-s")
    step = chunk_len - left - right
    if step <= 0:
        raise VoxportError("--chunk-length-s must be longer than twice --stride-length-s (after rounding to CTC frames)")
    out = []
    for start in range(0, n, step):
        end = min(start + chunk_len, n)
        is_last = start + chunk_len >= n
        sl, sr_ = (0 if start == 0 else left), (0 if is_last else right)
        if end - start > sl:
            out.append((start, end, sl, sr_))
        if is_last:
            break
    return out


def frames_kept(n: int, align: int, left: int, right: int) -> tuple:
    """The chunk's logit frames [a, b) outside its strides (transformers' rescale_stride)."""
    token_n = int(round(n / align))
    a = int(round(left / n * token_n))
    b = token_n - int(round(right / n * token_n))
    return a, b


class Predictor:
    """model: callable (input_values, attention_mask) -> {output name: array}, with .output_names."""

    def __init__(self, folder, model, options: Options, min_samples: int = 1):
        self.folder = folder
        self.model = model
        self.opt = options
        self.min_samples = max(1, int(min_samples))
        self.sr = folder.sample_rate
        self.labels = folder.id2label

    def _prep(self, x: np.ndarray) -> np.ndarray:
        return normalize(x) if self.folder.do_normalize else np.asarray(x, dtype=np.float32)

    def _too_short(self, n: int) -> ClipError:
        return ClipError(f"too short: {n} samples at {self.sr} Hz ({n / self.sr * 1000:.1f} ms); "
                         f"the model needs at least {self.min_samples} ({self.min_samples / self.sr * 1000:.1f} ms)")

    # planning: clip -> segments + a function from the segments' outputs to the result
    def plan(self, audio: np.ndarray):
        n = len(audio)
        if n < self.min_samples:
            raise self._too_short(n)
        if self.folder.is_ctc:
            return self._plan_ctc(audio)
        if self.opt.window_s is not None:
            return self._plan_windows(audio)
        return [self._prep(audio)], lambda outs: self._classify(outs[0])

    def _top(self, probs: np.ndarray) -> list:
        order = np.argsort(-probs, kind="stable")[: self.opt.top_k]
        return [{"label": self.labels.get(int(i), str(int(i))), "score": float(probs[i])} for i in order]

    def _classify(self, out: dict) -> dict:
        res = {}
        if "logits" in out:
            res["labels"] = self._top(softmax(out["logits"]))
        for name, value in out.items():
            if name != "logits":
                res[name if name not in ("labels", "text", "status", "path") else f"output_{name}"] = np.asarray(value, np.float32)
        return res

    def _plan_windows(self, audio):
        w = max(1, int(round(self.opt.window_s * self.sr)))
        hop = max(1, int(round((self.opt.hop_s or self.opt.window_s) * self.sr)))
        n = len(audio)
        starts = list(range(0, n - w + 1, hop)) if n >= w else [0]
        segs = [self._prep(audio[s:s + w]) for s in starts]

        def finish(outs):
            probs = np.stack([softmax(o["logits"]) for o in outs])
            alpha = self.opt.ema
            smooth = probs.copy()
            if alpha is not None:
                for t in range(1, len(smooth)):
                    smooth[t] = alpha * probs[t] + (1 - alpha) * smooth[t - 1]
            decision = smooth[-1] if alpha is not None else probs.mean(0)
            names = [self.labels.get(i, str(i)) for i in range(probs.shape[1])]
            trace = []
            for t, s in enumerate(starts):
                item = {"start_s": s / self.sr, "end_s": min(s + w, n) / self.sr,
                        "label": names[int(probs[t].argmax())], "scores": {k: float(v) for k, v in zip(names, probs[t])}}
                if alpha is not None:
                    item["smoothed_label"] = names[int(smooth[t].argmax())]
                    item["smoothed"] = {k: float(v) for k, v in zip(names, smooth[t])}
                trace.append(item)
            return {"labels": self._top(decision), "windows": trace,
                    "decision": "ema of windows (last value)" if alpha is not None else "mean of windows"}

        return segs, finish

    def _plan_ctc(self, audio):
        align = self.folder.inputs_to_logits_ratio
        if self.opt.chunk_length_s is None:
            spans = [(0, len(audio), 0, 0)]
        else:
            spans = ctc_chunks(len(audio), self.sr, align, self.opt.chunk_length_s, self.opt.stride_length_s)
            # a last chunk too short for the model holds frames of the previous chunk's right stride only
            spans = [s for s in spans if s[1] - s[0] >= self.min_samples] or spans[:1]
        segs = [self._prep(audio[a:b]) for a, b, _, _ in spans]

        def finish(outs):
            ids = []
            for (a, b, left, right), o in zip(spans, outs):
                frame_ids = np.asarray(o["logits"]).argmax(-1)
                if self.opt.chunk_length_s is not None:
                    lo, hi = frames_kept(b - a, align, left, right)
                    frame_ids = frame_ids[lo:hi]
                ids.extend(int(i) for i in frame_ids)
            dec = self.folder.decoder
            res = {"text": dec.text(ids, self.opt.skip_special_tokens)}
            if self.opt.timestamps == "word":
                res["chunks"] = [{"text": w, "timestamp": [s * align / self.sr, e * align / self.sr]}
                                 for w, s, e in dec.words(ids, self.opt.skip_special_tokens)]
            return res

        return segs, finish

    # running
    def predict(self, clips: list) -> list:
        """clips: arrays (or ClipError for files that could not be read). Returns a result dict or a ClipError per clip."""
        results = list(clips)
        plans, segs = {}, defaultdict(list)  # length -> [(clip index, segment index, array)]
        for i, audio in enumerate(clips):
            if isinstance(audio, Exception):
                continue
            try:
                parts, finish = self.plan(audio)
            except ClipError as e:
                results[i] = e
                continue
            plans[i] = (finish, [None] * len(parts))
            for j, p in enumerate(parts):
                segs[len(p)].append((i, j, p))
        failed = {}
        for length in sorted(segs):
            rows = segs[length]
            for k in range(0, len(rows), self.opt.batch_size):
                batch = rows[k:k + self.opt.batch_size]
                for (i, j, _), out in zip(batch, self._run(batch, failed)):
                    if out is not None:
                        plans[i][1][j] = out
        for i, (finish, outs) in plans.items():
            if i in failed:
                results[i] = ClipError(failed[i])
                continue
            try:
                results[i] = finish(outs)
            except Exception as e:  # a decoder or metadata problem on this clip only
                results[i] = ClipError(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        return results

    def _run(self, batch: list, failed: dict) -> list:
        try:
            outs = self.model(np.stack([p for _, _, p in batch]), None)
            return [{k: v[r] for k, v in outs.items()} for r in range(len(batch))]
        except Exception as e:
            if len(batch) == 1:
                failed[batch[0][0]] = f"the model failed on this clip: {(str(e).splitlines() or [type(e).__name__])[0][:200]}"
                return [None]
            return [r for item in batch for r in self._run([item], failed)]
