"""Verify stage: every ONNX file against the PyTorch model, on the suite and on user audio."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from ..archs import Loaded, get_arch
from ..errors import PackageError, VoxportError
from ..package import DTYPE_FILES, SOURCE_FILE, kind_of
from ..results import FileReport, Status, VerifyReport
from ..archs.base import Case
from .audio import load_audio
from .runtimes import get_runtime
from .suite import audio_cases


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def build_cases(spec, loaded: Loaded, audio: list | None = None) -> list:
    cases = list(spec.cases(loaded))
    for path in audio or []:
        clip = load_audio(path, spec.sample_rate, spec.min_samples(loaded))
        cases += audio_cases(os.path.basename(path), clip)
    return cases


def verify(files: dict, loaded: Loaded, audio: list | None = None, runtime: str = "python", cases: list | None = None) -> VerifyReport:
    """files: label -> path. The kind (fp32, q8 ...) comes from the file name; tolerances from the spec."""
    spec = get_arch(loaded.arch)
    cases = cases if cases is not None else build_cases(spec, loaded, audio)
    refs = [spec.reference(loaded, c) for c in cases]
    rt = get_runtime(runtime)
    reports = []
    for label, path in files.items():
        kind = kind_of(os.path.basename(path))
        tol = spec.tolerance(loaded, kind)
        outs = rt.run_cases(path, cases)
        rep = compare(label, kind, rt.name, cases, refs, outs, tol)
        extra, reasons = spec.extra_checks(loaded, kind, cases, refs, outs)
        if extra or reasons:
            rep = dataclasses.replace(rep, extra={**rep.extra, **extra}, reasons=rep.reasons + reasons,
                                      status=Status.FAILED if (reasons or rep.reasons) else rep.status)
        reports.append(rep)
    ok = all(r.status == Status.PASSED for r in reports)
    return VerifyReport(status=Status.PASSED if ok else Status.FAILED, files=reports,
                        cases=[c.name for c in cases], reference=f"PyTorch {loaded.arch} ({_describe(loaded.source)})")


def compare(label, kind, runtime, cases, refs, outs, tol) -> FileReport:
    dl, dp, agree, total = [], [], 0, 0
    worst, worst_val = "", -1.0
    for c, ref, out in zip(cases, refs, outs):
        if out.shape != ref.shape:
            return FileReport(label, kind, runtime, Status.FAILED, len(cases), float("inf"), float("inf"), 1.0, 1.0, 0, 0,
                              0, 0, _tol(tol), [f"{c.name}: output shape {out.shape} != reference {ref.shape}"])
        # NaN in the reference marks rows not compared (frames a padded clip does not have alone)
        r2, o2 = ref.reshape(-1, ref.shape[-1]).astype(np.float64), out.reshape(-1, ref.shape[-1]).astype(np.float64)
        rows = np.isfinite(r2).all(-1)
        r2, o2 = r2[rows], o2[rows]
        d = np.abs(o2 - r2)
        p = np.abs(softmax(o2) - softmax(r2))
        dl.append(d.ravel())
        dp.append(p.ravel())
        a = o2.argmax(-1) == r2.argmax(-1)
        agree += int(a.sum())
        total += a.size
        if d.max() > worst_val:
            worst, worst_val = c.name, float(d.max())
    dl, dp = np.concatenate(dl), np.concatenate(dp)
    rep = dict(max_abs_logit=float(dl.max()), mean_abs_logit=float(dl.mean()), max_abs_prob=float(dp.max()),
               mean_abs_prob=float(dp.mean()), over_1e2=int((dp > 1e-2).sum()), over_1e1=int((dp > 1e-1).sum()))
    reasons = []
    if not np.isfinite(dl).all():
        reasons.append("non-finite outputs")
    if tol.max_abs_logit is not None and rep["max_abs_logit"] > tol.max_abs_logit:
        reasons.append(f"max |dlogit| {rep['max_abs_logit']:.2e} > {tol.max_abs_logit:.0e} (worst: {worst})")
    if tol.max_abs_prob is not None and rep["max_abs_prob"] > tol.max_abs_prob:
        reasons.append(f"max |dp| {rep['max_abs_prob']:.3f} > {tol.max_abs_prob}")
    if total and agree / total < tol.min_agreement:
        reasons.append(f"argmax agreement {agree / total:.1%} < {tol.min_agreement:.0%}")
    return FileReport(label, kind, runtime, Status.FAILED if reasons else Status.PASSED, len(cases), **rep,
                      argmax_agree=agree, argmax_total=total, tolerance=_tol(tol), reasons=reasons, worst_case=worst)


def _tol(tol) -> dict:
    return {"max_abs_logit": tol.max_abs_logit, "max_abs_prob": tol.max_abs_prob, "min_agreement": tol.min_agreement, "why": tol.why}


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


# Transformers.js vs onnxruntime-python on the same file, max |dp|:
JS_TOLERANCE = {
    "float": 1e-5,  # fp32 and weight-only int8 (float compute): same math, different SIMD order; 1e-6 seen
    "fp16": 1e-3,  # float16 kernels differ between WASM and native MLAS in rounding; 3e-5 seen
    "dynamic": 2e-2,  # WASM's ConvInteger/MatMulInteger round activations differently from native; 2.3e-3 seen
}


WEBGPU_ROWS = 3  # software WebGPU (SwiftShader) takes 10-30 s per run of a full-size model


def js_tolerance(path: str, kind: str) -> float:
    import onnx

    from ..onnxutil import read_metadata

    meta = read_metadata(onnx.load(path, load_external_data=False))
    method = json.loads(meta.get("voxport.quantization", "{}")).get("method")
    if kind in ("fp16", "q4f16"):
        return JS_TOLERANCE["fp16"]
    return JS_TOLERANCE["dynamic"] if method == "dynamic" else JS_TOLERANCE["float"]


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
    task = spec.task(loaded)
    labels = spec.hf_config(loaded).get("id2label") if task == "audio-classification" else None
    by_dtype = {d: n for d, n in DTYPE_FILES.items() if n in files}
    rt = get_runtime(runtime)
    results = rt.run_files(folder, list(by_dtype), task, labels, [(c.name, [c.input_values[0]]) for c in rows])
    info = {k: v for k, v in rt.info.items() if k in ("threads", "crossOriginIsolated", "hardwareConcurrency", "webgpu", "error")}
    if rt.info.get("console"):
        info["console"] = rt.info["console"][:3]  # the browser's own errors, e.g. WebGPU validation
    py = OnnxRuntimePython()
    reports = []
    for dtype, name in by_dtype.items():
        kind = kind_of(name)
        tol = spec.tolerance(loaded, kind)
        entry = results.get(dtype) or {"error": info.get("error") or "not run"}
        js_tol = js_tolerance(files[name], kind)
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
        if task == "automatic-speech-recognition":
            want_py = [spec.transcribe(loaded, r[0]) for r in refs]
            want_ort = [spec.transcribe(loaded, o[0]) for o in ort_out]
            same_py = sum(a == b for a, b in zip(got, want_py))
            same_ort = sum(a == b for a, b in zip(got, want_ort))
            extra.update(transcripts_equal_pytorch=f"{same_py}/{len(rows)}", transcripts_equal_ort=f"{same_ort}/{len(rows)}")
            if same_ort != len(rows):
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
        agree = int((p_js.argmax(-1) == p_py.argmax(-1)).sum())
        if not np.isfinite(d_ort).all() or d_ort.max() > js_tol:
            reasons.append(f"max |dp| vs onnxruntime-python {extra['max_dp_vs_onnxruntime_python']:.2e} > {js_tol:.0e}")
        bound = tol.max_abs_prob if tol.max_abs_prob is not None else tol.max_abs_logit
        if not np.isfinite(d_py).all() or d_py.max() > bound:
            reasons.append(f"max |dp| vs PyTorch {np.nanmax(d_py):.2e} > {bound}")
        if agree / len(rows) < tol.min_agreement:
            reasons.append(f"argmax agreement {agree / len(rows):.1%} < {tol.min_agreement:.0%}")
        reports.append(FileReport(**base, status=Status.FAILED if reasons else Status.PASSED, max_abs_logit=float("nan"),
                                  mean_abs_logit=float("nan"), max_abs_prob=float(np.nanmax(d_py)), mean_abs_prob=float(np.nanmean(d_py)),
                                  over_1e2=int((d_py > 1e-2).sum()), over_1e1=int((d_py > 1e-1).sum()), argmax_agree=agree,
                                  argmax_total=len(rows), reasons=reasons, extra=extra))
    ok = all(r.status == Status.PASSED for r in reports)
    return VerifyReport(status=Status.PASSED if ok else Status.FAILED, files=reports, cases=[c.name for c in rows],
                        reference=f"PyTorch {loaded.arch} ({_describe(loaded.source)}) and onnxruntime-python")


def verify_folder(folder: str, audio: list | None = None, runtime: str = "python", loaded: Loaded | None = None) -> VerifyReport:
    """Rebuild the reference from the folder's source record and check every file in onnx/ in each runtime
    (comma-separated: python, node, browser, webgpu)."""
    if not os.path.isdir(folder):
        raise VoxportError(f"folder not found: {folder}")
    runtimes = [r.strip() for r in runtime.split(",") if r.strip()]
    for r in runtimes:
        get_runtime(r).check()  # unknown names and missing node / chromium fail before any work
    if loaded is None:
        source = read_source(folder)["source"]
        loaded = get_arch(source["arch"]).load(**source)
    files = folder_files(folder)
    reports, memo = [], {}
    for r in runtimes:
        if r == "python":
            reports.append(verify(files, loaded, audio=audio, runtime=r))
        else:
            reports.append(verify_js(folder, files, loaded, r, audio=audio, memo=memo))
    return merge_reports(reports)


def merge_reports(reports: list) -> VerifyReport:
    if len(reports) == 1:
        return reports[0]
    ok = all(rep.passed for rep in reports)
    return VerifyReport(status=Status.PASSED if ok else Status.FAILED, files=[f for rep in reports for f in rep.files],
                        cases=reports[0].cases, reference=reports[0].reference)
