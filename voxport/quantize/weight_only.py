"""Weight-only int8: int8 weights, float compute.

Each weight is stored as int8 with its scale and restored by Cast + Mul. onnxruntime (native and web) folds
those constants once, at session creation, so the file runs at the fp32 file's speed; DequantizeLinear is
never folded (onnxruntime keeps it for its QDQ fusions) and would dequantize every weight on every run
(37 DequantizeLinear nodes per run in ECAPA C=1024, measured with the optimized-model dump of onnxruntime 1.32).
No ConvInteger / MatMulInteger / DynamicQuantizeLinear, so the file runs wherever the fp32 one does (WebGPU
included); activations stay float, so the only error is weight rounding.
"""
from __future__ import annotations

import os
import time

from ..onnxutil import atomic_path
from .bias import correct_biases
from .common import finish, read_source, store_int8


def quantize_weight_only(input_path: str, output: str, per_channel: bool = True, extra_float=(), replace_float=False, search=None, calibration=None, mode: str = "q8"):
    t0 = time.time()
    model, meta, keep = read_source(input_path, extra_float, replace_float)  # the weights stay in a side file if there is one
    base = os.path.dirname(os.path.abspath(input_path))
    keep_set = set(keep)
    done = store_int8(model, lambda node: node.name not in keep_set, per_channel, base)
    options = {
        "method": "weight-only",
        "weight_type": "QInt8 (symmetric)",
        "activation_type": "float32",
        "per_channel": per_channel,
        "op_types": ["Conv", "MatMul", "Gemm"],
        "weights_quantized": done,
        "nodes_kept_float": keep,
        "why_kept_float": "audio front end (derived from the graph)",
        "dequantized": "at session creation (Cast + Mul constants, folded by onnxruntime): fp32 speed and memory at run time",
        "runs_on": "everywhere fp32 runs, WebGPU included (float compute)",
    }
    correct_biases(model, input_path, keep, calibration, options, base)
    with atomic_path(output) as tmp:
        result = finish(model, tmp, input_path, meta, mode, options, keep, t0, search=search, base_dir=base)
    return result
