"""Verify stage: every ONNX file against the PyTorch model, on the suite and on user audio."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from ..archs import Loaded, get_arch
from ..errors import PackageError, VoxportError
from ..files import DTYPE_FILES, SOURCE_FILE, file_kind
from ..results import FileReport, Status, VerifyReport
from ..archs.base import Case
from .audio import load_audio
from .runtimes import get_runtime
from ..archs.suite import audio_cases
from ..tolerances import runtime as runtime_tolerance


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def build_cases(spec, loaded: Loaded, audio: list | None = None, speech: bool = True) -> list:
    """The architecture's synthetic suite (edge cases: silence, clipping, minimum length, 30 s, batches), speech
    clips shipped with voxport (each whole and in 0.75 s windows), and the user's audio. Clips get what the
    deployed pipeline does to them (spec.prepare) row by row."""
    from .speech import speech_clips

    prepare = lambda x: spec.prepare(loaded, x)  # noqa: E731
    cases = list(spec.cases(loaded))
    if speech:
        for clip in speech_clips(spec.sample_rate):
            cases += audio_cases(f"speech {clip.name}", clip.audio, prepare=prepare)
    from ..infer.audio import expand_paths

    for path in expand_paths(audio or []):  # folders: every audio file in them
        clip = load_audio(path, spec.sample_rate, spec.min_samples(loaded))
        cases += audio_cases(os.path.basename(path), clip, prepare=prepare)
    return cases


def verify(files: dict, loaded: Loaded, audio: list | None = None, runtime: str = "python", cases: list | None = None,
           refs: list | None = None, progress=None, known: dict | None = None) -> VerifyReport:
    """files: label -> path. The kind (fp32, q8 ...) comes from each file's metadata; tolerances from the table.
    progress: told which file runs, with counts of cases when a file takes a while. known: {path: outputs on
    these cases in this runtime} already measured (the keep-float search measures the file it keeps)."""
    known = known or {}
    spec = get_arch(loaded.arch)
    cases = cases if cases is not None else build_cases(spec, loaded, audio)
    if refs is None:
        if progress:
            progress(f"PyTorch references on {len(cases)} cases")
        refs = [spec.reference(loaded, c) for c in counted(cases, progress, "PyTorch references")]
    rt = get_runtime(runtime)
    reports = []
    for label, path in files.items():
        if progress and path not in known:
            progress(f"verify {label} ({rt.name}): {len(cases)} cases")
        kind, _ = file_kind(path)
        tol = spec.tolerance(loaded, kind)
        names = spec.output_names(loaded) if spec.multi_output(loaded) else None
        outs = known[path] if path in known else run_cases(rt, path, cases, names, progress, f"verify {label}")
        if names:
            rep = compare_outputs(label, kind, rt.name, cases, refs, outs, tol, spec.output_kinds(loaded))
        else:
            rep = compare(label, kind, rt.name, cases, refs, outs, tol)
        reports.append(with_findings(rep, *spec.extra_checks(loaded, kind, cases, refs, outs)))
    ok = all(r.status == Status.PASSED for r in reports)
    return VerifyReport(status=Status.PASSED if ok else Status.FAILED, files=reports,
                        cases=[c.name for c in cases], reference=f"PyTorch {loaded.arch} ({_describe(loaded.source)})")


def with_findings(rep, extra: dict, reasons: list):
    """A file's report with more figures and failure reasons (any reason fails the file)."""
    if not extra and not reasons:
        return rep
    return dataclasses.replace(rep, extra={**rep.extra, **extra}, reasons=rep.reasons + reasons,
                               status=Status.FAILED if (reasons or rep.reasons) else rep.status)


def counted(cases: list, progress, label: str):
    """The cases one by one, saying how far it got (with the time left) every 10 s or so when progress is given."""
    import time

    t0 = last = time.time()
    for i, c in enumerate(cases):
        yield c
        if progress is not None and time.time() - last > 10 and i + 1 < len(cases):
            last = time.time()
            progress(f"{label}: {i + 1}/{len(cases)} cases, ~{(last - t0) / (i + 1) * (len(cases) - i - 1):.0f} s left")


def run_cases(rt, path: str, cases: list, outputs, progress, label: str) -> list:
    """rt.run_cases, with counts (counted) when progress is given."""
    if progress is None:
        return rt.run_cases(path, cases, outputs=outputs) if outputs else rt.run_cases(path, cases)
    run = rt.open(path, outputs) if outputs else rt.open(path)
    return [run(c.input_values, c.attention_mask) for c in counted(cases, progress, label)]


