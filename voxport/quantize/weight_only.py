"""Weight-only int8: int8 weights + DequantizeLinear, float compute.

No ConvInteger / MatMulInteger / DynamicQuantizeLinear, so the file runs wherever the fp32 one does
(WebGPU included); activations stay float, so the only error is weight rounding.
"""
from __future__ import annotations

import time

import numpy as np

from ..onnxutil import atomic_path
from .common import correct_biases, finish, initializer_map, read_source

MIN_ELEMENTS = 1024  # smaller weights (biases, tiny convs) are not worth a DequantizeLinear


def channel_axis(node, w_dims) -> int:
    """The output-channel axis of a Conv / Gemm / MatMul weight (the axis per-channel scales run along)."""
    # Conv/ConvTranspose weight: [out, in, k] -> per output channel on axis 0; MatMul B [K, N] -> axis 1
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return len(w_dims) - 1


def quantize_weight_only(input_path: str, output: str, per_channel: bool = True, extra_float=(), replace_float=False, search=None, calibration=None, mode: str = "q8"):
    import onnx
    from onnx import helper, numpy_helper

    t0 = time.time()
    _, meta, keep = read_source(input_path, extra_float, replace_float)
    model = onnx.load(input_path)
    inits = initializer_map(model)
    keep_set = set(keep)
    uses = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    new_nodes, done = [], 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm") and node.name not in keep_set:
            wname = node.input[1]
            w = inits.get(wname)
            if w is not None and uses.get(wname) == 1 and w.data_type == onnx.TensorProto.FLOAT and np.prod(w.dims) >= MIN_ELEMENTS:
                arr = numpy_helper.to_array(w)
                axis = channel_axis(node, w.dims)
                if per_channel:
                    red = tuple(i for i in range(arr.ndim) if i != axis)
                    scale = np.abs(arr).max(axis=red) / 127.0
                else:
                    scale = np.array(np.abs(arr).max() / 127.0)
                scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
                shape = [1] * arr.ndim
                if per_channel:
                    shape[axis] = -1
                q = np.clip(np.round(arr / scale.reshape(shape)), -127, 127).astype(np.int8)
                model.graph.initializer.remove(w)
                model.graph.initializer.extend([
                    numpy_helper.from_array(q, wname + "_int8"),
                    numpy_helper.from_array(scale, wname + "_scale"),
                    numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), wname + "_zero_point"),
                ])
                attrs = {"axis": axis} if per_channel else {}
                new_nodes.append(helper.make_node("DequantizeLinear", [wname + "_int8", wname + "_scale", wname + "_zero_point"],
                                                  [wname], name=wname + "_dequantize", **attrs))
                done += 1
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    options = {
        "method": "weight-only",
        "weight_type": "QInt8 (symmetric)",
        "activation_type": "float32",
        "per_channel": per_channel,
        "op_types": ["Conv", "MatMul", "Gemm"],
        "weights_quantized": done,
        "nodes_kept_float": keep,
        "why_kept_float": "audio front end (derived from the graph)",
        "runs_on": "everywhere fp32 runs, WebGPU included (DequantizeLinear + float compute)",
    }
    correct_biases(model, input_path, keep, calibration, options)
    with atomic_path(output) as tmp:
        result = finish(model, tmp, input_path, meta, mode, options, keep, t0, search=search)
    return result
