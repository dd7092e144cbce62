"""Transformer-encoder fusions written into the shipped graph, limited to ops every Transformers.js runtime runs.

onnxruntime fuses some patterns itself when a session starts (BiasGelu, FusedMatMul, SkipLayerNormalization on
CPU), but never attention: that fusion exists only in its offline optimizer (onnxruntime.transformers), and
onnxruntime-web's WebGPU and WASM sessions apply fewer fusions than native CPU. So the file carries them:

- com.microsoft SkipLayerNormalization (residual Add + LayerNormalization),
- com.microsoft Gelu (the exact erf form: no approximation, so float parity is unchanged),
- com.microsoft Attention (one packed QKV MatMul, softmax and the weighted sum in one kernel), only when asked.

All three are in onnxruntime's CPU contrib ops (Python, Node, the WASM build) and in onnxruntime-web's WebGPU
operator table. Left out on purpose: BiasGelu (not in the WebGPU table; native onnxruntime fuses Add + Gelu into
it at session start anyway), FastGelu and the Gelu approximation (tanh form: changes the numbers), EmbedLayerNorm.
Attention is opt-in: its WebGPU kernel has no mask input, and where it runs it moved Chromium WebGPU's output by
1.3e-3 in probabilities against onnxruntime on the same file (see Wav2Vec2Spec.fuse); the q8 quantizer would also
have to know it (onnxruntime's quantize_dynamic makes QAttention only when "Attention" is among its op types).
"""
from __future__ import annotations

import collections
import logging

import numpy as np

FUSED_OPS = ("Attention", "SkipLayerNormalization", "Gelu")


def _constant(model, name: str):
    """The value of an initializer or a Constant node's output, else None."""
    from onnx import numpy_helper

    for i in model.graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name and n.attribute and n.attribute[0].name == "value":
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def scale_as_div(model) -> int:
    """Softmax(Mul(QK^T, c)) -> Softmax(Div(QK^T, 1/c)): transformers scales the scores with a Mul, onnxruntime's
    attention matcher expects the Div of the original BERT graph. For head size 64 (c = 1/8) both are exact; for
    other sizes they differ by one float rounding. Returns how many scores were rewritten."""
    from onnx import helper, numpy_helper

    producer = {o: n for n in model.graph.node for o in n.output}
    done = 0
    for sm in [n for n in model.graph.node if n.op_type == "Softmax"]:
        mul = producer.get(sm.input[0])
        if mul is None or mul.op_type != "Mul":
            continue
        for k in (0, 1):
            c = _constant(model, mul.input[1 - k])
            scores = producer.get(mul.input[k])
            if c is not None and c.size == 1 and float(c) > 0 and scores is not None and scores.op_type == "MatMul":
                name = (mul.name or mul.output[0]) + "_divisor"
                model.graph.initializer.append(numpy_helper.from_array(np.array(1.0 / float(c), np.float32), name))
                div = helper.make_node("Div", [mul.input[k], name], list(mul.output), name=(mul.name or mul.output[0]) + "_div")
                idx = list(model.graph.node).index(mul)
                model.graph.node.remove(mul)
                model.graph.node.insert(idx, div)
                done += 1
                break
    return done


def fuse_encoder(model, num_heads: int, hidden_size: int, attention: bool = False):
    """The model with the fusions above (in memory; the input is changed too). Returns (model, fused op counts).
    attention: fuse attention too (only where no mask feeds it)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.onnx_model_bert import BertOnnxModel

    for name in ("onnxruntime.transformers", "fusion_base", "onnx_model", "fusion_utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if attention:
        scale_as_div(model)
    opts = FusionOptions("bert")
    opts.enable_attention = attention
    opts.enable_bias_gelu = False
    opts.enable_gelu_approximation = False
    opts.enable_embed_layer_norm = False
    opts.enable_bias_skip_layer_norm = False  # keeps SkipLayerNormalization at its 3-5 inputs form WebGPU lists
    opts.enable_qordered_matmul = False
    opts.enable_shape_inference = False
    # the norm and Gelu matchers read only small constants: the weights are set aside meanwhile, so that whatever the
    # optimizer copies holds no weights (attention fusion concatenates the QKV weights: not then)
    aside = {}
    if not attention:
        for t in model.graph.initializer:
            if len(t.raw_data) > 1 << 20:
                aside[t.name] = t.raw_data
                t.ClearField("raw_data")
    try:
        bert = BertOnnxModel(model, num_heads=num_heads, hidden_size=hidden_size)
        bert.optimize(opts, add_dynamic_axes=False)
        bert.topological_sort()
    finally:
        for t in model.graph.initializer:
            if t.name in aside:
                t.raw_data = aside[t.name]
    for t in bert.model.graph.initializer:  # the same tensors, if the optimizer works on a copy
        if t.name in aside:
            t.raw_data = aside[t.name]
    fused = collections.Counter(n.op_type for n in bert.model.graph.node if n.domain == "com.microsoft")
    if fused and not any(o.domain == "com.microsoft" for o in bert.model.opset_import):
        from onnx import helper

        bert.model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return bert.model, {op: fused.get(op, 0) for op in FUSED_OPS if attention or op != "Attention"}

