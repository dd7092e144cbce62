"""Bias correction: remove the mean output shift that rounding a layer's weights causes.

A quantized weight W + dW shifts the layer's output by dW @ E[x] on average. ECAPA pools the mean and
standard deviation of every channel over time, so such shifts go straight into the embedding; subtracting
them from the layer's bias (E[x] measured on the float model over calibration audio) costs no bytes. Measured
on an ECAPA checkpoint calibrated on speech (C=1024, weight-only per-channel): max |dp| 0.038 -> 0.028,
mean 0.0043 -> 0.0036 over suite and speech.
"""
from __future__ import annotations

import numpy as np


def layer_biases(model, nodes: list) -> dict:
    """node name -> name of the float bias its output gets: a Conv/Gemm's third input, or the initializer
    operand (one axis of size > 1) of the Add that alone consumes a MatMul's output, directly or through a
    Transpose."""
    inits = {i.name: i for i in model.graph.initializer}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = {}
    for node, _ in nodes:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] in inits:
            out[node.name] = node.input[2]
        elif node.op_type == "MatMul":
            t, users = node.output[0], consumers.get(node.output[0], [])
            if len(users) == 1 and users[0].op_type == "Transpose":  # the 1x1-conv form: bias [N, 1] after the transpose
                t, users = users[0].output[0], consumers.get(users[0].output[0], [])
            if len(users) == 1 and users[0].op_type == "Add":
                other = [i for i in users[0].input if i != t]
                if other and other[0] in inits and int(np.prod(inits[other[0]].dims)) == max(inits[other[0]].dims, default=0):
                    out[node.name] = other[0]
    return out


_MEANS: dict = {}  # one build quantizes the same float model several times: measure its activations once


def input_means(fp32_path: str, channel_axis: dict, calibration: list) -> dict:
    """Mean per channel of each named tensor (channel_axis: tensor -> its channel axis: 1 for a Conv input
    [B, C, T], -1 for a MatMul/Gemm input) on the float model over the calibration cases."""
    import os

    key = (os.path.abspath(fp32_path), os.path.getmtime(fp32_path), tuple(sorted(channel_axis.items())),
           tuple(id(c) for c in calibration))
    have = _MEANS.get(key)
    if have is not None:
        return have
    _MEANS.clear()
    _MEANS[key] = _measure(fp32_path, channel_axis, calibration)
    return _MEANS[key]


def _measure(fp32_path: str, channel_axis: dict, calibration: list) -> dict:
    import os
    import tempfile

    import onnx
    import onnxruntime as ort

    from ..onnxutil import load_light

    model = load_light(fp32_path)
    have = {o.name for o in model.graph.output}
    tensors = list(channel_axis)
    for t in tensors:
        if t not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # a model whose weights lie in a side file is run from a copy of its graph beside it (the weights read in place)
    folder = os.path.dirname(os.path.abspath(fp32_path))
    fd, probe = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        onnx.save(model, probe)
        sess = ort.InferenceSession(probe, opts, providers=["CPUExecutionProvider"])
    finally:
        os.remove(probe)
    names = [o.name for o in sess.get_outputs()]
    wants_mask = "attention_mask" in {i.name for i in sess.get_inputs()}
    sums, counts = {}, {}
    for case in calibration:
        feed = {"input_values": case.input_values}
        if wants_mask:
            feed["attention_mask"] = case.attention_mask if case.attention_mask is not None else np.ones_like(case.input_values, dtype=np.int64)
        res = dict(zip(names, sess.run(None, feed)))
        for t in tensors:
            a = res[t].astype(np.float64)
            keep = channel_axis[t] % a.ndim
            axes = tuple(i for i in range(a.ndim) if i != keep)
            sums[t] = sums.get(t, 0.0) + a.sum(axis=axes)
            counts[t] = counts.get(t, 0) + int(np.prod([a.shape[i] for i in axes]))
    return {t: sums[t] / counts[t] for t in tensors}


def correct(model, fp32_path: str, nodes: list, dequantized: dict, calibration: list, base_dir: str = "") -> int:
    """Subtract dW @ E[x] from the bias of each quantized node (in place). nodes: (node, weight name) of the
    float graph; dequantized: weight name -> the values the quantized model holds (its float tensors in a side
    file under base_dir if so). Returns how many biases moved."""
    import os

    import onnx
    from onnx import numpy_helper

    from ..onnxutil import load_light, tensor_array

    src = load_light(fp32_path)
    src_dir = os.path.dirname(os.path.abspath(fp32_path))
    biases = layer_biases(src, [(n, w) for n, w in nodes if w in dequantized])
    if not biases or not calibration:
        return 0
    by_name = {n.name: (n, w) for n, w in nodes}
    axes = {by_name[k][0].input[0]: (1 if by_name[k][0].op_type == "Conv" else -1) for k in biases}
    means = input_means(fp32_path, axes, calibration)
    float_w = {i.name: i for i in src.graph.initializer}
    target = {i.name: i for i in model.graph.initializer}
    done = 0
    for name, bias in biases.items():
        node, w = by_name[name]
        if bias not in target or target[bias].data_type != onnx.TensorProto.FLOAT:
            continue
        dw = dequantized[w].astype(np.float64) - tensor_array(float_w[w], src_dir).astype(np.float64)
        mu = means[node.input[0]]
        if node.op_type == "Conv":
            if dw.ndim != 3 or dw.shape[1] != mu.shape[0]:  # grouped or 2-D convs: not handled
                continue
            shift = np.einsum("oik,i->o", dw, mu)
        elif node.op_type == "Gemm" and next((a.i for a in node.attribute if a.name == "transB"), 0):
            shift = dw @ mu
        else:  # MatMul / Gemm: x [.., K] @ W [K, N]
            shift = mu @ dw
        b = tensor_array(target[bias], base_dir).astype(np.float64)
        if b.size != shift.size:
            continue
        shift = shift.reshape(b.shape)  # [N] or, after a transpose, [N, 1]
        target[bias].CopyFrom(numpy_helper.from_array((b - shift).astype(np.float32), bias))
        done += 1
    return done


def correct_biases(model, input_path: str, keep: list, calibration: list | None, options: dict, base_dir: str = "") -> None:
    """Bias correction (see bias.py) on a quantized model in memory, recorded in options."""
    if not calibration:
        return
    from .common import over_2gb

    if over_2gb(input_path):
        options["bias_correction"] = "not applied: the float model is stored with external data (over 2 GB)"
        return
    import onnx

    from .shipped import shipped_weights, weight_nodes

    nodes = weight_nodes(onnx.load(input_path, load_external_data=False), set(keep))
    moved = correct(model, input_path, nodes, shipped_weights(model, nodes, base_dir), calibration, base_dir)
    options["bias_correction"] = {"layers": moved, "calibration_cases": len(calibration),
                                  "why": "subtracts the mean output shift of each rounded layer (dW @ E[x]); no bytes"}
