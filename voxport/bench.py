"""Bench: size and latency of PyTorch eager and of each ONNX file, in one run."""
from __future__ import annotations

import os
import platform
import time

import numpy as np

from .archs import get_arch
from .onnxutil import file_size
from .results import BenchResult, BenchRow
from .verify.check import folder_files, read_source
from .verify.suite import speech_like


def _time(fn, runs: int, warmup: int = 2) -> list:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench(folder: str, seconds=(0.75, 3.0), threads: int = 2, runs: int = 20, loaded=None, torch_model: bool = True,
          runtimes=("python",)) -> BenchResult:
    """runtimes: python (PyTorch eager + onnxruntime) and any of node, browser, webgpu (Transformers.js)."""
    import onnxruntime as ort
    import torch

    files = folder_files(folder)
    if loaded is None:
        from .archs.source import load_source

        loaded = load_source(read_source(folder)["source"], what=folder)
    spec = get_arch(loaded.arch)
    torch.set_num_threads(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sessions = {name: ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]) for name, p in files.items()}
    rows = []
    for s in seconds:
        x = speech_like(int(s * spec.sample_rate), 150, seed=0)[None]
        for rt in runtimes:
            if rt != "python":
                rows += _bench_js(folder, files, spec, loaded, rt, x[0], s, runs if rt != "webgpu" else min(runs, 3), threads)
        if "python" not in runtimes:
            continue
        feeds = {"input_values": x}
        mask = np.ones_like(x, dtype=np.int64)
        if torch_model:
            xt, mt = torch.from_numpy(x), torch.from_numpy(mask)
            uses_mask = "attention_mask" in spec.input_names(loaded)

            def run_torch():
                with torch.inference_mode():
                    loaded.model(xt, mt) if uses_mask else loaded.model(xt)

            t = _time(run_torch, runs)
            rows.append(BenchRow("pytorch eager", "pytorch", 0, s, float(np.median(t)), float(np.percentile(t, 95)), runs))
        for name, sess in sessions.items():
            feed = dict(feeds)
            if "attention_mask" in {i.name for i in sess.get_inputs()}:
                feed["attention_mask"] = mask
            t = _time(lambda: sess.run(None, feed), runs)
            rows.append(BenchRow(name, "onnxruntime", file_size(files[name]), s, float(np.median(t)), float(np.percentile(t, 95)), runs))
    return BenchResult(folder=os.path.abspath(folder), threads=threads, rows=rows, cpu=_cpu())


def _bench_js(folder, files, spec, loaded, runtime, audio, seconds, runs, threads) -> list:
    """Median latency of each file in Transformers.js: the same window `runs` times after one warm-up."""
    from .package import DTYPE_FILES
    from .verify.runtimes import get_runtime

    rt = get_runtime(runtime)
    rt.threads = threads
    task = spec.task(loaded)
    labels = spec.hf_config(loaded).get("id2label") if task == "audio-classification" else None
    dtypes = {d: n for d, n in DTYPE_FILES.items() if n in files}
    res = rt.run_files(folder, list(dtypes), task, labels, [("warm-up", [audio]), ("timed", [audio] * runs)])
    rows = []
    for d, name in dtypes.items():
        e = res.get(d) or {}
        if e.get("error") or e.get("median_ms") is None:
            continue
        t = [float(x) for x in e.get("times", [])][1:] or [e["median_ms"]]
        label = f"tjs {runtime}" + (f" ({rt.info.get('threads')} threads)" if rt.info.get("threads") else "")
        rows.append(BenchRow(name, label, file_size(files[name]), seconds, float(np.median(t)), float(np.percentile(t, 95)), len(t)))
    return rows
