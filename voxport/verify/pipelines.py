"""The deployed pipelines in Transformers.js (voxport-web) against `voxport run` on the same file and audio.

What users run in the browser is a pipeline around the file: long recordings cut into chunks with word timestamps
(CTC), rolling windows with an EMA (classifiers), the score of two clips (embeddings). Each architecture names its
pipelines (ArchSpec.deployed); each runs on a minute of the shipped speech in Node or Chromium and is compared with
what `voxport run` computes with onnxruntime-python, itself tested equal to transformers' pipeline:
- long-form CTC: float files give the same transcript and word timestamps; files with integer kernels are held to
  the frame rule of the per-case check (WASM rounds activations its own way), the transcripts' CER is reported;
- windows: every window's probabilities within the runtime's bar for the file's kind; a window's label may differ
  only where the Python margin is under twice that bar;
- speaker score: within the runtime's bar.
"""
from __future__ import annotations

import numpy as np

from ..ctc import cer
from ..files import DTYPE_FILES, file_kind
from ..tolerances import runtime as runtime_tolerance
from .speech import long_speech, speech_clips


def python_run(folder: str, dtype: str, kind: str, options: dict, audio: np.ndarray, b: np.ndarray | None = None) -> dict:
    """What `voxport run` gives for this pipeline on this file (onnxruntime-python)."""
    from ..infer.folder import ModelFolder
    from ..infer.predict import Options, Predictor

    mf = ModelFolder(folder)
    model = mf.open(dtype, 0)
    if kind == "longform":
        opts = Options(chunk_length_s=options.get("chunk_length_s"), stride_length_s=options.get("stride_length_s"),
                       timestamps="word" if options.get("return_timestamps") == "word" else None)
    elif kind == "windows":
        opts = Options(window_s=options["window_s"], hop_s=options.get("hop_s"), ema=options.get("ema"), top_k=100)
    else:
        opts = Options()
    pred = Predictor(mf, model, opts, mf.min_samples(model))
    if kind == "verify":
        ea, eb = (np.asarray(r["embeddings"], np.float64).reshape(-1) for r in pred.predict([audio, b]))
        return {"score": float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb))}
    return pred.predict([audio])[0]


def compare_run(kind: str, got: dict, want: dict, tol: float, exact: bool) -> tuple:
    """(figures, failure reasons) of one pipeline run."""
    if kind == "longform":
        words = [c["text"] for c in want.get("chunks", [])]
        figures = {"chars": len(want["text"]), "words": len(words), "cer": round(cer([want["text"]], [got["text"]]), 5),
                   "same_text": got["text"] == want["text"]}
        reasons = []
        if exact:
            same_words = [c["text"] for c in got.get("chunks", [])] == words and np.allclose(
                [c["timestamp"] for c in got.get("chunks", [])], [c["timestamp"] for c in want.get("chunks", [])], atol=1e-6)
            figures["same_words_and_times"] = bool(same_words)
            if not (figures["same_text"] and same_words):
                reasons.append(f"long-form CTC: the transcript or its word timestamps differ from voxport run's (CER {figures['cer']:.3g})")
        return figures, reasons
    if kind == "windows":
        labels = list(want["windows"][0]["scores"])
        p_want = np.array([[w["scores"][k] for k in labels] for w in want["windows"]])
        p_got = np.array([[w["scores"][k] for k in labels] for w in got["windows"]]) if got.get("windows") else np.zeros((0, len(labels)))
        if p_got.shape != p_want.shape:
            return {"windows": len(want["windows"])}, [f"rolling windows: {len(got.get('windows', []))} windows, voxport run has {len(want['windows'])}"]
        s_want = np.array([[w["smoothed"][k] for k in labels] for w in want["windows"]])
        s_got = np.array([[w["smoothed"][k] for k in labels] for w in got["windows"]])
        top2 = np.sort(p_want, 1)[:, -2:]
        decisive = (top2[:, 1] - top2[:, 0]) > 2 * tol
        flips = int(((p_got.argmax(1) != p_want.argmax(1)) & decisive).sum())
        figures = {"windows": int(len(p_want)), "max_abs_prob": float(np.abs(p_got - p_want).max()),
                   "max_abs_smoothed": float(np.abs(s_got - s_want).max()), "decisive_flips": flips,
                   "decision": got["labels"][0]["label"], "decision_python": want["labels"][0]["label"]}
        reasons = []
        if figures["max_abs_prob"] > tol or figures["max_abs_smoothed"] > tol or flips:
            reasons.append(f"rolling windows: max |dp| {figures['max_abs_prob']:.3g} (smoothed {figures['max_abs_smoothed']:.3g}), "
                           f"{flips} decisive label flips; bar {tol:.3g}")
        return figures, reasons
    d = abs(got["score"] - want["score"])
    figures = {"score": round(got["score"], 6), "score_python": round(want["score"], 6), "abs_diff": d}
    return figures, ([f"speaker score differs by {d:.3g} > {tol:.3g}"] if d > tol else [])


def check_pipelines(folder: str, files: dict, loaded, runtime: str, threads: int | None = None, progress=None) -> dict:
    """{file name: (figures, failure reasons)} of the architecture's deployed pipelines in `runtime` (node or browser)."""
    from ..archs import get_arch
    from .jsrun import run_pipelines

    spec = get_arch(loaded.arch)
    plan = spec.deployed(loaded)
    if not plan or runtime not in ("node", "browser"):
        return {}
    clips = speech_clips(spec.sample_rate)
    if len(clips) < 2:  # a suite without speech (tests that leave it out for time): nothing to run the pipelines on
        return {}
    speech = long_speech(clips)
    runs = []
    for kind, options in plan:
        run = {"kind": kind, "options": options, "audio": speech}
        if kind == "verify":
            run.update(audio=clips[0].audio, b=clips[1].audio)
        runs.append(run)
    by_dtype = {d: n for d, n in DTYPE_FILES.items() if n in files}
    if progress:
        progress(f"deployed pipelines in {runtime} ({', '.join(k for k, _ in plan)}) on {len(speech) / spec.sample_rate:.0f} s of speech")
    res = run_pipelines(folder, list(by_dtype), runs, where=runtime, threads=threads)
    out = {}
    for dtype, name in by_dtype.items():
        _, numeric = file_kind(files[name])
        tol = runtime_tolerance(runtime, numeric)
        entry = res.get(dtype) or {}
        if entry.get("error"):
            out[name] = ({"error": entry["error"]}, [f"voxport-web ({runtime}): {entry['error']}"])
            continue
        figures, reasons = {}, []
        for run, got in zip(runs, entry["results"]):
            want = python_run(folder, dtype, run["kind"], run["options"], run["audio"], run.get("b"))
            f, r = compare_run(run["kind"], got, want, tol, exact=numeric == "float")
            figures[run["kind"]] = {**f, "ms": round(got.get("ms", 0.0), 1)}
            reasons += r
        out[name] = (figures, reasons)
    return out
