"""Tolerance met by construction: quantize, measure, and when the file misses its bar keep the most
sensitive nodes float, the fewest that pass, within a size budget.

The search is fast because it runs one model, not one file per trial: a "switch" graph takes each node's weight
as an input, fed float or as the fully quantized file ships it (so exactly the values shipped), and for dynamic
files one float input per node mixes the node's input activation with its run-time 8-bit round trip
(DynamicQuantizeLinear then DequantizeLinear), which is what ConvInteger / MatMulInteger compute. One session
then gives the error of any set of quantized nodes by changing feeds: each node alone (the ranking), and every
prefix of the ranking (the search). The chosen set is then written as a real file and measured again.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import QuantizeError
from ..results import _ToDict
from ..tolerances import FIT_MARGIN, SIZE_BUDGET, Tolerance
from .common import FLOAT_ACTIVATIONS, FLOAT_WEIGHTS, has_external_data
from .shipped import integer_nodes, shipped_name, shipped_weight, weight_nodes

SWITCH = "voxport_switch"
SEARCH_MODES = ("q8", "int8", "uint8")  # file kinds whose 8-bit weights the search can trade back to float
RANK_SAMPLES = 24000  # the ranking runs the worst cases only, up to this many samples in all (1.5 s)


@dataclass(frozen=True)
class FitResult(_ToDict):
    """What the search did for one file."""

    mode: str
    target_max_abs_prob: float
    max_abs_prob_all_quantized: float
    passed_all_quantized: bool
    kept_float: list = field(default_factory=list)  # [{"node", "op_type", "weights", "max_abs_prob_alone"}]
    max_abs_prob: float = 0.0
    size_bytes: int = 0
    size_all_quantized: int = 0
    size_budget: float = SIZE_BUDGET
    seconds: float = 0.0
    met: str = "margin"  # "margin": the search's target; "tolerance": only the bar itself, within the budget
    note: str = ""
    metric: str = "max |dp|"  # what the *_max_abs_prob figures measure: "max |dp|", or "1 - cosine" for embeddings
    emulated_kept: int = 0  # how many items the switch graph said were enough (kept_float can be more: the real file decides)

    def summary(self) -> str:
        if self.passed_all_quantized:
            return f"{self.mode}: fully quantized, {self.metric} {self.max_abs_prob_all_quantized:.3g} on the verify cases" + (
                f" ({self.note})" if self.note else "")
        if not self.kept_float:  # kept fully quantized without the margin (the search was off)
            return (f"{self.mode}: fully quantized, {self.metric} {self.max_abs_prob_all_quantized:.3g} on the verify cases: "
                    f"meets the tolerance, not the margin {self.target_max_abs_prob:.3g}")
        grow = self.size_bytes / self.size_all_quantized if self.size_all_quantized else 1.0
        return (f"{self.mode}: {self.metric} {self.max_abs_prob_all_quantized:.3g} fully quantized > {self.target_max_abs_prob:.3g}; "
                f"kept {describe_kept(self.kept_float)} -> {self.max_abs_prob:.3g}, "
                f"{self.size_bytes / 1e6:.1f} MB ({grow:.2f}x the fully quantized {self.size_all_quantized / 1e6:.1f} MB)"
                + ("; meets the tolerance, not the margin" if self.met == "tolerance" else "")
                + (f" ({self.note})" if self.note else ""))


class FitError(QuantizeError):
    """No file within the size budget meets the tolerance; the message says what it would take."""

    exit_code = 1


def fit_target(tol: Tolerance) -> Tolerance:
    """The tolerance with the search's margin: FIT_MARGIN of each bar (probabilities, cosine distance, pairwise scores)."""
    return dataclasses.replace(
        tol, max_abs_prob=None if tol.max_abs_prob is None else tol.max_abs_prob * FIT_MARGIN,
        min_cosine=None if getattr(tol, "min_cosine", None) is None else 1 - (1 - tol.min_cosine) * FIT_MARGIN,
        max_pair_delta=None if getattr(tol, "max_pair_delta", None) is None else tol.max_pair_delta * FIT_MARGIN)


