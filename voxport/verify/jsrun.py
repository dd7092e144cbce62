"""Run a verify job in Transformers.js: Node, or headless Chromium (WASM or WebGPU)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

from ..errors import VoxportError

JS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "js")
CHROMIUM = os.environ.get("VOXPORT_CHROMIUM", "/usr/bin/chromium")


def check_js(browser: bool = False) -> None:
    if shutil.which("node") is None:
        raise VoxportError("node is not installed; install Node.js 18+ to verify in Transformers.js")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@huggingface", "transformers")):
        raise VoxportError(f"Transformers.js is not installed; run: cd {JS_DIR} && ONNXRUNTIME_NODE_INSTALL=skip npm ci")
    if browser and not os.path.exists(CHROMIUM):
        raise VoxportError("chromium is not installed; run: apt-get install -y chromium (or set VOXPORT_CHROMIUM)")


def run_job(folder: str, task: str, dtypes: list, rows: list, labels: dict | None, where: str = "node",
            device: str | None = None, threads: int | None = None, timeout: int = 1800, frames: bool = False) -> dict:
    """rows: list of (case name, [1-D float32 arrays]). Returns the runner's JSON. frames: speech recognition rows
    come back as {"text", "logits": {"dims", "data"}} (the model's frame logits behind each transcript)."""
    check_js(browser=where == "browser")
    tmp = tempfile.mkdtemp(prefix="voxport-js-")
    try:
        cases = []
        for ci, (name, arrays) in enumerate(rows):
            paths = []
            for ri, a in enumerate(arrays):
                p = os.path.join(tmp, f"c{ci}_{ri}.f32")
                np.ascontiguousarray(a, dtype=np.float32).tofile(p)
                paths.append(p)
            cases.append({"name": name, "rows": paths})
        job = {"task": task, "dtypes": dtypes, "device": device, "labels": labels or {}, "cases": cases, "threads": threads,
               "timeout_s": timeout, "frames": frames}
        return _run(tmp, folder, job, "run-node.mjs" if where == "node" else "run-browser.mjs", where, timeout, "Transformers.js")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: str, folder: str, job: dict, script: str, where: str, timeout: int, what: str) -> dict:
    """The job (its model: `folder`, linked into tmp) through a runner script in Node, or Chromium for the browser."""
    link = os.path.join(tmp, "model")  # a plain name: Transformers.js mis-resolves ids such as ".build-x"
    os.symlink(os.path.abspath(folder), link)
    job_path = os.path.join(tmp, "job-in.json")
    with open(job_path, "w") as f:
        json.dump({**job, "model": link}, f)
    cmd = ["node", os.path.join(JS_DIR, script), job_path] + ([CHROMIUM] if where == "browser" else [])
    try:
        proc = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VoxportError(f"{what} ({where}) did not finish in {timeout} s") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise VoxportError(f"{what} ({where}) failed: {err}")
    return json.loads(proc.stdout)


def run_outputs(folder: str, dtypes: list, rows: list, threads: int | None = None, timeout: int = 1800,
                where: str = "node", device: str | None = None) -> dict:
    """Every graph output by name from Transformers.js (Node, or Chromium with WASM / WebGPU), loaded as an embedding
    model is used there (AutoFeatureExtractor + AutoModel). rows: 1-D float32 clips. Returns {dtype: {"load_ms",
    "error", "rows": [{output name: array}]}, "info": the runner's facts}."""
    out = run_job(folder, "outputs", dtypes, [(f"r{i}", [a]) for i, a in enumerate(rows)], None, where=where,
                  device=device, threads=threads, timeout=timeout)
    results = out.get("results") or {}
    for entry in results.values():
        entry["rows"] = [{k: np.asarray(v["data"], dtype=np.float32).reshape(v["dims"]) for k, v in c["rows"][0].items()}
                         for c in entry.pop("cases", None) or []]
    for dtype in dtypes:  # a browser that could not start (no WebGPU adapter) returns no results
        results.setdefault(dtype, {"error": out.get("error") or (out.get("info") or {}).get("webgpu_error") or "not run", "rows": []})
    results["info"] = {**(out.get("info") or {}), "console": out.get("console", [])}
    return results


def run_pipelines(folder: str, dtypes: list, runs: list, where: str = "node", threads: int | None = None,
                  timeout: int = 1800) -> dict:
    """voxport-web's deployed pipelines (js/voxport-web) on a folder, in Node or headless Chromium. runs: [{"kind":
    "longform" | "stream" | "windows" | "verify", "audio": 1-D float32 array, "b": second clip (verify), "options"}].
    Returns {dtype: {"error", "results": [one per run]}, "info": the runner's facts}."""
    check_js(browser=where == "browser")
    tmp = tempfile.mkdtemp(prefix="voxport-web-")
    try:
        job_runs = []
        for i, r in enumerate(runs):
            run = {k: v for k, v in r.items() if k not in ("audio", "b")}
            for key in ("audio", "b"):
                if key in r:
                    path = os.path.join(tmp, f"r{i}_{key}.f32")
                    np.ascontiguousarray(r[key], dtype="<f4").tofile(path)
                    run[key] = path
            job_runs.append(run)
        job = {"dtypes": dtypes, "runs": job_runs, "threads": threads, "page": "pipelines.html", "timeout_s": timeout}
        out = _run(tmp, folder, job, "pipelines-node.mjs" if where == "node" else "run-browser.mjs", where, timeout, "voxport-web")
        results = out.get("results") or {}
        for d in dtypes:
            results.setdefault(d, {"error": out.get("error") or "not run", "results": []})
        results["info"] = {**(out.get("info") or {}), "console": out.get("console", [])}
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
