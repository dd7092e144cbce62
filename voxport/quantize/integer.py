"""Run-time 8-bit products written one weight at a time: MatMul -> MatMulInteger, Conv -> ConvInteger.

The graph this writes is the one onnxruntime's quantize_dynamic writes (same nodes, names, rounding and values), so
onnxruntime's session-time fusion (DynamicQuantizeLinear + MatMulInteger + Cast + Mul -> DynamicQuantizeMatMul)
applies as before. What differs is memory: onnxruntime's quantizer loads every float weight and holds three copies
of the model (3.9 GB for XLS-R-300M, 11.7 GB for XLS-R-1B); this reads each weight from the source's side file when
its node is rewritten and keeps only the 8-bit results.

The rules it keeps (onnxruntime 1.2x-1.3x, IntegerOps mode):
- activations: one DynamicQuantizeLinear (uint8, asymmetric) per tensor, shared by every product that reads it;
- MatMul weights (constant B only): per output column when per_channel, 7-bit when reduce_range;
- Conv weights: one scale per tensor (onnxruntime's ConvInteger rule), 7-bit when reduce_range; bias added after;
- int8 weights are symmetric (zero point 0), uint8 weights asymmetric;
- a Gemm (alpha = beta = 1, no transA) becomes "<name>_MatMul" + "<name>_Add" first, its transB weight transposed.
"""
from __future__ import annotations

import numpy as np

from ..onnxutil import tensor_array

TYPES = {"QInt8": (np.int8, -128, 127), "QUInt8": (np.uint8, 0, 255)}


def weight_range(weight_type: str, reduce_range: bool) -> tuple:
    """(qmin, qmax) a weight is scaled into."""
    if weight_type == "QInt8":
        return (-64, 64) if reduce_range else (-127, 127)
    return (0, 127) if reduce_range else (0, 255)


