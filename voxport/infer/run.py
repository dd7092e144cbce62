"""`voxport run`: a built folder on files or folders of audio, onnxruntime only, one status per file."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .audio import ClipError, expand_paths, read_audio
from .folder import ModelFolder
from .predict import Options, Predictor


def plain(value):
    """JSON-able: numpy to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def read_clip(path: str, sr: int):
    """(audio or ClipError, duration in seconds or None)."""
    try:
        audio, _ = read_audio(path, sr)
        return audio, len(audio) / sr
    except ClipError as e:
        return e, None


def process(predictors: dict, paths: list, clips: list) -> list:
    """Run every predictor on the same decoded clips. One record per path:
    {path, status, error, duration_s, results: {name: result}} (a failure in any model fails the file)."""
    audio = [c for c, _ in clips]
    per_model = {name: p.predict(audio) for name, p in predictors.items()}
    records = []
    for k, path in enumerate(paths):
        a, dur = clips[k]
        rec = {"path": path, "status": "ok", "error": None, "duration_s": dur, "results": {}}
        if isinstance(a, ClipError):
            rec.update(status="error", error=str(a))
        else:
            for name, outs in per_model.items():
                if isinstance(outs[k], Exception):
                    rec.update(status="error", error=str(outs[k]) if len(predictors) == 1 else f"{name}: {outs[k]}")
                    break
                rec["results"][name] = outs[k]
        records.append(rec)
    return records


def iter_records(predictors: dict, paths: list, sr: int, files_per_batch: int, progress: bool = False, prefetch: bool = True):
    """Records in input order; the next mini-batch of files is read while the current one runs."""
    from tqdm import tqdm

    groups = [paths[i:i + files_per_batch] for i in range(0, len(paths), files_per_batch)]
    bar = tqdm(total=len(paths), unit="file", file=sys.stderr, disable=None if (progress and len(paths) > 1) else True)
    read = lambda group: [read_clip(p, sr) for p in group]  # noqa: E731
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(read, groups[0]) if groups and prefetch else None
        for g, group in enumerate(groups):
            clips = nxt.result() if prefetch else read(group)
            if prefetch and g + 1 < len(groups):
                nxt = pool.submit(read, groups[g + 1])
            for rec in process(predictors, group, clips):
                bar.update(1)
                yield rec
    bar.close()


@dataclass
class RunReport:
    folder: str
    dtype: str
    task: str
    results: list = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(r["status"] != "ok" for r in self.results)

    def to_dict(self) -> dict:
        return plain({"folder": self.folder, "dtype": self.dtype, "task": self.task, "results": self.results,
                      "files": len(self.results), "failed": self.failed})

    def to_table(self) -> str:
        rows = []
        for r in self.results:
            if r["status"] != "ok":
                what = f"error: {r['error']}"
            elif "text" in r:
                what = repr(r["text"])
            elif r.get("labels"):
                what = ", ".join(f"{x['label']} {x['score']:.3f}" for x in r["labels"][:3])
                if r.get("windows"):
                    what += f"  ({len(r['windows'])} windows, {r['decision']})"
            else:
                what = ", ".join(k for k in r if k not in ("path", "status", "error", "duration_s"))
            dur = f"{r['duration_s']:.2f} s" if r.get("duration_s") is not None else "-"
            rows.append((r["path"], r["status"], dur, what))
        w = max([len("file")] + [len(p) for p, *_ in rows])
        what = {"automatic-speech-recognition": "transcript", "audio-classification": "labels"}.get(self.task, "outputs")
        lines = [f"{'file':<{w}}  status  duration  {what}"]
        lines += [f"{p:<{w}}  {s:<6}  {d:>8}  {x}" for p, s, d, x in rows]
        n = len(self.results)
        lines.append(f"{n} file{'' if n == 1 else 's'}, {self.failed} failed ({os.path.basename(self.folder.rstrip('/'))}, {self.dtype})")
        return "\n".join(lines)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        ctc = self.task == "automatic-speech-recognition"
        w.writerow(["path", "status", "error", "duration_s"] + (["text"] if ctc else ["label", "score"]))
        for r in self.results:
            base = [r["path"], r["status"], r["error"] or "", "" if r.get("duration_s") is None else f"{r['duration_s']:.3f}"]
            if ctc:
                w.writerow(base + [r.get("text", "")])
            else:
                top = (r.get("labels") or [{}])[0]
                w.writerow(base + [top.get("label", ""), "" if "score" not in top else f"{top['score']:.6f}"])
        return buf.getvalue()


def _save_arrays(result: dict, path: str, npy_dir: str | None, used: set) -> dict:
    """Array outputs (embeddings ...) to .npy files in npy_dir (named after the audio file), else JSON lists."""
    out = {}
    for k, v in result.items():
        if isinstance(v, np.ndarray) and npy_dir:
            stem = os.path.splitext(os.path.basename(path))[0] or "clip"
            name, n = f"{stem}.{k}.npy", 1
            while name in used:
                n += 1
                name = f"{stem}-{n}.{k}.npy"
            used.add(name)
            target = os.path.join(npy_dir, name)
            tmp = target + ".tmp"
            with open(tmp, "wb") as f:
                np.save(f, v)
            os.replace(tmp, target)
            out[k] = {"npy": target, "shape": list(v.shape)}
        else:
            out[k] = v
    return out


def run(folder: str, paths: list, dtype: str | None = None, options: Options = Options(), threads: int = 0,
        npy_dir: str | None = None, progress: bool = False) -> RunReport:
    from ..errors import VoxportError

    mf = ModelFolder(folder)
    options.check(mf)
    chosen = mf.dtypes(dtype) if dtype else [mf.default_dtype()]
    if len(chosen) != 1:
        raise VoxportError(f"--dtype takes one file for run (one of {', '.join(mf.files)}); `voxport evaluate` compares several")
    dt = chosen[0]
    files = expand_paths(paths)
    if not files:
        raise VoxportError(f"no audio files found in {', '.join(paths)} (looked for {', '.join(('.wav', '.flac', '.ogg', '.mp3'))} ...)")
    model = mf.open(dt, threads)
    if npy_dir:
        os.makedirs(npy_dir, exist_ok=True)
    predictor = Predictor(mf, model, options, mf.min_samples(model))
    report = RunReport(folder=folder, dtype=dt, task=mf.task)
    used = set()
    for rec in iter_records({dt: predictor}, files, mf.sample_rate, options.batch_size, progress=progress):
        item = {"path": rec["path"], "status": rec["status"], "error": rec["error"], "duration_s": rec["duration_s"]}
        if rec["status"] == "ok":
            item.update(_save_arrays(rec["results"][dt], rec["path"], npy_dir, used))
        report.results.append(item)
    return report


def dumps(report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
