"""Build: export -> simplify -> quantize -> verify -> Transformers.js folder, all or nothing."""
from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import tempfile
import time

from .archs import get_arch
from .errors import VoxportError
from .export import export_model
from .onnxutil import file_size
from .package import DTYPE_FILES, check_output_dir, make_parents, publish, remove_empty, write_folder
from .quantize import MODES, Skipped, quantize
from .results import BuildResult
from .validate import check_audio_files, check_build_inputs
from .verify.check import verify


class BuildFailed(VoxportError):
    """Verification failed: nothing was published."""

    exit_code = 1

    def __init__(self, result):
        super().__init__(f"verification failed; {result.folder} was not written")
        self.result = result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(arch: str, output_dir: str, checkpoint=None, random_init=False, seed=0, opset=18,
          quantize_modes=("q8",), q8_method=None, q8_target=None, audio=None, force=False, progress=None, load_options=None,
          runtimes=("python",)) -> BuildResult:
    """load_options: extra keyword arguments for the architecture's load() (e.g. C=64 for a small ECAPA)."""
    say = progress or (lambda msg: None)
    t0 = time.time()
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
        ex = export_model(arch, fp32, loaded=loaded, opset=opset, progress=say)
        qs, skipped = [], {}
        for mode in quantize_modes:
            say(f"quantizing ({mode})")
            extra = []
            if mode == "q8" and q8_target is not None:
                from .quantize.sensitivity import explain

                say(f"ranking nodes for a q8 max |dp| <= {q8_target}")
                extra = explain(fp32, mode="q8", method=q8_method, target=q8_target).kept_float
            try:
                qs.append(quantize(fp32, os.path.join(onnx_dir, DTYPE_FILES[mode]), mode=mode, method=q8_method,
                                   per_channel=spec.q8_per_channel, config_path=os.path.join(tmp, "quantize_config.json"),
                                   extra_float=extra))
            except Skipped as e:
                skipped[mode] = str(e)
                say(str(e))
        say("verifying against PyTorch")
        files = {name: os.path.join(onnx_dir, name) for name in DTYPE_FILES.values() if os.path.isfile(os.path.join(onnx_dir, name))}
        report = verify(files, loaded, audio=audio)
        sizes = {name: file_size(p) for name, p in files.items()}
        say("writing folder")
        write_folder(tmp, spec, loaded, report, sizes, ex, qs, skipped, name=os.path.basename(os.path.abspath(output_dir)))
        js = [r for r in runtimes if r != "python"]
        if js:
            from .verify.check import merge_reports, verify_js

            for r in js:
                say(f"verifying in Transformers.js ({r})")
                report = merge_reports([report, verify_js(tmp, files, loaded, r, audio=audio)])
            write_folder(tmp, spec, loaded, report, sizes, ex, qs, skipped, name=os.path.basename(os.path.abspath(output_dir)))
        final = lambda p: os.path.join(output_dir, os.path.relpath(p, tmp))  # noqa: E731
        ex = dataclasses.replace(ex, path=final(ex.path))
        qs = [dataclasses.replace(q, path=final(q.path)) for q in qs]
        result = BuildResult(folder=output_dir, export=ex, quantized=qs, verify=report,
                             files={f"onnx/{k}": v for k, v in sizes.items()}, seconds=time.time() - t0, peak_rss_mb=peak_rss_mb(), skipped=skipped)
        if not report.passed:
            raise BuildFailed(result)
        os.chmod(tmp, 0o755)
        publish(tmp, output_dir, force)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created, output_dir)
