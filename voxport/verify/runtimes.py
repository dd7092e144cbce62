"""Runtimes that run an ONNX file, behind one interface."""
from __future__ import annotations

import numpy as np


class Runtime:
    """Runs one ONNX file on every verify case. `output` says what run_cases returns per case."""

    name = ""
    output = "logits"

    def check(self) -> None:
        """Raise a VoxportError saying what to install when the runtime cannot run here."""

    def run_cases(self, path: str, cases: list, outputs: list | None = None) -> list:
        run = self.open(path, outputs) if outputs else self.open(path)
        return [run(c.input_values, c.attention_mask) for c in cases]

    def open(self, path: str, outputs: list | None = None):
        """Return a callable: (input_values, attention_mask or None) -> logits (the first output), or
        {name: array} for the named outputs."""
        raise NotImplementedError


class OnnxRuntimePython(Runtime):
    name = "python"

    def __init__(self, threads: int = 0):
        self.threads = threads

    def open(self, path, outputs=None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}

        def run(input_values: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
            feed = {"input_values": input_values}
            if "attention_mask" in names:
                feed["attention_mask"] = attention_mask if attention_mask is not None else np.ones_like(input_values, dtype=np.int64)
            if outputs:
                return dict(zip(outputs, sess.run(list(outputs), feed)))
            return sess.run(None, feed)[0]

        return run


class TransformersJs(Runtime):
    """Transformers.js pipelines on a built folder: probabilities (classification) or text (CTC), row by row."""

    output = "pipeline"
    where = "node"
    device = None

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self.info = {}

    def check(self) -> None:
        from .jsrun import check_js

        check_js(browser=self.where == "browser")

    def run_files(self, folder: str, dtypes: list, task: str, labels: dict | None, rows: list, frames: bool = False) -> dict:
        from .jsrun import run_job

        out = run_job(folder, task, dtypes, rows, labels, where=self.where, device=self.device, threads=self.threads,
                      frames=frames)
        self.info = out.get("info", {})
        if out.get("error"):
            self.info["error"] = out["error"]
        self.info["console"] = out.get("console", [])
        return out.get("results") or {}


class NodeRuntime(TransformersJs):
    name = "node"


class BrowserRuntime(TransformersJs):
    name = "browser"
    where = "browser"


class WebGPURuntime(TransformersJs):
    name = "webgpu"
    where = "browser"
    device = "webgpu"


RUNTIMES = {"python": OnnxRuntimePython, "node": NodeRuntime, "browser": BrowserRuntime, "webgpu": WebGPURuntime}


def get_runtime(name: str) -> Runtime:
    from ..errors import VoxportError

    if name not in RUNTIMES:
        raise VoxportError(f"unknown runtime '{name}'; choose one of: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]()
