"""What a quantized file ships for each weight: which nodes carry weights, and the dequantized values a quantized
file holds for them (what bias correction and the keep-float search compare with the float weights)."""
from __future__ import annotations

import numpy as np

from .common import channel_axis


def weight_nodes(model, keep: set) -> list:
    """(node, weight name) of every Conv / MatMul / Gemm with a weight initializer, not kept float by the exporter."""
    inits = {i.name for i in model.graph.initializer}
    return [(n, n.input[1]) for n in model.graph.node
            if n.op_type in ("Conv", "MatMul", "Gemm") and n.name not in keep and len(n.input) > 1 and n.input[1] in inits]


def shipped_weights(quantized, nodes: list, base_dir: str = "") -> dict:
    """weight name -> the dequantized values a quantized file (path or model) holds for it (weight-only `_int8`
    or the integer products' `_quantized` initializers), for the nodes the method quantized. base_dir: where a
    model's side file is, if it has one."""
    import onnx

    q = onnx.load(quantized) if isinstance(quantized, str) else quantized
    inits = {i.name: i for i in q.graph.initializer}
    out = {}
    for node, w in nodes:
        deq = shipped_weight(inits, node, w, base_dir)
        if deq is not None:
            out[w] = deq
    return out


def shipped_name(inits: dict, w: str):
    """The name the quantized file's initializers (`inits`) hold weight `w` under (+ "_int8" / "_quantized",
    "_scale"), or None when the method left it float."""
    # a Gemm's transB weight is stored transposed, as a MatMul's [K, N]
    base = next((b for b in (w, w + "_Transposed") if any(b + s in inits for s in ("_int8", "_quantized"))), None)
    return base if base is not None and base + "_scale" in inits else None


def shipped_weight(inits: dict, node, w: str, base_dir: str = ""):
    """The dequantized values the quantized file's initializers (`inits`, data in a side file under base_dir if
    so) hold for node's weight `w`, or None when the method left it float."""
    from ..onnxutil import tensor_array

    base = shipped_name(inits, w)
    if base is None:
        return None
    qname = next(base + s for s in ("_int8", "_quantized") if base + s in inits)
    # in float32, as onnxruntime restores a weight-only file's weights (Cast + Mul): the same values
    qv = tensor_array(inits[qname], base_dir).astype(np.float32)
    scale = tensor_array(inits[base + "_scale"], base_dir).astype(np.float32)
    zp = (tensor_array(inits[base + "_zero_point"], base_dir).astype(np.float32) if base + "_zero_point" in inits
          else np.zeros_like(scale))
    transposed = base != w
    if scale.size > 1:
        shape = [1] * qv.ndim
        shape[qv.ndim - 1 if transposed else channel_axis(node, qv.shape)] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    if np.any(zp):
        qv -= zp
    qv *= scale  # in place: one float copy of the weight in all
    return np.ascontiguousarray(qv.T) if transposed else qv


def integer_nodes(names: set, nodes: list) -> set:
    """Names of the nodes whose weights the quantized file (its initializer `names`) holds for an integer kernel
    (`_quantized` initializers; weight-only `_int8` ones compute in float)."""
    return {n.name for n, w in nodes if w + "_quantized" in names or w + "_Transposed_quantized" in names}
