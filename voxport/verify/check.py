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


def verify_folder(folder: str, audio: list | None = None, runtime: str = "python", loaded: Loaded | None = None) -> VerifyReport:
    """Rebuild the reference from the folder's source record and check every file in onnx/."""
    if not os.path.isdir(folder):
        raise VoxportError(f"folder not found: {folder}")
    if loaded is None:
        source = read_source(folder)["source"]
        loaded = get_arch(source["arch"]).load(**source)
    return verify(folder_files(folder), loaded, audio=audio, runtime=runtime)