class Judge:
    """Measures a set of outputs against the PyTorch references with a file kind's (fit) tolerance. kinds: the
    architecture's output kinds when it has several outputs or embeddings (outputs and refs are then
    {name: array}); the search's one number is max |dp| when the tolerance bounds probabilities, else the
    cosine distance 1 - min cosine of the embeddings; pass or fail is every criterion of the tolerance."""

    def __init__(self, cases: list, refs: list, tol: Tolerance, kinds: dict | None = None):
        self.cases, self.refs, self.tol, self.kinds = cases, refs, tol, kinds
        has_logits = not kinds or "logits" in kinds.values()
        self.metric = "max |dp|" if (tol.max_abs_prob is not None and has_logits) or not kinds else "1 - cosine"
        self.aim = tol.max_abs_prob if self.metric == "max |dp|" else 1 - (tol.min_cosine or 0.0)

    def report(self, outs: list, cases=None, refs=None):
        from ..verify.check import compare, compare_outputs

        if self.kinds:
            return compare_outputs("fit", "fit", "python", cases or self.cases, refs or self.refs, outs, self.tol, self.kinds)
        return compare("fit", "fit", "python", cases or self.cases, refs or self.refs, outs, self.tol)

    def error(self, report) -> float:
        return report.max_abs_prob if self.metric == "max |dp|" else 1 - report.min_cosine

    def passes(self, outs: list) -> tuple:
        r = self.report(outs)
        return not r.reasons, self.error(r)


def shipped_biases(quantized_path: str, fp32_model, nodes: list, fp32_dir: str = "") -> dict:
    """bias name -> (index of its node in `nodes`, shipped minus float values) where the quantized file moved a
    node's bias (bias correction). fp32_dir: where fp32_model's side file is, if it has one."""
    import onnx

    from .bias import layer_biases

    from ..onnxutil import load_light, tensor_array

    q = {i.name: i for i in load_light(quantized_path).graph.initializer}
    qbase = os.path.dirname(os.path.abspath(quantized_path))
    f = {i.name: i for i in fp32_model.graph.initializer}
    index = {n.name: i for i, (n, _) in enumerate(nodes)}
    out = {}
    for node_name, b in layer_biases(fp32_model, nodes).items():
        if b in q and b in f and q[b].data_type == onnx.TensorProto.FLOAT:
            d = tensor_array(q[b], qbase) - tensor_array(f[b], fp32_dir)
            if np.any(d):
                out[b] = (index[node_name], d.astype(np.float32))
    return out


def switch_graph(model, nodes: list, dynamic, biases: dict | None):
    """The fp32 graph (in place) the search runs: node i's weight is read from graph input `voxport_sw{i}_w` and a
    moved bias from `voxport_swb{i}_b` (fed float or quantized per run, see SwitchRunner); for dynamic files, input
    `voxport_switch` entry len(nodes) + i mixes node i's input activation with its 8-bit round trip
    (DynamicQuantizeLinear then DequantizeLinear), which is what ConvInteger / MatMulInteger compute.
    dynamic: True (every node), or the names of the nodes whose inputs the file quantizes at run time
    (integer_nodes); empty: no activation entries. Returns {input name: the float initializer it replaces}."""
    from onnx import TensorProto, helper

    inits = {i.name: i for i in model.graph.initializer}
    feeds, new, added = {}, [], []
    model.graph.input.append(helper.make_tensor_value_info(SWITCH, TensorProto.FLOAT, [len(nodes) * (2 if dynamic else 1)]))
    for b, (i, _) in (biases or {}).items():
        feeds[f"voxport_swb{i}_b"] = inits[b]
    renamed = {b: f"voxport_swb{i}_b" for b, (i, _) in (biases or {}).items()}
    by_name = {n.name: i for i, (n, _) in enumerate(nodes)}
    for node in model.graph.node:
        for k, x in enumerate(node.input):
            if x in renamed:
                node.input[k] = renamed[x]
        i = by_name.get(node.name)
        if i is not None:
            base = f"voxport_sw{i}"
            feeds[base + "_w"] = inits[node.input[1]]
            node.input[1] = base + "_w"
            if dynamic is True or (dynamic and node.name in dynamic):
                x = node.input[0]
                added.append(helper.make_tensor(base + "_aidx", TensorProto.INT64, [1], [len(nodes) + i]))
                new.append(helper.make_node("Gather", [SWITCH, base + "_aidx"], [base + "_as"], axis=0))
                new.append(helper.make_node("DynamicQuantizeLinear", [x], [base + "_xq", base + "_xs", base + "_xz"]))
                new.append(helper.make_node("DequantizeLinear", [base + "_xq", base + "_xs", base + "_xz"], [base + "_xd"]))
                new.append(helper.make_node("Sub", [base + "_xd", x], [base + "_xe"]))
                new.append(helper.make_node("Mul", [base + "_xe", base + "_as"], [base + "_xm"]))
                new.append(helper.make_node("Add", [x, base + "_xm"], [base + "_x"]))
                node.input[0] = base + "_x"
        new.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new)
    model.graph.input.extend(helper.make_tensor_value_info(name, t.data_type, list(t.dims)) for name, t in feeds.items())
    used = {x for n in model.graph.node for x in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep + added)
    del model.graph.value_info[:]
    return feeds