def decisions(names: list, p_ref: np.ndarray, p_got: np.ndarray, tol) -> dict:
    """Argmax agreement over all rows, and over decisive rows (reference top-1/top-2 margin > tol.margin());
    flips on the other rows (near-ties) are listed apart: within tolerance, a file may flip them."""
    ref_top = p_ref.argmax(-1)
    agree = ref_top == p_got.argmax(-1)
    srt = np.sort(p_ref, -1)
    margin = srt[:, -1] - srt[:, -2] if p_ref.shape[-1] > 1 else np.ones(len(p_ref))
    decisive = margin > tol.margin()
    flipped = np.flatnonzero(~agree & ~decisive)
    examples = [f"{names[i]}: p({int(ref_top[i])}) {p_ref[i, ref_top[i]]:.3f} -> {p_got[i, ref_top[i]]:.3f}" for i in flipped[:5]]
    return dict(argmax_agree=int(agree.sum()), argmax_total=int(agree.size), decisive_agree=int((agree & decisive).sum()),
                decisive_total=int(decisive.sum()), near_tie_flips=int(flipped.size), flip_examples=examples)


def row_names(case, rows: int) -> list:
    if rows == 1:
        return [case.name]
    return [f"{case.name} [{i}]" for i in range(rows)]


def compare(label, kind, runtime, cases, refs, outs, tol) -> FileReport:
    dl, dp, pr, pg, names = [], [], [], [], []
    worst, worst_val, worst_p, worst_p_val = "", -1.0, "", -1.0
    for c, ref, out in zip(cases, refs, outs):
        if out.shape != ref.shape:
            return FileReport(label, kind, runtime, Status.FAILED, len(cases), float("inf"), float("inf"), 1.0, 1.0, 0, 0,
                              0, 0, _tol(tol), [f"{c.name}: output shape {out.shape} != reference {ref.shape}"])
        # NaN in the reference marks rows not compared (frames a padded clip does not have alone)
        r2, o2 = ref.reshape(-1, ref.shape[-1]).astype(np.float64), out.reshape(-1, ref.shape[-1]).astype(np.float64)
        rows = np.isfinite(r2).all(-1)
        ids = np.flatnonzero(rows)
        r2, o2 = r2[rows], o2[rows]
        d = np.abs(o2 - r2)
        sr, so = softmax(r2), softmax(o2)
        dl.append(d.ravel())
        dp.append(np.abs(so - sr).ravel())
        pr.append(sr)
        pg.append(so)
        per_row = ref.shape[1] if ref.ndim == 3 else 1  # CTC: frames per batch row
        base = row_names(c, ref.shape[0])
        names += [base[i // per_row] + (f" frame {i % per_row}" if per_row > 1 else "") for i in ids]
        if d.max() > worst_val:
            worst, worst_val = c.name, float(d.max())
        if dp[-1].max() > worst_p_val:
            worst_p, worst_p_val = c.name, float(dp[-1].max())
    dl, dp = np.concatenate(dl), np.concatenate(dp)
    rep = dict(max_abs_logit=float(dl.max()), mean_abs_logit=float(dl.mean()), max_abs_prob=float(dp.max()),
               mean_abs_prob=float(dp.mean()), over_1e2=int((dp > 1e-2).sum()), over_1e1=int((dp > 1e-1).sum()))
    dec = decisions(names, np.concatenate(pr), np.concatenate(pg), tol)
    reasons = gate(rep["max_abs_logit"], rep["max_abs_prob"], dec, tol, worst, worst_p)
    if not np.isfinite(dl).all():
        reasons.insert(0, "non-finite outputs")
    return FileReport(label, kind, runtime, Status.FAILED if reasons else Status.PASSED, len(cases), **rep,
                      tolerance=_tol(tol), reasons=reasons, worst_case=worst, **dec)


def compare_outputs(label, kind, runtime, cases, refs, outs, tol, kinds: dict) -> FileReport:
    """A graph with several outputs (refs and outs: {output name: array} per case): the "logits" output as compare()
    does it, each "embedding" output by cosine, max |d| and the change of pairwise scores."""
    nan = float("nan")
    logit_names = [n for n, k in kinds.items() if k == "logits"]
    if logit_names:
        name = logit_names[0]
        rep = compare(label, kind, runtime, cases, [r[name] for r in refs], [o[name] for o in outs], tol)
    else:
        rep = FileReport(label, kind, runtime, Status.PASSED, len(cases), nan, nan, nan, nan, 0, 0, 0, 0, _tol(tol))
    for name in (n for n, k in kinds.items() if k in ("embedding", "frames")):
        figures, reasons = compare_embeddings(cases, [r[name] for r in refs], [o[name] for o in outs], tol)
        reasons = [f"{name}: {r}" for r in reasons]
        rep = dataclasses.replace(rep, **figures, reasons=rep.reasons + reasons,
                                  status=Status.FAILED if rep.reasons or reasons else rep.status)
    return rep


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows; two all-zero rows count as identical (1.0)."""
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    cos = (a * b).sum(-1) / np.maximum(na * nb, 1e-30)
    return np.where((na == 0) & (nb == 0), 1.0, cos)


def pairwise_scores(x: np.ndarray) -> np.ndarray:
    """Verification scores: the cosine between every two rows' embeddings (the upper triangle, i < j)."""
    n = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)
    s = n @ n.T
    return s[np.triu_indices(len(x), 1)]


def compare_embeddings(cases, refs, outs, tol) -> tuple:
    """Embeddings of every row of every case against the reference: (typed figures, failure reasons).

    Frame embeddings ([batch, frames, dim]): cosine and |d| per frame (NaN frames in the reference, which a padded row
    does not have alone, are not compared); pairwise scores between clips' frame averages, as a user pools them."""
    names, r_rows, o_rows, r_clips, o_clips = [], [], [], [], []
    for c, ref, out in zip(cases, refs, outs):
        if out.shape != ref.shape:
            return ({"min_cosine": -1.0, "max_abs_embedding": float("inf"), "max_pair_delta": float("inf"), "embedding_rows": 0},
                    [f"{c.name}: output shape {out.shape} != reference {ref.shape}"])
        batch = row_names(c, ref.shape[0])
        for i in range(ref.shape[0]):
            r2, o2 = ref[i].reshape(-1, ref.shape[-1]).astype(np.float64), out[i].reshape(-1, ref.shape[-1]).astype(np.float64)
            valid = np.isfinite(r2).all(-1)
            r2, o2 = r2[valid], o2[valid]
            names += [batch[i] + (f" frame {t}" if ref.ndim == 3 else "") for t in np.flatnonzero(valid)]
            r_rows.append(r2)
            o_rows.append(o2)
            r_clips.append(r2.mean(0))
            o_clips.append(o2.mean(0))
    R, O = np.concatenate(r_rows), np.concatenate(o_rows)
    if not np.isfinite(O).all():
        return ({"min_cosine": -1.0, "max_abs_embedding": float("inf"), "max_pair_delta": float("inf"), "embedding_rows": len(R)},
                ["non-finite outputs"])
    cos = cosine_rows(R, O)
    Rc, Oc = np.stack(r_clips), np.stack(o_clips)
    pair = np.abs(pairwise_scores(Oc) - pairwise_scores(Rc)) if len(Rc) > 1 else np.zeros(1)
    figures = {"min_cosine": float(cos.min()), "max_abs_embedding": float(np.abs(O - R).max()),
               "max_pair_delta": float(pair.max()), "embedding_rows": len(R)}
    reasons = []
    if tol.min_cosine is not None and not figures["min_cosine"] >= tol.min_cosine:
        reasons.append(f"min cosine {figures['min_cosine']:.6f} < {tol.min_cosine} (worst: {names[int(cos.argmin())]})")
    if tol.max_pair_delta is not None and not figures["max_pair_delta"] <= tol.max_pair_delta:
        reasons.append(f"max |d pairwise score| {figures['max_pair_delta']:.2e} > {tol.max_pair_delta:.0e}")
    return figures, reasons


def gate(max_logit: float | None, max_prob: float, dec: dict, tol, worst: str = "", worst_p: str = "") -> list:
    """Why a file fails its tolerance (empty: it passes). worst / worst_p: the cases with the largest |dlogit| / |dp|.
    max_logit None: no logits to judge (Transformers.js returns probabilities)."""
    reasons = []
    if max_logit is not None and tol.max_abs_logit is not None and not max_logit <= tol.max_abs_logit:
        reasons.append(f"max |dlogit| {max_logit:.2e} > {tol.max_abs_logit:.0e}" + (f" (worst: {worst})" if worst else ""))
    if tol.max_abs_prob is not None and not max_prob <= tol.max_abs_prob:
        reasons.append(f"max |dp| {max_prob:.3f} > {tol.max_abs_prob}" + (f" (worst: {worst_p})" if worst_p else ""))
    if dec["decisive_total"] and dec["decisive_agree"] / dec["decisive_total"] < tol.min_agreement:
        reasons.append(f"argmax agreement on decisive rows {dec['decisive_agree']}/{dec['decisive_total']} "
                       f"< {tol.min_agreement:.0%}")
    return reasons


def _tol(tol) -> dict:
    d = {"max_abs_logit": tol.max_abs_logit, "max_abs_prob": tol.max_abs_prob, "min_agreement": tol.min_agreement, "why": tol.why}
    if tol.min_cosine is not None or tol.max_pair_delta is not None:
        d.update(min_cosine=tol.min_cosine, max_pair_delta=tol.max_pair_delta)
    return d


def _describe(source: dict) -> str:
    if source.get("random_init"):
        return f"random init, seed {source.get('seed')}"
    return str(source.get("checkpoint"))


def read_source(folder: str) -> dict:
    path = os.path.join(folder, SOURCE_FILE)
    if not os.path.isfile(path):
        raise PackageError(f"{folder} has no {SOURCE_FILE}; pass a folder made by `voxport build`, or ONNX files with --arch and --checkpoint")
    with open(path) as f:
        return json.load(f)


def folder_files(folder: str) -> dict:
    files = {}
    for name in DTYPE_FILES.values():
        p = os.path.join(folder, "onnx", name)
        if os.path.isfile(p):
            files[name] = p
    if not files:
        raise PackageError(f"{folder}/onnx has no model files")
    return files


WEBGPU_ROWS = 3  # software WebGPU (SwiftShader) takes 10-30 s per run of a full-size model


def row_cases(cases: list) -> list:
    """Each row of each case alone and unpadded: the JS pipelines take one clip at a time."""
    out = []
    for c in cases:
        for i in range(c.input_values.shape[0]):
            n = c.lengths[i] if c.lengths else c.input_values.shape[1]
            name = c.name if c.input_values.shape[0] == 1 else f"{c.name} [{i}]"
            out.append(Case(name, np.ascontiguousarray(c.input_values[i:i + 1, :n])))
    return out


def verify_js(folder: str, files: dict, loaded: Loaded, runtime: str, audio: list | None = None,
              memo: dict | None = None) -> VerifyReport:
    """Run the folder through Transformers.js and compare with onnxruntime-python and with PyTorch.
    memo: shared between runtimes of one verify so the PyTorch references are computed once."""
    from .runtimes import OnnxRuntimePython

    spec = get_arch(loaded.arch)
    get_runtime(runtime).check()  # before the slow references
    memo = {} if memo is None else memo
    if "rows" not in memo:
        memo["rows"] = row_cases(build_cases(spec, loaded, audio))
        memo["refs"] = [spec.reference(loaded, c) for c in memo["rows"]]
    rows, refs = memo["rows"], memo["refs"]
    if runtime == "webgpu":
        rows, refs = rows[:WEBGPU_ROWS], refs[:WEBGPU_ROWS]
    if spec.multi_output(loaded):
        return _verify_js_outputs(spec, loaded, folder, files, runtime, rows, refs)
    task = spec.task(loaded)
    labels = spec.hf_config(loaded).get("id2label") if task == "audio-classification" else None
    by_dtype = {d: n for d, n in DTYPE_FILES.items() if n in files}
    rt = get_runtime(runtime)
    asr = task == "automatic-speech-recognition"
    results = rt.run_files(folder, list(by_dtype), task, labels, [(c.name, [c.input_values[0]]) for c in rows], frames=asr)
    info = {k: v for k, v in rt.info.items() if k in ("threads", "crossOriginIsolated", "hardwareConcurrency", "webgpu", "error")}
    if rt.info.get("console"):
        info["console"] = rt.info["console"][:3]  # the browser's own errors, e.g. WebGPU validation
    py = OnnxRuntimePython()
    reports = []
    for dtype, name in by_dtype.items():
        kind, numeric = file_kind(files[name])
        tol = spec.tolerance(loaded, kind)
        entry = results.get(dtype) or {"error": info.get("error") or "not run"}
        js_tol = runtime_tolerance(rt.name, numeric)
        base = dict(file=name, kind=kind, runtime=rt.name, cases=len(rows), tolerance={**_tol(tol), "vs_onnxruntime_python": js_tol})
        if entry.get("error"):
            reports.append(FileReport(**base, status=Status.FAILED, max_abs_logit=float("nan"), mean_abs_logit=float("nan"),
                                      max_abs_prob=float("nan"), mean_abs_prob=float("nan"), over_1e2=0, over_1e1=0,
                                      argmax_agree=0, argmax_total=len(rows), reasons=[f"{rt.name}: {entry['error']}"],
                                      extra=info))
            continue
        got = [r for c in entry["cases"] for r in c["rows"]]
        ort_out = py.run_cases(files[name], rows)
        extra = {"load_ms": round(entry["load_ms"], 1), "median_ms": round(entry["median_ms"], 2), **info}
        reasons = []
        if asr:
            texts = [g["text"] for g in got]
            want_py = [spec.transcribe(loaded, r[0]) for r in refs]
            want_ort = [spec.transcribe(loaded, o[0]) for o in ort_out]
            same_py = sum(a == b for a, b in zip(texts, want_py))
            same_ort = sum(a == b for a, b in zip(texts, want_ort))
            extra.update(transcripts_equal_pytorch=f"{same_py}/{len(rows)}", transcripts_equal_ort=f"{same_ort}/{len(rows)}")
            # the frames behind the text, against onnxruntime-python's on the same file
            frames = frame_agreement([c.name for c in rows], [np.asarray(g["logits"]["data"]).reshape(g["logits"]["dims"])
                                                              for g in got], ort_out, js_tol)
            extra.update(max_dp_vs_onnxruntime_python=frames["max_dp"],
                         decisive_frames_equal_ort=f"{frames['decisive_agree']}/{frames['decisive_total']}",
                         near_tie_frames_flipped=frames.get("near_tie_flips", 0))
            if numeric == "dynamic":
                # integer kernels may round an activation the other way: on frames whose top two tokens are within
                # twice the runtime's bar that can change the token, so the frames are judged, not the text
                from ..ctc import cer

                extra["cer_vs_onnxruntime_python"] = round(float(cer(want_ort, texts)), 4)
                if not frames["max_dp"] <= js_tol:
                    reasons.append(f"max |dp| vs onnxruntime-python {frames['max_dp']:.2e} > {js_tol:.0e} on the frames")
                if frames["decisive_agree"] != frames["decisive_total"]:
                    reasons.append(f"decisive frames differ from onnxruntime-python: {frames['decisive_total'] - frames['decisive_agree']} "
                                   f"of {frames['decisive_total']}")
            elif same_ort != len(rows):
                reasons.append(f"transcripts differ from onnxruntime-python in {len(rows) - same_ort} of {len(rows)} clips")
            if kind == "fp32" and same_py != len(rows):
                reasons.append(f"transcripts differ from PyTorch in {len(rows) - same_py} of {len(rows)} clips")
            nan = float("nan")
            reports.append(FileReport(**base, status=Status.FAILED if reasons else Status.PASSED, max_abs_logit=nan,
                                      mean_abs_logit=nan, max_abs_prob=nan, mean_abs_prob=nan, over_1e2=0, over_1e1=0,
                                      argmax_agree=same_py, argmax_total=len(rows), reasons=reasons, extra=extra))
            continue
        p_js = np.array([np.asarray(r, dtype=np.float64) for r in got])
        p_py = np.concatenate([softmax(r.astype(np.float64)) for r in refs])
        p_ort = np.concatenate([softmax(o.astype(np.float64)) for o in ort_out])
        d_py, d_ort = np.abs(p_js - p_py), np.abs(p_js - p_ort)
        extra["max_dp_vs_onnxruntime_python"] = float(np.nanmax(d_ort)) if np.isfinite(d_ort).all() else float("inf")
        if not np.isfinite(d_ort).all() or d_ort.max() > js_tol:
            reasons.append(f"max |dp| vs onnxruntime-python {extra['max_dp_vs_onnxruntime_python']:.2e} > {js_tol:.0e}")
        dec = decisions([c.name for c in rows], p_py, np.nan_to_num(p_js), tol)
        max_dp = float(np.max(d_py)) if np.isfinite(d_py).all() else float("inf")
        # fp32 has a logit bound only: its probabilities are held to the same number
        reasons += [r.replace("|dp|", "|dp| vs PyTorch") for r in gate(None, max_dp, dec, tol)]
        if tol.max_abs_prob is None and not max_dp <= tol.max_abs_logit:
            reasons.append(f"max |dp| vs PyTorch {max_dp:.2e} > {tol.max_abs_logit}")
        reports.append(FileReport(**base, status=Status.FAILED if reasons else Status.PASSED, max_abs_logit=float("nan"),
                                  mean_abs_logit=float("nan"), max_abs_prob=max_dp, mean_abs_prob=float(np.nanmean(d_py)),
                                  over_1e2=int((d_py > 1e-2).sum()), over_1e1=int((d_py > 1e-1).sum()), reasons=reasons,
                                  extra=extra, **dec))
    ok = all(r.status == Status.PASSED for r in reports)
    return VerifyReport(status=Status.PASSED if ok else Status.FAILED, files=reports, cases=[c.name for c in rows],
                        reference=f"PyTorch {loaded.arch} ({_describe(loaded.source)}) and onnxruntime-python")


def frame_agreement(names: list, got: list, want: list, bar: float) -> dict:
    """CTC frames from a runtime (logits per case) against onnxruntime-python's on the same file: max |dp| over
    every frame, and decisions() over the frames with onnxruntime-python as the reference and `bar` as the |dp|
    bar (decisive: top-two margin over twice it)."""
    from ..tolerances import Tolerance

    pg, pw, frame_names = [], [], []
    for name, g, w in zip(names, got, want):
        g2, w2 = g.reshape(-1, g.shape[-1]).astype(np.float64), w.reshape(-1, w.shape[-1]).astype(np.float64)
        if g2.shape != w2.shape:
            return {"max_dp": float("inf"), "decisive_agree": 0, "decisive_total": 1}
        pg.append(softmax(g2))
        pw.append(softmax(w2))
        frame_names += [f"{name} frame {i}" for i in range(len(w2))]
    if not pw:
        return {"max_dp": 0.0, "decisive_agree": 0, "decisive_total": 0}
    pg, pw = np.concatenate(pg), np.concatenate(pw)
    d = np.abs(pg - pw)
    dec = decisions(frame_names, pw, np.nan_to_num(pg), Tolerance(max_abs_prob=bar))
    return {"max_dp": float(d.max()) if np.isfinite(d).all() else float("inf"), **dec}


def runtime_difference(got: np.ndarray, want: np.ndarray, kind: str) -> float:
    """One output from Transformers.js against onnxruntime-python on the same file: max |d| for logits; for embeddings
    max |d| relative to the largest |value| (unnormalised hidden states reach tens, so their rounding is larger in
    absolute terms while probabilities stay in [0, 1])."""
    d = float(np.abs(got - want).max()) if got.size else 0.0
    if kind == "logits":
        return d
    return d / max(float(np.abs(want).max()), 1e-12) if want.size else 0.0


def _verify_js_outputs(spec, loaded, folder, files, runtime, rows, refs) -> VerifyReport:
    """A graph with several named outputs (embeddings[, logits]) as Transformers.js users run it: AutoFeatureExtractor +
    AutoModel in Node or Chromium (WASM, WebGPU), every output compared with onnxruntime-python on the same file and
    with PyTorch."""
    from .jsrun import run_outputs
    from .runtimes import OnnxRuntimePython

    names, kinds = spec.output_names(loaded), spec.output_kinds(loaded)
    by_dtype = {d: n for d, n in DTYPE_FILES.items() if n in files}
    rt = get_runtime(runtime)
    results = run_outputs(folder, list(by_dtype), [c.input_values[0] for c in rows], where=rt.where, device=rt.device,
                          threads=rt.threads)
    info = {k: v for k, v in results.pop("info", {}).items() if k in ("threads", "crossOriginIsolated", "webgpu")}
    py = OnnxRuntimePython()
    reports = []
    for dtype, name in by_dtype.items():
        kind, numeric = file_kind(files[name])
        tol = spec.tolerance(loaded, kind)
        # embeddings: relative differences, with their own bar where the table has one
        js_tol = runtime_tolerance(rt.name, numeric, relative=any(k != "logits" for k in kinds.values()))
        entry = results.get(dtype) or {"error": "not run"}
        if entry.get("error") or len(entry.get("rows") or []) != len(rows):
            nan = float("nan")
            reports.append(FileReport(name, kind, rt.name, Status.FAILED, len(rows), nan, nan, nan, nan, 0, 0, 0, len(rows),
                                      {**_tol(tol), "vs_onnxruntime_python": js_tol},
                                      reasons=[f"{rt.name}: {entry.get('error') or 'missing rows'}"], extra=info))
            continue
        got = [{n: r[n] for n in names} for r in entry["rows"]]
        rep = compare_outputs(name, kind, rt.name, rows, refs, got, tol, kinds)
        ort_out = py.run_cases(files[name], rows, outputs=names)
        d_ort = max(runtime_difference(g[n], o[n], kinds[n]) for g, o in zip(got, ort_out) for n in names)
        reasons = [f"max |d| vs onnxruntime-python {d_ort:.2e} > {js_tol:.0e}"] if not d_ort <= js_tol else []
        reports.append(dataclasses.replace(
            rep, tolerance={**rep.tolerance, "vs_onnxruntime_python": js_tol},
            extra={**rep.extra, "max_d_vs_onnxruntime_python": d_ort, "load_ms": round(entry["load_ms"], 1),
                   "median_ms": round(entry["median_ms"], 2), **info},
            reasons=rep.reasons + reasons, status=Status.FAILED if rep.reasons or reasons else Status.PASSED))
    ok = all(r.status == Status.PASSED for r in reports)
    return VerifyReport(status=Status.PASSED if ok else Status.FAILED, files=reports, cases=[c.name for c in rows],
                        reference=f"PyTorch {loaded.arch} ({_describe(loaded.source)}) and onnxruntime-python")


def verify_folder(folder: str, audio: list | None = None, runtime: str = "python", loaded: Loaded | None = None,
                  progress=None) -> VerifyReport:
    """Rebuild the reference from the folder's source record and check every file in onnx/ in each runtime
    (comma-separated: python, node, browser, webgpu). progress: told what runs, with counts and time left."""
    if not os.path.isdir(folder):
        raise VoxportError(f"folder not found: {folder}")
    runtimes = [r.strip() for r in runtime.split(",") if r.strip()]
    for r in runtimes:
        get_runtime(r).check()  # unknown names and missing node / chromium fail before any work
    if loaded is None:
        source = read_source(folder)["source"]
        from ..archs.source import load_source

        loaded = load_source(source, what=folder)
    files = folder_files(folder)
    reports, memo = [], {}
    for r in runtimes:
        if r == "python":
            reports.append(verify(files, loaded, audio=audio, runtime=r, progress=progress))
        else:
            if progress:
                progress(f"verifying in Transformers.js ({r})")
            reports.append(verify_deployed(folder, files, loaded, r, audio=audio, memo=memo, progress=progress))
    return merge_reports(reports)


def verify_deployed(folder: str, files: dict, loaded: Loaded, runtime: str, audio: list | None = None, memo: dict | None = None,
                    progress=None) -> VerifyReport:
    """verify_js, then the architecture's deployed pipelines (voxport-web) on a minute of speech in the same runtime:
    their figures go into each file's `extra["pipelines"]`, a mismatch fails the file (see verify/pipelines.py)."""
    from .pipelines import check_pipelines

    report = verify_js(folder, files, loaded, runtime, audio=audio, memo=memo)
    found = check_pipelines(folder, files, loaded, runtime, progress=progress)
    if not found:
        return report
    rows = [with_findings(f, {"pipelines": found[f.file][0]}, found[f.file][1]) if f.file in found else f for f in report.files]
    ok = all(f.status == Status.PASSED for f in rows)
    return dataclasses.replace(report, files=rows, status=Status.PASSED if ok else Status.FAILED)


def merge_reports(reports: list) -> VerifyReport:
    if len(reports) == 1:
        return reports[0]
    ok = all(rep.passed for rep in reports)
    return VerifyReport(status=Status.PASSED if ok else Status.FAILED, files=[f for rep in reports for f in rep.files],
                        cases=reports[0].cases, reference=reports[0].reference)
