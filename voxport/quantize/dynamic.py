"""Dynamic quantization: 8-bit weights, activations quantized at run time (ConvInteger / MatMulInteger).

Integer kernels run on onnxruntime's CPU and onnxruntime-web's WASM; under WebGPU they run on its CPU fallback.
"""
from __future__ import annotations

import functools
import os
import time

from ..errors import QuantizeError
from ..onnxutil import atomic_path
from .bias import correct_biases
from .common import finish, read_source, store_int8
from .integer import quantize_products

# Why each choice:
# - per-channel weights: one scale per output channel keeps small-range channels from rounding to zero (MatMul;
#   ConvInteger takes one scale per tensor, onnxruntime's rule, see integer.py).
# - reduce_range for int8 weights by default: uint8 x int8 products on AVX2 without VNNI (vpmaddubsw) saturate
#   int16 sums; 7-bit weights avoid it (calibrated C=1024 ECAPA: max |dp| 0.086 -> 0.022). uint8 weights
#   take a path without the overflow, so they keep all 8 bits, but u8 x u8 has no VNNI kernel: "dynamic-s8"
#   (int8 weights, 7-bit range) ran 0.53x fp32 against 0.73x for QUInt8 weights (C=1024 ECAPA, MatMul form), and
#   its outputs under an emulated Haswell (AVX2, no VNNI) equal VNNI's within 1.2e-7 (8-bit weights: 0.028 -> 0.098).
# - the nodes named in metadata `voxport.keep_float` stay float: the exporter derives them from the graph
#   (the audio front end). The power spectrum spans many decades; 8 bits collapse it to one class.
# - the graph is onnxruntime's quantize_dynamic's, written by integer.py one weight at a time: onnxruntime's
#   quantizer held three copies of the float model (3.9 GB for XLS-R-300M, 11.7 GB for XLS-R-1B).
OP_TYPES = ["Conv", "MatMul", "Gemm"]


def _shipped_rule(node, w, weight_type: str, per_channel: bool, reduce_range: bool) -> tuple:
    """A weight as quantize_products ships it for the node's integer kernel (Conv: one scale per tensor; MatMul: per
    output column when per_channel; a transB Gemm's weight per row), broadcastable against the weight."""
    import numpy as np

    from .integer import quantize_weight

    axis = None
    if per_channel and node.op_type == "MatMul":
        axis = w.ndim - 1
    elif per_channel and node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        axis = 0 if trans_b else 1
    q, scale, zp = quantize_weight(w, weight_type, reduce_range, axis)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    return q, np.asarray(scale, np.float32).reshape(shape), np.asarray(zp, np.float32).reshape(shape)


def quantize_dynamic_8bit(input_path: str, output: str, per_channel: bool = True, extra_float=(), replace_float=False, search=None,
                          calibration=None, weight_type: str = "QUInt8", mode: str = "q8", reduce_range: bool | None = None,
                          op_types=tuple(OP_TYPES)):
    """op_types: the ops quantized at run time; the other Conv / MatMul / Gemm weights are stored as int8 with
    float compute (weight-only), e.g. Conv kept off ConvInteger, which runs slower than float Conv on
    onnxruntime's CPU kernels for ECAPA's small convolutions (5.3 ms against 2.1 ms per 3 s at C=512)."""
    t0 = time.time()
    model, meta, keep = read_source(input_path, extra_float, replace_float)  # the weights stay in a side file if there is one
    base = os.path.dirname(os.path.abspath(input_path))
    if reduce_range is None:
        reduce_range = weight_type == "QInt8"
    options = {
        "method": "dynamic",
        "weight_type": weight_type,
        "activation_type": "QUInt8",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "op_types": list(op_types),
        "nodes_kept_float": keep,
        "why_kept_float": "audio front end (derived from the graph): quantizing it collapses the model to one class",
        "runs_on": ("onnxruntime CPU, onnxruntime-web WASM; on WebGPU the integer MatMuls run on onnxruntime-web's CPU "
                    "fallback (verified in Chromium with SwiftShader)") if "Conv" not in op_types else
                   "onnxruntime CPU, onnxruntime-web WASM",
    }
    with atomic_path(output) as tmp:
        try:
            quantize_products(model, base, weight_type, per_channel, reduce_range, op_types, keep)
        except (ValueError, KeyError, OSError) as e:
            raise QuantizeError(f"8-bit quantization failed on {input_path}: {e}") from None
        rest = [t for t in OP_TYPES if t not in op_types]
        if rest:
            kept = set(keep)
            options["weight_only"] = {"op_types": rest, "nodes": store_int8(
                model, lambda n: n.op_type in rest and n.name not in kept, per_channel, base)}
        correct_biases(model, input_path, keep, calibration, options, base)
        result = finish(model, tmp, input_path, meta, mode, options, keep, t0, search=search, base_dir=base,
                        shipped_rule=functools.partial(_shipped_rule, weight_type=weight_type, per_channel=per_channel,
                                                       reduce_range=reduce_range))
    return result