class SwitchRunner:
    """The fp32 file run with any set of the search's items quantized, by changing feeds: node i's weight is fed
    float or as the quantized file ships it (and its moved bias with it), its input activation is mixed in the
    graph. The float weights are mapped from the fp32 file's side file when it has one (read once otherwise); the
    shipped ones are dequantized from the quantized file for the runs that switch them on. No weight is
    recomputed in the graph per run: a run costs little more than the fp32 file's (XLS-R-300M, 1.5 s: 450 ms
    against 390; the graph that mixed every weight in-graph per run took 580-750)."""

    def __init__(self, fp32_path: str, nodes: list, quantized_path: str, dynamic, biases: dict | None = None, tmp: str = "",
                 threads: int = 0, outputs: list | None = None):
        import onnx
        import onnxruntime as ort

        from ..onnxutil import load_light, save_with_side_file

        base = os.path.dirname(os.path.abspath(fp32_path))
        model = load_light(fp32_path)
        feeds = switch_graph(model, nodes, dynamic, biases)
        self.maps = {}  # side file -> its read-only mapping
        self.float = {name: _mapped(t, base, self.maps) for name, t in feeds.items()}
        self.nodes, self.biases = nodes, {i: d for _, (i, d) in (biases or {}).items()}
        q, self.qbase = load_light(quantized_path), os.path.dirname(os.path.abspath(quantized_path))
        if tmp and not has_external_data(quantized_path):
            # the 8-bit weights are read when a run switches them on: kept in a side file meanwhile, not in memory
            self.qbase = tempfile.mkdtemp(prefix="shipped-", dir=tmp)
            save_with_side_file(q, os.path.join(self.qbase, "shipped.onnx"))
        self.qinits = {i.name: i for i in q.graph.initializer}
        del q
        # saved beside the fp32 file: the initializers left in the graph may still read its side file
        fd, path = tempfile.mkstemp(prefix="voxport-switch-", suffix=".onnx", dir=base if has_external_data(fp32_path) else tmp or None)
        os.close(fd)
        try:
            onnx.save(model, path)
            del model
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            # no arena: with the weights fed, its blocks grew 0.5-0.7 GB over a ranking (XLS-R-300M) for no speed
            opts.enable_cpu_mem_arena = False
            if threads:
                opts.intra_op_num_threads = threads
            self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        finally:
            os.remove(path)
        self.names = {i.name for i in self.sess.get_inputs()}
        self.outputs = list(outputs) if outputs else None  # named outputs as {name: array}; else the first output

    def weights(self, switch: np.ndarray) -> dict:
        """The weight feeds of a run: node i's as shipped where switch[i] is on, else float."""
        import mmap

        feed = dict(self.float)
        on = np.flatnonzero(switch[: len(self.nodes)])
        if 2 * len(on) > len(self.nodes):
            # mostly quantized: the float pages mapped in by earlier runs are let go (clean file pages, read again
            # where needed), so that the float and the shipped weights are not both held (2.5 GB for XLS-R-300M)
            for mm in self.maps.values():
                raw = getattr(mm, "_mmap", None)  # numpy.memmap's mmap object
                if raw is not None and hasattr(mmap, "MADV_DONTNEED"):
                    raw.madvise(mmap.MADV_DONTNEED)
        for i in on:
            node, w = self.nodes[i]
            feed[f"voxport_sw{i}_w"] = shipped_weight(self.qinits, node, w, self.qbase)
            if int(i) in self.biases:
                feed[f"voxport_swb{i}_b"] = (self.float[f"voxport_swb{i}_b"] + self.biases[int(i)]).astype(np.float32)
        return feed

    def run(self, switch: np.ndarray, cases: list) -> list:
        """switch: 1.0 per quantized item (node i's weights: entry i; its input activation: entry len(nodes) + i)."""
        from ..onnxutil import give_back_memory

        switch = np.asarray(switch, np.float32)
        weights = self.weights(switch)
        outs = []
        for c in cases:
            feed = {"input_values": c.input_values, SWITCH: switch, **weights}
            if "attention_mask" in self.names:
                feed["attention_mask"] = c.attention_mask if c.attention_mask is not None else np.ones_like(c.input_values, dtype=np.int64)
            outs.append(dict(zip(self.outputs, self.sess.run(self.outputs, feed))) if self.outputs else self.sess.run(None, feed)[0])
        feed = weights = None
        if np.count_nonzero(switch[: len(self.nodes)]) > 1:
            give_back_memory()  # the shipped weights of this run (glibc keeps freed blocks of a few MB otherwise)
        return outs


