"""fp16: float16 weights and compute, float32 inputs and outputs, the front end kept float32.

Written out rather than taken from a converter: a published fp16 ECAPA made with a generic converter
failed to load ("Type (tensor(float16)) of output arg ... of node Cast"). Here every float tensor gets
exactly one type, a Cast sits at each border between the float32 and float16 regions, and the file
is loaded by onnxruntime before it is written.
"""
from __future__ import annotations

import time

import numpy as np

from ..onnxutil import atomic_path, reinfer_shapes, topological_sort
from .common import finish, read_source

# The power spectrum exceeds float16's 65504 and its log needs values near 1e-6: the front end and the
# first Log stay float32 (the exporter's keep-float list plus the Log itself).
FLOAT, FLOAT16 = 1, 10


def to_fp16(model, keep: set):
    import onnx
    from onnx import helper, numpy_helper

    model = reinfer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    inits = {i.name: i for i in model.graph.initializer}
    for name, i in inits.items():
        types[name] = i.data_type
    g = model.graph
    is_float = lambda name: types.get(name) == FLOAT  # noqa: E731
    half = [n for n in g.node if n.name not in keep]
    half_names = {n.name for n in half}
    # float tensors produced in the fp16 region become fp16
    produced16 = {o for n in half for o in n.output if is_float(o)}
    # initializers used only by fp16 nodes are stored as fp16; shared ones get a Cast
    users = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, set()).add(n.name)
    init16 = {name for name, i in inits.items() if i.data_type == FLOAT and users.get(name) and users[name] <= half_names}
    for name in init16:
        arr = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array(np.clip(arr, -65504, 65504).astype(np.float16), name))
    new_nodes, casts = [], {}

    def cast(src, to, suffix):
        key = (src, to)
        if key not in casts:
            out = f"{src}_{suffix}"
            casts[key] = out
            new_nodes.append(helper.make_node("Cast", [src], [out], name=f"{out}_cast", to=to))
        return casts[key]

    for n in g.node:
        if n.name in half_names:
            for k, i in enumerate(n.input):
                if i and is_float(i) and i not in produced16 and i not in init16:
                    n.input[k] = cast(i, FLOAT16, "fp16")
            for a in n.attribute:
                if n.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                    a.i = FLOAT16
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        else:
            for k, i in enumerate(n.input):
                if i in produced16:
                    n.input[k] = cast(i, FLOAT, "fp32")
        new_nodes.append(n)
    for o in g.output:
        if o.name in produced16:
            inner = o.name + "_fp16out"
            for n in new_nodes:
                for k, x in enumerate(n.output):
                    if x == o.name:
                        n.output[k] = inner
                for k, x in enumerate(n.input):
                    if x == o.name:
                        n.input[k] = inner
            new_nodes.append(helper.make_node("Cast", [inner], [o.name], name=o.name + "_cast", to=FLOAT))
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]
    topological_sort(model)
    onnx.checker.check_model(model)
    return model


def quantize_fp16(input_path: str, output: str, per_channel: bool = True, extra_float=(), replace_float=False, search=None, calibration=None, mode: str = "fp16"):
    import onnx
    import onnxruntime as ort

    t0 = time.time()
    _, meta, keep = read_source(input_path, extra_float, replace_float)
    model = onnx.load(input_path)
    block = list(keep)
    first_log = next((n.name for n in model.graph.node if n.op_type == "Log"), None)
    if first_log:
        block.append(first_log)
    model = to_fp16(model, set(block))
    options = {
        "method": "float16",
        "keep_io_types": True,
        "nodes_kept_float": block,
        "why_kept_float": "front end: the power spectrum overflows float16",
        "runs_on": "onnxruntime CPU/GPU, WASM, WebGPU (shader-f16 adapters)",
    }
    with atomic_path(output) as tmp:
        result = finish(model, tmp, input_path, meta, mode, options, block, t0, search=search)
        ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])  # it must load
    return result
