"""Which nodes hurt when quantized: per-node error on the verify suite, and the fewest nodes to keep
float to meet a parity target."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import QuantizeError
from ..results import _ToDict

QUANTIZABLE = ("Conv", "MatMul", "Gemm")
MAX_CASE_SAMPLES = 3 * 16000  # long clips add time, not information, to a ranking


@dataclass(frozen=True)
class NodeSensitivity(_ToDict):
    node: str
    op_type: str
    weights: int
    kept_by_exporter: bool
    max_abs_prob: float
    max_abs_logit: float


@dataclass(frozen=True)
class SensitivityReport(_ToDict):
    file: str
    mode: str
    method: str
    cases: int
    ranking: list
    target: float | None = None
    kept_float: list = field(default_factory=list)
    achieved: float | None = None
    size_bytes: int | None = None
    base_size_bytes: int | None = None
    seconds: float = 0.0

    def to_table(self) -> str:
        lines = [f"sensitivity of {self.file} ({self.mode}, {self.method}) on {self.cases} cases: each node quantized alone",
                 f"{'rank':>4} {'node':<44} {'op':<8} {'weights':>9} {'max|dp|':>9} {'max|dlogit|':>11}"]
        for i, r in enumerate(self.ranking, 1):
            mark = "  (front end, kept float)" if r.kept_by_exporter else ""
            lines.append(f"{i:>4} {r.node[:44]:<44} {r.op_type:<8} {r.weights:>9} {r.max_abs_prob:>9.2e} {r.max_abs_logit:>11.2e}{mark}")
        if self.target is not None:
            lines.append(f"target max |dp| <= {self.target}: keep {len(self.kept_float)} more nodes float -> "
                         f"max |dp| {self.achieved:.2e}, {self.size_bytes / 1e6:.2f} MB "
                         f"(+{(self.size_bytes - self.base_size_bytes) / 1e6:.2f} MB over all-quantized)")
        return "\n".join(lines)


def _quantizable(path: str) -> list:
    """(name, op type, weight count, kept float by the exporter) of every node with a weight initializer."""
    from .common import read_source

    model, meta, keep = read_source(path)
    inits = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    keep = set(keep)
    return [(n.name, n.op_type, inits.get(n.input[1], 0), n.name in keep) for n in model.graph.node
            if n.op_type in QUANTIZABLE and n.input[1] in inits]


def _suite(path: str, loaded=None):
    """Verify cases for the file's source model (rebuilt from its metadata, weights hash-checked, unless given), long
    ones left out."""
    from ..archs import get_arch
    from .fit import load_source

    loaded = loaded if loaded is not None else load_source(path)
    spec = get_arch(loaded.arch)
    return [c for c in spec.cases(loaded) if c.input_values.shape[1] <= MAX_CASE_SAMPLES]


class _Runner:
    def __init__(self, cases):
        self.cases = cases

    def outputs(self, path):
        from ..verify.runtimes import OnnxRuntimePython

        return OnnxRuntimePython().run_cases(path, self.cases)

    @staticmethod
    def error(ref, out):
        if not all(np.isfinite(o).all() for o in out):
            return float("inf"), float("inf")  # e.g. a quantized mel filterbank going negative under the log
        from ..verify.check import softmax

        dp = max(float(np.abs(softmax(o.astype(np.float64)) - softmax(r.astype(np.float64))).max()) for r, o in zip(ref, out))
        dl = max(float(np.abs(o - r).max()) for r, o in zip(ref, out))
        return dp, dl


def explain(path: str, mode: str = "q8", method: str | None = None, target: float | None = None, progress=None,
            loaded=None) -> SensitivityReport:
    from . import arch_recipe, quantize

    say = progress or (lambda m: None)
    t0 = time.time()
    method = method or arch_recipe(path, mode).method
    nodes = _quantizable(path)
    if not nodes:
        raise QuantizeError(f"{path} has no quantizable nodes")
    runner = _Runner(_suite(path, loaded))
    ref = runner.outputs(path)
    tmp = tempfile.mkdtemp(prefix="voxport-explain-")
    try:
        out = os.path.join(tmp, "q.onnx")
        # every node quantized once, the exporter's float list too; then one switch graph runs each node alone
        import onnx

        from ..onnxutil import load_light
        from .fit import SwitchRunner
        from .shipped import integer_nodes, shipped_name

        quantize(path, out, mode=mode, method=method, extra_float=[], replace_float=True, write_config_file=False)
        src = onnx.load(path, load_external_data=False)
        by_name = {n.name: n for n in src.graph.node}
        pairs = [(by_name[name], by_name[name].input[1]) for name, _, _, _ in nodes]
        shipped = {i.name for i in load_light(out).graph.initializer}
        switched = [p for p in pairs if shipped_name(shipped, p[1]) is not None]
        index = {n.name: i for i, (n, _) in enumerate(switched)}
        dynamic = integer_nodes(shipped, switched)  # the nodes whose inputs the file quantizes at run time
        sw = SwitchRunner(path, switched, out, dynamic, None, tmp)
        items = len(switched) * (2 if dynamic else 1)
        ranking = []
        for k, (name, op, weights, kept) in enumerate(nodes):
            say(f"node {k + 1}/{len(nodes)}: {name}")
            if name not in index:  # too small to quantize: the file keeps it float
                dp, dl = 0.0, 0.0
            else:
                on = np.zeros(items)
                on[index[name]] = 1.0
                if dynamic:
                    on[len(switched) + index[name]] = 1.0
                dp, dl = runner.error(ref, sw.run(on, runner.cases))
            ranking.append(NodeSensitivity(name, op, weights, kept, dp, dl))
        sw = None
        ranking.sort(key=lambda r: -r.max_abs_prob)
        report = dict(file=path, mode=mode, method=method, cases=len(runner.cases), ranking=ranking)
        if target is not None:  # the build's keep-float search, aimed at this target, with no size limit
            from ..tolerances import Tolerance
            from .fit import fit

            def run(extra, search):
                return quantize(path, out, mode=mode, method=method, extra_float=extra, search=search, write_config_file=False)

            q, found = fit(path, out, mode, run, runner.cases, ref, Tolerance(max_abs_prob=target, min_agreement=0.0),
                           size_budget=float("inf"), progress=say)
            report.update(target=target, kept_float=[k["node"] for k in found.kept_float], achieved=found.max_abs_prob,
                          size_bytes=found.size_bytes, base_size_bytes=found.size_all_quantized)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SensitivityReport(**report, seconds=time.time() - t0)
