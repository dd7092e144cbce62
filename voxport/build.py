"""Build: export -> simplify -> quantize -> verify -> Transformers.js folder, all or nothing."""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import sys
import tempfile
import time

from .errors import VoxportError
from .export import export_model
from .onnxutil import embed_external, file_size, give_back_memory
from .files import DTYPE_FILES, make_parents, publish, remove_empty
from .package import write_folder
from .quantize import Skipped
from .quantize.fit import calibration_cases, make_kind
from .results import BuildResult
from .tolerances import SIZE_BUDGET
from .validate import check_audio_files, check_build_inputs
from .verify.check import build_cases, counted, verify


class BuildFailed(VoxportError):
    """Verification failed: nothing was published."""

    exit_code = 1

    def __init__(self, result):
        super().__init__(f"verification failed; {result.folder} was not written")
        self.result = result


def _max_rss_mb(who) -> float:
    kb = resource.getrusage(who).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return kb / 2**20 if sys.platform == "darwin" else kb / 1024


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return _max_rss_mb(resource.RUSAGE_SELF)


def peak_rss_children_mb() -> float:
    """Peak resident memory of the largest finished child process (Node, Chromium), MB."""
    return _max_rss_mb(resource.RUSAGE_CHILDREN)


def references(spec, loaded, cases: list, say) -> list:
    """PyTorch's outputs for every case, with counts when it takes a while."""
    return [spec.reference(loaded, c) for c in counted(cases, say, "references")]


def release_model(spec, loaded, cases: list, refs: list) -> None:
    """The PyTorch model's weights freed once it is exported (the module stays, on the meta device, for what reads
    its configuration): nothing after runs it. What verify asks of the model besides the references (wav2vec2's
    padding drift) is computed first, and cached by the architecture."""
    spec.extra_checks(loaded, "fp32", cases, refs, refs)
    loaded.model.to("meta")
    import gc

    gc.collect()
    give_back_memory()


def record_build(folder: str, wall_s: float) -> dict:
    """Add what the build cost (wall time, peak RSS, the CPU) to the folder's voxport.json."""
    from .bench import cpu_info
    from .files import SOURCE_FILE, write_json

    cpu = cpu_info()
    rec = {"wall_s": round(wall_s, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
           "peak_rss_children_mb": round(peak_rss_children_mb(), 1),
           "cpu": cpu["model"], "cpu_cores": cpu["cores"]}
    path = os.path.join(folder, SOURCE_FILE)
    with open(path) as f:
        data = json.load(f)
    data["build"] = rec
    write_json(path, data)
    return rec


def build(arch: str, output_dir: str, checkpoint=None, random_init=False, seed=0, opset=18,
          quantize_modes=("q8",), q8_method=None, q8_target=None, audio=None, force=False, progress=None, load_options=None,
          runtimes=("python",), search=True, size_budget=SIZE_BUDGET) -> BuildResult:
    """load_options: extra keyword arguments for the architecture's load() (e.g. C=64 for a small ECAPA).
    search: when a quantized file misses its tolerance, keep its most sensitive nodes float (within size_budget
    times the fully quantized size); without it each file is made fully quantized and measured (a recipe's
    fallback is made where the first method misses); q8_target: a stricter max |dp| for q8 than its tolerance."""
    t0 = time.time()

    def say(msg):  # each stage with the time since the start and the peak memory so far
        if progress:
            progress(f"{msg} ({time.time() - t0:.0f} s, peak RSS {peak_rss_mb() / 1024:.2f} GB)")
    spec = check_build_inputs(arch, output_dir, force, checkpoint, random_init, quantize_modes, runtimes, audio or (),
                              opset, q8_method, q8_target)  # before any work
    say("loading checkpoint")
    loaded = spec.load(checkpoint=checkpoint, random_init=random_init, seed=seed, **(load_options or {}))
    check_audio_files(audio, spec.sample_rate, spec.min_samples(loaded))
    parent = os.path.dirname(os.path.abspath(output_dir))
    created = make_parents(output_dir)  # removed again when nothing is published
    tmp = tempfile.mkdtemp(prefix=".voxport-build-", dir=parent)
    try:
        onnx_dir = os.path.join(tmp, "onnx")
        os.makedirs(onnx_dir)
        fp32 = os.path.join(onnx_dir, DTYPE_FILES["fp32"])
        # the PyTorch references first: once the model is exported its weights can go (python-only verify)
        say("computing PyTorch references")
        cases = build_cases(spec, loaded, audio)
        refs = references(spec, loaded, cases, say)
        calibration = calibration_cases(spec, loaded)
        release = None
        if tuple(runtimes) == ("python",):  # the Transformers.js checks compute their own references later
            release = lambda: release_model(spec, loaded, cases, refs)  # noqa: E731
        # the files keep their weights in side files while the build works on them (every stage reads the graph
        # without its weights); they get them back inside, under 2 GB, before the folder is written
        ex = export_model(arch, fp32, loaded=loaded, opset=opset, progress=say, keep_external=True, release=release)
        give_back_memory()
        qs, skipped, fits, measured = [], {}, {}, {}
        config_path = os.path.join(tmp, "quantize_config.json")
        for mode in quantize_modes:
            say(f"quantizing ({mode})")
            out = os.path.join(onnx_dir, DTYPE_FILES[mode])
            try:
                q, fr = make_kind(spec, loaded, fp32, out, mode, cases, refs, calibration,
                                  method=q8_method if mode == "q8" else None, target=q8_target if mode == "q8" else None,
                                  size_budget=size_budget, progress=say, config_path=config_path, measured=measured, search=search)
            except Skipped as e:
                skipped[mode] = str(e)
                say(str(e))
                continue
            qs.append(q)
            if fr is not None:
                fits[mode] = fr
                say(fr.summary())
        give_back_memory()
        say("verifying against PyTorch")
        files = {name: os.path.join(onnx_dir, name) for name in DTYPE_FILES.values() if os.path.isfile(os.path.join(onnx_dir, name))}
        report = verify(files, loaded, cases=cases, refs=refs, progress=say, known=measured)
        for p in files.values():
            embed_external(p)
        sizes = {name: file_size(p) for name, p in files.items()}
        say("writing folder")
        write_folder(tmp, spec, loaded, report, sizes, ex, qs, skipped, name=os.path.basename(os.path.abspath(output_dir)))
        js = [r for r in runtimes if r != "python"]
        if js:
            from .verify.check import merge_reports, verify_deployed

            for r in js:
                say(f"verifying in Transformers.js ({r})")
                report = merge_reports([report, verify_deployed(tmp, files, loaded, r, audio=audio, progress=say)])
            write_folder(tmp, spec, loaded, report, sizes, ex, qs, skipped, name=os.path.basename(os.path.abspath(output_dir)))
        final = lambda p: os.path.join(output_dir, os.path.relpath(p, tmp))  # noqa: E731
        ex = dataclasses.replace(ex, path=final(ex.path))
        qs = [dataclasses.replace(q, path=final(q.path)) for q in qs]
        cost = record_build(tmp, time.time() - t0)
        result = BuildResult(folder=output_dir, export=ex, quantized=qs, verify=report,
                             files={f"onnx/{k}": v for k, v in sizes.items()}, seconds=cost["wall_s"],
                             peak_rss_mb=cost["peak_rss_mb"], peak_rss_children_mb=cost["peak_rss_children_mb"],
                             skipped=skipped, search={m: f.to_dict() for m, f in fits.items()})
        if not report.passed:
            raise BuildFailed(result)
        os.chmod(tmp, 0o755)
        publish(tmp, output_dir, force)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created, output_dir)
