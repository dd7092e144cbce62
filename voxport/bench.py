"""Bench: size and latency of PyTorch eager, each ONNX file and the files of other exports, in one process.

For each window length every candidate runs in turn (A, B, C, A, B, C, ...) after warm-up rounds, so that
whatever else the machine does slows all of them alike; the figures that matter are the ratios of medians
measured in the same run (each file / fp32, ONNX / PyTorch, this export / the other one).
"""
from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

from .errors import VoxportError
from .onnxutil import file_size
from .results import BenchResult, BenchRow
from .archs.suite import speech_like

FP32_NAME = "model.onnx"

# the instruction-set extensions that decide how fast float and 8-bit kernels can be
ISA_FLAGS = {
    "x86": ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"),
    "arm": ("asimd", "asimddp", "i8mm", "sve", "sve2", "bf16"),
}
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # int8 dot-product instructions


def cpu_info() -> dict:
    """CPU model, machine, cores and which of the relevant ISA flags it has (from /proc/cpuinfo on Linux)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    if sys.platform == "darwin" and not model:
        import subprocess

        try:
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
            dot = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_DotProd"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            if dot == "1":
                flags |= {"asimd", "asimddp"}
        except (OSError, subprocess.SubprocessError):
            pass
    machine = platform.machine()
    family = "arm" if machine.lower() in ("arm64", "aarch64") or machine.lower().startswith("arm") else "x86"
    return {
        "model": model or platform.processor() or machine,
        "machine": machine,
        "cores": os.cpu_count() or 0,
        "flags": {f: f in flags for f in ISA_FLAGS[family]},
        "int8_dot_product": bool(flags & set(INT8_DOT_FLAGS)),
    }


def _cpu() -> str:
    return cpu_info()["model"]


def against_files(path: str) -> dict:
    """The .onnx files of another export: a folder (its onnx/*.onnx, else its *.onnx) or one .onnx file."""
    if os.path.isfile(path):
        if not path.endswith(".onnx"):
            raise VoxportError(f"--against {path}: not an .onnx file; pass a folder with .onnx files or one .onnx file")
        return {os.path.basename(path): path}
    if not os.path.isdir(path):
        raise VoxportError(f"--against {path}: not found; pass a folder with .onnx files or one .onnx file")
    d = os.path.join(path, "onnx") if os.path.isdir(os.path.join(path, "onnx")) else path
    files = {n: os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".onnx") and os.path.isfile(os.path.join(d, n))}
    if not files:
        raise VoxportError(f"--against {path}: no .onnx files in {d}; pass a folder with .onnx files or one .onnx file")
    return files


def against_label(path: str) -> str:
    """A short name for another export, from its path: the folder's name, or a file's folder name."""
    p = os.path.abspath(path)
    base = os.path.basename(p) if os.path.isdir(p) else os.path.basename(os.path.dirname(p))
    return base or p


def fp32_of(names) -> str | None:
    """The file the others of one export are compared with: model.onnx, else the first file."""
    names = list(names)
    return FP32_NAME if FP32_NAME in names else (names[0] if names else None)


def session_feeds(sess, audio: np.ndarray, what: str) -> dict:
    """The inputs a session asks for, from one clip [1, samples]: the audio (any name: the one float input) and
    attention_mask (all ones). Anything else is refused: bench cannot make it up."""
    feeds, has_audio = {}, False
    for i in sess.get_inputs():
        t, shape = i.type, list(i.shape or [])
        if "mask" in i.name.lower() and t in ("tensor(int64)", "tensor(int32)", "tensor(bool)"):
            dtype = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}[t]
            feeds[i.name] = np.ones(audio.shape, dtype=dtype)
        elif t in ("tensor(float)", "tensor(float16)", "tensor(double)") and not has_audio and len(shape) in (1, 2, 3):
            dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}[t]
            x = audio[0] if len(shape) == 1 else audio[:, None, :] if len(shape) == 3 else audio
            feeds[i.name] = np.ascontiguousarray(x, dtype=dtype)
            has_audio = True
        else:
            raise VoxportError(f"{what} needs input '{i.name}' ({t}, shape {shape}), which bench cannot supply: it feeds raw "
                               f"audio (one float input, [batch, samples]) and an attention mask; pass an export that takes raw audio")
    if not has_audio:
        raise VoxportError(f"{what} has no float audio input; pass an export that takes raw audio samples")
    return feeds


def quiet_thread_pools() -> None:
    """PyTorch's OpenMP threads sleep instead of spinning when idle; effective only before torch is imported."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def interleaved(candidates: list, runs: int, warmup: int = 2) -> list:
    """Time the callables round-robin: warm-up rounds, then `runs` rounds of A, B, C, ...; one list of ms each."""
    for _ in range(warmup):
        for fn in candidates:
            fn()
    times = [[] for _ in candidates]
    for _ in range(runs):
        for k, fn in enumerate(candidates):
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1000)
    return times


def _time(fn, runs: int, warmup: int = 2) -> list:
    return interleaved([fn], runs, warmup)[0]


def compute_ratios(rows: list, fp32: str | None, against: list) -> list:
    """Ratios of medians within one window: each file / its export's fp32 (per runtime), each ONNX row / PyTorch,
    and each of this export's onnxruntime rows / the other export's file of the same name (else its fp32)."""
    out = []

    def add(kind, row, base, **extra):
        if base is not None and base is not row and base.median_ms > 0:
            out.append({"kind": kind, "seconds_audio": row.seconds_audio, "name": row.name, "runtime": row.runtime,
                        "baseline": base.name, "baseline_runtime": base.runtime, "ratio": row.median_ms / base.median_ms,
                        **extra})

    by = {(r.seconds_audio, r.runtime, r.source, r.name): r for r in rows}
    fp32_by_source = {"": fp32, **{a["label"]: fp32_of(a["files"]) for a in against}}
    for r in rows:
        if r.runtime == "pytorch":
            continue
        f = fp32_by_source.get(r.source)
        name = f if not r.source else f"{r.source}/{f}"
        add("fp32", r, by.get((r.seconds_audio, r.runtime, r.source, name)))
    torch_rows = {r.seconds_audio: r for r in rows if r.runtime == "pytorch"}
    for r in rows:
        if r.runtime != "pytorch":
            add("pytorch", r, torch_rows.get(r.seconds_audio))
    for a in against:
        label, names = a["label"], list(a["files"])
        for r in rows:
            if r.source or r.runtime != "onnxruntime":
                continue
            match = r.name if r.name in names else fp32_of(names)
            add("against", r, by.get((r.seconds_audio, "onnxruntime", label, f"{label}/{match}")), against=label)
    return out


def bench(folder: str | None = None, seconds=(0.75, 3.0), threads: int = 2, runs: int = 20, loaded=None,
          torch_model: bool = True, runtimes=("python",), files: dict | None = None, against=(), warmup: int = 2,
          sample_rate: int = 16000, progress=None) -> BenchResult:
    """progress: told each input length and runtime as it starts, with the time left. runtimes: python (PyTorch eager + onnxruntime, interleaved) and any of node, browser, webgpu (Transformers.js,
    in their own process, a folder only). files: name -> path instead of a folder's; against: other exports (folders
    or .onnx files), fed the same audio; loaded: the PyTorch reference (None and no folder: no PyTorch row)."""
    import onnxruntime as ort

    from .verify.check import folder_files, read_source

    if folder is not None and files is None:
        files = folder_files(folder)
        if loaded is None:
            from .archs.source import load_source

            loaded = load_source(read_source(folder)["source"], what=folder)
    if not files:
        raise VoxportError("nothing to bench: pass a folder made by `voxport build` or .onnx files")
    spec = None
    if loaded is not None:
        from .archs import get_arch

        spec = get_arch(loaded.arch)
        sample_rate = spec.sample_rate
    torch_model = torch_model and loaded is not None
    fp32 = fp32_of(files)

    sets, seen = [], set()
    for path in against:
        label = against_label(path)
        k = 2
        while label in seen:
            label, k = f"{against_label(path)}#{k}", k + 1
        seen.add(label)
        sets.append({"label": label, "path": os.path.abspath(path), "files": against_files(path)})

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no busy-waiting between runs: with candidates taking turns, idle spinning threads of one (onnxruntime's pool,
    # PyTorch's OpenMP team, see quiet_thread_pools) would take the cores of the next and skew the ratios
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    candidates = [("", name, p) for name, p in files.items()]
    candidates += [(s["label"], f"{s['label']}/{n}", p) for s in sets for n, p in s["files"].items()]
    python = "python" in runtimes
    sessions = {}
    if python:
        probe = speech_like(int(0.75 * sample_rate), 150, seed=0)[None]
        for source, name, p in candidates:
            sess = ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"])
            session_feeds(sess, probe, f"{name} ({p})")  # refuse inputs we cannot feed before timing anything
            sessions[name] = sess
    if torch_model and python:
        import torch

        torch.set_num_threads(threads)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    steps, done, t0 = len(seconds) * len(runtimes), 0, time.time()
    for s in seconds:
        x = speech_like(int(s * sample_rate), 150, seed=0)[None]
        for rt in runtimes:
            if progress:
                left = f", ~{(time.time() - t0) / done * (steps - done):.0f} s left" if done else ""
                progress(f"bench {s:g} s in {rt}: {len(candidates) + (torch_model and rt == 'python')} candidates x {runs} runs "
                         f"({done + 1}/{steps}{left})")
            done += 1
            if rt != "python":
                rows += _bench_js(folder, files, spec, loaded, rt, x[0], s, runs if rt != "webgpu" else min(runs, 3), threads)
        if not python:
            continue
        fns, meta = [], []
        if torch_model:
            import torch

            xt, mt = torch.from_numpy(x), torch.from_numpy(np.ones_like(x, dtype=np.int64))
            uses_mask = "attention_mask" in spec.input_names(loaded)

            def run_torch(xt=xt, mt=mt, uses_mask=uses_mask):
                with torch.inference_mode():
                    loaded.model(xt, mt) if uses_mask else loaded.model(xt)

            fns.append(run_torch)
            meta.append(("", "pytorch eager", "pytorch", "", 0))
        for source, name, p in candidates:
            sess = sessions[name]
            feed = session_feeds(sess, x, f"{name} ({p})")
            fns.append(lambda sess=sess, feed=feed: sess.run(None, feed))
            meta.append((source, name, "onnxruntime", os.path.abspath(p), file_size(p)))
        times = interleaved(fns, runs, warmup)
        for (source, name, runtime, path, size), t in zip(meta, times):
            rows.append(BenchRow(name, runtime, size, s, float(np.median(t)), float(np.percentile(t, 95)), len(t),
                                 source=source, path=path))
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cpu = cpu_info()
    versions = {"onnxruntime": ort.__version__}
    if torch_model:
        import torch

        versions["torch"] = torch.__version__
    return BenchResult(
        folder=os.path.abspath(folder) if folder else "", threads=threads, rows=rows, cpu=cpu["model"],
        cpu_flags=cpu["flags"], int8_dot_product=cpu["int8_dot_product"], machine=cpu["machine"], cores=cpu["cores"],
        versions=versions, runs=runs, warmup=warmup, interleaved=True,
        files={n: os.path.abspath(p) for n, p in files.items()}, fp32=fp32 or "",
        against=[{"label": a["label"], "path": a["path"], "files": {n: os.path.abspath(p) for n, p in a["files"].items()},
                  "fp32": fp32_of(a["files"])} for a in sets],
        ratios=compute_ratios(rows, fp32, sets), load_average=[load_start, load_end],
        thread_pools={"onnxruntime_spinning": False, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")})


def _bench_js(folder, files, spec, loaded, runtime, audio, seconds, runs, threads) -> list:
    """Median latency of each file in Transformers.js: the same window `runs` times after one warm-up."""
    from .files import DTYPE_FILES
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
        rows.append(BenchRow(name, label, file_size(files[name]), seconds, float(np.median(t)), float(np.percentile(t, 95)), len(t),
                             path=os.path.abspath(files[name])))
    return rows