def quantize_weight(w: np.ndarray, weight_type: str, reduce_range: bool, axis: int | None):
    """(8-bit values, scale float32, zero point) of `w`, per slice along `axis` (None: one for the tensor)."""
    dtype, lo, hi = TYPES[weight_type]
    qmin, qmax = weight_range(weight_type, reduce_range)
    w = np.asarray(w, dtype=np.float32)
    red = tuple(i for i in range(w.ndim) if axis is None or i != axis % w.ndim)
    rmin = np.minimum(w.min(axis=red), np.float32(0))
    rmax = np.maximum(w.max(axis=red), np.float32(0))
    symmetric = weight_type == "QInt8"
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax
    scale64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / float(qmax - qmin)
    tiny = scale64 < np.finfo(np.float32).tiny
    if symmetric:
        zp = np.full(scale64.shape, round((qmin + qmax) / 2.0), dtype=np.float64)
    else:
        zp = np.round(qmin - rmin / np.where(tiny, 1.0, scale64))
    scale = np.where(tiny, 1.0, scale64).astype(np.float32)
    zp = np.where(tiny, 0, zp).astype(dtype)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis % w.ndim] = -1
    q = np.round(w / scale.reshape(shape)) + zp.reshape(shape).astype(np.float32)
    np.clip(q, lo, hi, out=q)
    return q.astype(dtype), scale, zp


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def quantize_products(model, base_dir: str, weight_type: str, per_channel: bool, reduce_range: bool,
                      op_types=("Conv", "MatMul", "Gemm"), exclude=(), progress=None) -> int:
    """Rewrite the model's Conv / MatMul / Gemm nodes of `op_types` whose weight is an initializer (and whose name is
    not in `exclude`) into integer products, in place. Weights are read one at a time (from a side file under
    base_dir when the model was loaded without them); float initializers no longer used are dropped.
    Returns how many products it rewrote."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    qtype = TensorProto.INT8 if weight_type == "QInt8" else TensorProto.UINT8
    exclude = set(exclude)
    activations, weights = {}, {}
    new_inits, out_nodes, done = [], [], 0

    def eligible(node) -> bool:
        """A product of op_types, not excluded, with a float weight initializer and an activation as its first
        input; a Gemm only in the form that is a MatMul + Add (alpha = beta = 1, no transA)."""
        if node.op_type not in op_types or node.name in exclude or len(node.input) < 2 or node.input[1] not in inits:
            return False
        if inits[node.input[1]].data_type != TensorProto.FLOAT:
            return False
        if node.op_type == "Conv":
            return True
        a = _attrs(node) if node.op_type == "Gemm" else {}
        if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
            return False
        return node.input[0] not in inits  # a constant A is not an activation

    total = sum(1 for n in model.graph.node if eligible(n))

    def quantize_activation(name: str, nodes: list) -> tuple:
        if name not in activations:
            nodes.append(helper.make_node("DynamicQuantizeLinear", [name], [name + "_quantized", name + "_scale", name + "_zero_point"],
                                          name + "_QuantizeLinear"))
            activations[name] = (name + "_quantized", name + "_scale", name + "_zero_point")
        return activations[name]

    def weight(name: str, arr_fn, axis, reduce: bool) -> tuple:
        if name not in weights:
            q, scale, zp = quantize_weight(arr_fn(), weight_type, reduce, axis)
            dims = [] if axis is None else [int(scale.size)]
            new_inits.append(numpy_helper.from_array(q, name + "_quantized"))
            new_inits.append(helper.make_tensor(name + "_scale", TensorProto.FLOAT, dims, scale.reshape(-1).tolist()))
            new_inits.append(helper.make_tensor(name + "_zero_point", qtype, dims, zp.reshape(-1).tolist()))
            weights[name] = (name + "_quantized", name + "_scale", name + "_zero_point")
        return weights[name]

    def integer_product(node, op: str, w_name: str, arr_fn, axis, reduce: bool, nodes: list, out: str, **attrs):
        xq, xs, xz = quantize_activation(node.input[0], nodes)
        wq, ws, wz = weight(w_name, arr_fn, axis, reduce)
        qname = node.name + "_quant"
        y = out + "_output_quantized"
        nodes.append(helper.make_node(op, [xq, wq, xz, wz], [y], qname, **attrs))
        nodes.append(helper.make_node("Cast", [y], [y + "_cast_output"], y + "_cast", to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", [xs, ws], [qname + "_scales_mul:0"], qname + "_scales_mul"))
        return y + "_cast_output", qname + "_scales_mul:0", qname

    for node in model.graph.node:
        if not eligible(node):
            out_nodes.append(node)
            continue
        w = inits[node.input[1]]
        nodes = []
        if node.op_type == "Conv":
            a = _attrs(node)
            y, s, qname = integer_product(node, "ConvInteger", w.name, lambda: tensor_array(w, base_dir), None, reduce_range,
                                          nodes, node.output[0], **a)
            if len(node.input) > 2 and node.input[2]:
                scaled = node.output[0] + "quant_scaled_output"
                nodes.append(helper.make_node("Mul", [y, s], [scaled], qname + "_output_scale_mul"))
                shape_name = node.output[0] + "_bias_reshape_shape"
                shape = np.ones(len(w.dims), dtype=np.int64)
                shape[1] = -1
                new_inits.append(numpy_helper.from_array(shape, shape_name))
                nodes.append(helper.make_node("Reshape", [node.input[2], shape_name], [node.output[0] + "_bias_reshape_output"]))
                nodes.append(helper.make_node("Add", [scaled, node.output[0] + "_bias_reshape_output"], [node.output[0]],
                                              node.output[0] + "_bias_add"))
            else:
                nodes.append(helper.make_node("Mul", [y, s], [node.output[0]], qname + "_output_scale_mul"))
        else:
            mm, arr_fn, w_name = node, (lambda: tensor_array(w, base_dir)), w.name
            if node.op_type == "Gemm":
                a = _attrs(node)
                gemm_out = node.output[0]
                mm = helper.make_node("MatMul", [node.input[0], w.name], [gemm_out + "_MatMul"] if len(node.input) > 2 else [gemm_out],
                                      node.name + "_MatMul")
                if a.get("transB", 0):
                    w_name = w.name + "_Transposed"
                    arr_fn = lambda w=w: np.ascontiguousarray(tensor_array(w, base_dir).T)  # noqa: E731
            y, s, qname = integer_product(mm, "MatMulInteger", w_name, arr_fn, -1 if per_channel else None, reduce_range,
                                          nodes, mm.output[0])
            nodes.append(helper.make_node("Mul", [y, s], [mm.output[0]], qname + "_output_scale_mul"))
            if mm is not node and len(node.input) > 2:
                nodes.append(helper.make_node("Add", [mm.output[0], node.input[2]], [node.output[0]], node.name + "_Add"))
        out_nodes.extend(nodes)
        done += 1
        if progress:
            progress(done, total)
    used = {i for n in out_nodes for i in n.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.node[:]
    model.graph.node.extend(out_nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + new_inits)
    return done