def _mapped(tensor, base_dir: str, maps: dict) -> np.ndarray:
    """An initializer's values: mapped read-only from its side file (aligned data; `maps` keeps one mapping per
    file), else read."""
    from onnx import TensorProto, helper

    from ..onnxutil import external_info, tensor_array

    if tensor.data_location == TensorProto.EXTERNAL:
        info = external_info(tensor)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        offset, length = int(info.get("offset", 0)), int(info["length"])
        if offset % dtype.itemsize == 0:
            where = os.path.join(base_dir, info["location"])
            if where not in maps:
                maps[where] = np.memmap(where, dtype=np.uint8, mode="r")
            return np.frombuffer(maps[where], dtype=dtype, count=length // dtype.itemsize, offset=offset).reshape(tuple(tensor.dims))
    return np.ascontiguousarray(tensor_array(tensor, base_dir))


def fit(fp32_path: str, output: str, mode: str, quantize_fn, cases: list, refs: list, target: Tolerance,
        size_budget: float = SIZE_BUDGET, progress=None, bar: Tolerance | None = None, kinds: dict | None = None,
        measured: dict | None = None, search: bool = True):
    """quantize_fn(extra_float: list, search: dict | None) writes `output` (recording `search` in its options and
    metadata) and returns a QuantizeResult. Returns (QuantizeResult, FitResult).

    target: what the search aims at (the tolerance with a margin); bar: the tolerance itself. When no file within
    the budget reaches the target, the smallest one that meets the bar is kept (the fully quantized file if it
    does); only when none meets the bar does it fail. measured: gets {output: the file's outputs on the cases} for
    the file returned (verify runs the same file on the same cases: it need not run them again).
    search=False: the fully quantized file only, kept if it meets the bar (FitError if not)."""
    from ..verify.runtimes import OnnxRuntimePython
    from .common import read_source

    say = progress or (lambda m: None)
    t0 = time.time()
    judge = Judge(cases, refs, target, kinds)
    bar_judge = Judge(cases, refs, bar or target, kinds)
    metric, aim = judge.metric, judge.aim
    out_names = list(kinds) if kinds else None
    from ..verify.check import run_cases

    measured = {} if measured is None else measured
    result = quantize_fn([], None)
    say(f"{mode}: measuring on {len(cases)} cases")
    outs = run_cases(OnnxRuntimePython(), output, cases, out_names, say, f"{mode}: measuring")
    ok, err0 = judge.passes(outs)
    full_meets_bar = bar_judge.passes(outs)[0]
    base_size = result.size_bytes
    done = dict(mode=mode, target_max_abs_prob=aim or 0.0, max_abs_prob_all_quantized=err0, size_all_quantized=base_size,
                size_budget=size_budget, metric=metric)
    if ok or (not search and full_meets_bar):
        measured[output] = outs
        return result, FitResult(**done, passed_all_quantized=ok, max_abs_prob=err0, size_bytes=base_size, seconds=time.time() - t0,
                                 met="margin" if ok else "tolerance")
    if not search:
        raise FitError(f"{mode} misses {metric} {bar_judge.aim or 0.0:.3g} fully quantized (measured {err0:.3g}) and the "
                       "search is off")
    src, _, keep = read_source(fp32_path)
    nodes = weight_nodes(src, set(keep))
    from ..onnxutil import give_back_memory, load_light

    qnames = {i.name for i in load_light(output).graph.initializer}
    nodes = [(n, w) for n, w in nodes if shipped_name(qnames, w) is not None]
    if not nodes:
        raise FitError(f"{mode} misses {metric} {aim:.3g} (measured {err0:.3g}) and has no 8-bit weights to keep float")
    say(f"{mode}: {metric} {err0:.3g} > {aim:.3g}; ranking {len(nodes)} nodes")
    tmp = tempfile.mkdtemp(prefix="voxport-fit-")
    dynamic = integer_nodes(qnames, nodes)  # empty for files without run-time quantization
    n = len(nodes)
    # the search's items: node i's weights (item i) and, in files whose activations are quantized at run time,
    # node i's input activation (item n + i: float input, int8 weights, no bytes); float weights need a float
    # input (no integer kernel takes float weights), so item i brings item n + i with it
    m = 2 * n if dynamic else n
    try:
        biases = shipped_biases(output, src, nodes, os.path.dirname(os.path.abspath(fp32_path)))
        give_back_memory()  # what the stages before freed goes back before the search maps the weights in
        runner = SwitchRunner(fp32_path, nodes, output, dynamic, biases, tmp, outputs=out_names)
        # the worst cases of the fully quantized file carry the ranking
        full = runner.run(np.ones(m), cases)
        per_case = [judge.error(judge.report([o], [c], [r])) for c, r, o in zip(cases, refs, full)]
        order = np.argsort(per_case)[::-1]
        rank_idx, total = [], 0
        for i in order:
            if rank_idx and total + cases[i].input_values.size > RANK_SAMPLES:
                continue
            rank_idx.append(i)
            total += cases[i].input_values.size
        rc, rr = [cases[i] for i in rank_idx], [refs[i] for i in rank_idx]
        alone, step, t_rank = [], max(1, m // 5), time.time()
        for i in range(m):
            s = np.zeros(m)
            s[i] = 1.0
            alone.append(judge.error(judge.report(runner.run(s, rc), rc, rr)))
            if (i + 1) % step == 0 and i + 1 < m:  # counts inside the longest step of the search
                left = (time.time() - t_rank) / (i + 1) * (m - i - 1)
                say(f"{mode}: ranked {i + 1}/{m} ({'weights and inputs' if dynamic else 'weights'}), ~{left:.0f} s left")
        weights = {i.name: int(np.prod(i.dims)) for i in src.graph.initializer}
        size = np.array([weights.get(w, 1) for _, w in nodes], np.float64)
        cost = np.concatenate([size, np.zeros(m - n)])  # bytes each item adds: float16 weights are 1 more than int8
        alone = np.array(alone)

        def switch(ranked, k: int) -> np.ndarray:
            s = np.ones(m)
            for j in ranked[:k]:
                s[j] = 0.0
                if dynamic and j < n:
                    s[n + j] = 0.0
            return s

        # the search runs the cases that come near the target when fully quantized; the real file is then
        # measured on every case
        near = [i for i, e in enumerate(per_case) if not aim or e > 0.5 * aim] or list(order[:1])
        hc, hr = [cases[i] for i in near], [refs[i] for i in near]

        def passes_with(ranked, k: int, j=judge) -> bool:
            return not j.report(runner.run(switch(ranked, k), hc), hc, hr).reasons

        def shortest(ranked, j=judge) -> int:
            lo, hi = 0, len(ranked)  # passes_with(ranked, len) was checked by the caller
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if passes_with(ranked, mid, j):
                    hi = mid
                else:
                    lo = mid
            return hi

        def within_budget(order) -> list:
            """The order with every node left out whose kept weights (float16: 1 more byte each) would break the budget."""
            room, out = (size_budget - 1.0) * base_size, []
            for i in order:
                if cost[i] <= room:
                    out.append(i)
                    room -= cost[i]
            return out

        # two orders: most harmful first, and most harm per byte first (free items first); the smaller set wins
        orders = (list(np.argsort(-alone, kind="stable")), list(np.argsort(-alone / np.maximum(cost, 1.0), kind="stable")))

        def plans_for(j) -> list:
            plans = []
            for order in orders:
                ranked = within_budget(order)
                if ranked and passes_with(ranked, len(ranked), j):
                    k = shortest(ranked, j)
                    plans.append((float(cost[ranked[:k]].sum()), k, ranked))
            return plans

        plans, level = plans_for(judge), judge
        if not plans and bar is not None:
            if full_meets_bar:  # within the tolerance already: no bytes spent on a margin the budget cannot buy
                plans, level = [(0.0, 0, [])], bar_judge
            else:
                plans, level = plans_for(bar_judge), bar_judge
        if not plans:  # nothing within the budget passes: find what it would take, to say so
            ranked = orders[0]
            k = shortest(ranked) if passes_with(ranked, m) else m
            plans, level = [(float(cost[ranked[:k]].sum()), k, ranked)], judge
        _, k, ranked = min(plans, key=lambda p: p[0])
        runner = None  # frees the session before the real files are written
        give_back_memory()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    met = "margin" if level is judge else "tolerance"
    if k == 0:
        measured[output] = outs
        note = f"fully quantized {metric} {err0:.3g} meets the tolerance but not the search's margin ({aim:.3g}) within the size budget"
        say(f"{mode}: {note}")
        return result, FitResult(**done, passed_all_quantized=True, max_abs_prob=err0, size_bytes=base_size,
                                 seconds=time.time() - t0, met=met, note=note)
    emulated = k
    while True:
        kept = kept_entries(nodes, ranked[:k], size, alone)
        names = [e["node"] for e in kept]
        say(f"{mode}: keeping {describe_kept(kept)}")
        search = {"why": f"fully quantized {metric} {err0:.3g} > {aim:.3g} on the verify cases; the fewest most "
                         f"sensitive nodes (each measured quantized alone) stay float", "kept_float": kept}
        result = quantize_fn(names, search)
        outs = run_cases(OnnxRuntimePython(), output, cases, out_names, say, f"{mode}: measuring")
        ok, err = level.passes(outs)
        too_big = result.size_bytes > size_budget * base_size
        if ok or too_big or k >= len(ranked):
            break
        k = min(len(ranked), k + max(1, k // 4))  # the real file missed where the switch graph passed: a few more
    measured[output] = outs
    note = ""
    if k > emulated:  # the switch graph liked a set the real file did not: the real file decided
        note = (f"the switch graph met the {'target' if level is judge else 'tolerance'} with {emulated} items float; the real file, "
                f"re-measured, needed {k} ({describe_kept(kept)})")
        say(f"{mode}: {note}")
    fitres = FitResult(**done, passed_all_quantized=False, kept_float=kept, max_abs_prob=err, size_bytes=result.size_bytes,
                       seconds=time.time() - t0, met=met, emulated_kept=emulated, note=note)
    if too_big or not ok:
        os.remove(output)
        need = (f"{describe_kept(kept)}, {result.size_bytes / 1e6:.1f} MB = {result.size_bytes / base_size:.2f}x" if ok or too_big
                else f"more than the {k} most sensitive nodes that fit the budget (measured {err:.3g} with them float)")
        aim = (bar_judge if level is bar_judge else judge).aim
        raise FitError(f"{mode}: no file within {size_budget}x the fully quantized size ({base_size / 1e6:.1f} MB) meets {metric} "
                       f"{aim:.3g} (fully quantized {err0:.3g}); it takes {need}. Pass --size-budget to allow "
                       f"more, or drop {mode}")
    return result, fitres


def kept_entries(nodes: list, items: list, size, alone) -> list:
    """What the chosen items keep of each node: float weights (item i < n) or only float activations (item n + i)."""
    n, out = len(nodes), {}
    for j in items:
        i = j % n
        tier = FLOAT_WEIGHTS if j < n else FLOAT_ACTIVATIONS
        if out.get(i, {}).get("kept") == FLOAT_WEIGHTS:
            continue
        out[i] = {"node": nodes[i][0].name, "op_type": nodes[i][0].op_type, "weights": int(size[i]), "kept": tier,
                  "max_abs_prob_alone": round(float(alone[j]), 6)}
    return list(out.values())


def describe_kept(kept: list) -> str:
    act = sum(1 for e in kept if e.get("kept") == FLOAT_ACTIVATIONS)
    return f"{len(kept)} nodes float" + (f" ({act} with int8 weights and float activations)" if act else "")


def quantize_to_tolerance(input_path: str, output: str, mode: str = "q8", method: str | None = None, per_channel: bool | None = None,
                          loaded=None, audio=None, target: float | None = None, size_budget: float = SIZE_BUDGET,
                          config_path: str | None = None, progress=None):
    """The quantize stage with its tolerance met by construction: the reference is rebuilt from the file's
    source record (or `loaded`), the file is measured on the verify cases and, where it misses, its most
    sensitive nodes stay float. Returns (QuantizeResult, FitResult)."""
    from ..archs import get_arch
    from ..verify.check import build_cases

    if loaded is None:
        loaded = load_source(input_path)
    spec = get_arch(loaded.arch)
    cases = build_cases(spec, loaded, audio)
    refs = [spec.reference(loaded, c) for c in cases]
    config = config_path or os.path.join(os.path.dirname(os.path.abspath(output)), "quantize_config.json")
    return make_kind(spec, loaded, input_path, output, mode, cases, refs, calibration_cases(spec, loaded), method=method,
                     per_channel=per_channel, target=target, size_budget=size_budget, progress=progress, config_path=config)


def make_kind(spec, loaded, fp32_path: str, output: str, mode: str, cases: list, refs: list, calibration: list,
              method: str | None = None, per_channel: bool | None = None, target: float | None = None,
              size_budget: float = SIZE_BUDGET, progress=None, config_path: str | None = None, measured: dict | None = None,
              search: bool = True) -> tuple:
    """One file kind, the one way build and `voxport quantize` make it: the architecture's recipe (method overrides
    it, and then no fallback or alternative is tried; per_channel overrides its scales), fitted to the kind's bar
    with the search's margin (target: a stricter max |dp|) where the search can trade 8-bit weights back to float,
    else written as the recipe says. Returns (QuantizeResult, FitResult or None)."""
    from . import quantize

    rec = spec.recipe(mode)
    if method is not None:
        rec = dataclasses.replace(rec, method=method, fallback=None, alternatives=())
    if mode not in SEARCH_MODES:
        return quantize(fp32_path, output, mode=mode, method=rec.method, per_channel=rec.per_channel if per_channel is None else per_channel,
                        config_path=config_path, calibration=calibration if rec.bias_correction else None), None
    bar = spec.tolerance(loaded, mode)
    tol = fit_target(bar)
    if target is not None:
        tol = bar = dataclasses.replace(tol, max_abs_prob=target)
    kinds = spec.output_kinds(loaded) if spec.multi_output(loaded) else None  # several outputs: each judged as verify does
    fitter = recipe_fitter(fp32_path, output, mode, cases, refs, tol, bar, kinds, calibration, size_budget, progress, config_path,
                           per_channel=per_channel, measured=measured, search=search)
    return fit_with_fallback(rec, fitter, output, config_path, progress or (lambda m: None))


def recipe_fitter(input_path: str, output: str, mode: str, cases: list, refs: list, target: Tolerance, bar: Tolerance,
                  kinds: dict | None, calibration: list, size_budget: float, progress, config_path: str | None,
                  per_channel: bool | None = None, measured: dict | None = None, search: bool = True):
    """rec -> (QuantizeResult, FitResult): fit_any() making `output` with the recipe's method, scales (per_channel
    overrides them) and bias-correction setting; the function fit_with_fallback() takes. search=False: each
    recipe's file fully quantized, measured against the bar (a fallback recipe is made when the first misses)."""
    from . import quantize

    def fit_recipe(rec):
        def make(bias_correction):
            def run(extra, search):
                return quantize(input_path, output, mode=mode, method=rec.method,
                                per_channel=rec.per_channel if per_channel is None else per_channel, config_path=config_path,
                                extra_float=extra, search=search, calibration=calibration if bias_correction else None)
            return run

        return fit_any(input_path, output, mode, make, cases, refs, target, bias_correction=rec.bias_correction,
                       size_budget=size_budget, progress=progress, bar=bar, kinds=kinds, measured=measured, search=search)

    return fit_recipe


def fit_with_fallback(rec, fit_recipe, out: str, config_path: str | None, say) -> tuple:
    """fit_recipe(rec) -> (QuantizeResult, FitResult). With a fallback recipe, its file instead when the first
    recipe's file keeps too few integer products (integer_share: its speed-up is gone) or fails; what was tried first
    and why it was not kept go into the result's options and quantize_config.json ("instead_of"). Where the recipe
    kept has alternatives, each is fitted and the smallest file that meets the bar is kept ("candidates")."""
    from . import read_config, write_config
    from .common import integer_share

    instead = None
    if rec.fallback is not None:
        try:
            q, fr = fit_recipe(rec)
        except FitError as e:
            why = str(e)
        else:
            share = integer_share(out)
            if share >= rec.min_integer_share:
                return q, fr
            how = describe_kept(fr.kept_float) if fr.kept_float else "every node quantized"
            why = (f"kept its decisions with {how}, leaving {share:.0%} of the weights of its products in integer kernels "
                   f"(under {rec.min_integer_share:.0%}: too little speed-up left)")
        say(f"{rec.method} {why}; making {rec.fallback.method} instead")
        instead = {"method": rec.method, "why": why}
        rec = rec.fallback
    q, fr = smallest_candidate(rec, fit_recipe, say)
    if instead:
        q = dataclasses.replace(q, options={**q.options, "instead_of": instead})
    record = {k: q.options[k] for k in ("instead_of", "candidates") if k in q.options}  # beside the file's own options
    if record and config_path:
        name = os.path.basename(out)
        write_config(config_path, name, {**read_config(config_path, name), **record})
    return q, fr


def smallest_candidate(rec, fit_recipe, say) -> tuple:
    """fit_recipe(rec), and where rec has alternatives each of them too: the smallest file that meets the bar is kept
    (the first on a tie), made again when it was not the last one made (the search is deterministic). The options
    of the result list every candidate's figures ("candidates")."""
    if not rec.alternatives:
        return fit_recipe(rec)
    tried, best, last = [], None, None
    for i, r in enumerate((rec,) + tuple(rec.alternatives)):
        entry = {"method": r.method, "per_channel": r.per_channel, "why": r.why}
        try:
            q, fr = fit_recipe(r)
        except FitError as e:
            entry.update(kept=False, missed=str(e))
            tried.append(entry)
            last = None
            continue
        entry.update(size_bytes=q.size_bytes, max_abs_prob=round(float(fr.max_abs_prob), 6), metric=fr.metric,
                     nodes_float=len(fr.kept_float), met=fr.met)
        tried.append(entry)
        last = i
        if best is None or q.size_bytes < best[0]:
            best = (q.size_bytes, i, r)
        say(f"{fr.mode} candidate {r.label()}: {q.size_bytes / 1e6:.2f} MB, {fr.metric} {fr.max_abs_prob:.3g}")
    if best is None:
        raise FitError("no recipe of this file kind meets its bar: " + "; ".join(f"{t['method']}: {t['missed']}" for t in tried))
    _, i, r = best
    for j, t in enumerate(tried):
        t["kept"] = j == i
    q, fr = fit_recipe(r) if last != i else (q, fr)
    if last != i:
        say(f"{fr.mode}: kept {r.label()}, the smallest file that meets the bar")
    return dataclasses.replace(q, options={**q.options, "candidates": tried}), fr


def calibration_cases(spec, loaded) -> list:
    """Bias-correction data: the architecture's synthetic suite, long clips left out (the speech clips and the
    user's audio stay unseen by calibration)."""
    return [c for c in spec.cases(loaded) if c.input_values.size <= RANK_SAMPLES]


def load_source(path: str):
    """The PyTorch model an exported file came from, rebuilt from its `voxport.source` metadata."""
    import json

    import onnx

    from ..archs.source import load_source as rebuild
    from ..onnxutil import read_metadata

    meta = read_metadata(onnx.load(path, load_external_data=False))
    source = json.loads(meta.get("voxport.source") or "null")
    if not source:
        raise QuantizeError(f"{path} has no source record in its metadata; export it with `voxport export-model`")
    return rebuild(source, what=path)


def fit_any(fp32_path: str, output: str, mode: str, make_fn, cases: list, refs: list, target: Tolerance,
            bias_correction: bool = False, size_budget: float = SIZE_BUDGET, progress=None, bar: Tolerance | None = None,
            kinds: dict | None = None, measured: dict | None = None, search: bool = True):
    """fit() with the recipe's bias-correction setting, then, if no file within the budget meets the target, with
    the other setting (measured on three ECAPA checkpoints, bias correction helped some files and hurt others:
    the search measures which one this file needs). make_fn(bias_correction) -> quantize_fn for fit().
    search=False: the recipe's setting only, fully quantized, kept if it meets the bar."""
    first = None
    for bc in (bias_correction, not bias_correction) if search else (bias_correction,):
        try:
            return fit(fp32_path, output, mode, make_fn(bc), cases, refs, target, size_budget=size_budget, progress=progress, bar=bar,
                       kinds=kinds, measured=measured, search=search)
        except FitError as e:
            if not search:
                raise
            first = first or e
            if progress:
                progress(f"{e}; trying {'without' if bc else 'with'} bias correction")
    raise FitError(f"{first} (with and without bias correction)")
