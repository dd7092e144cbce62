"""Dynamic quantization: 8-bit weights, activations quantized at run time (ConvInteger / MatMulInteger).

CPU and WASM only: onnxruntime-web has no ConvInteger on WebGPU.
"""
from __future__ import annotations

import logging
import time

from ..errors import QuantizeError
from ..onnxutil import atomic_path
from .common import correct_biases, finish, has_external_data, read_source

# Why each choice:
# - per-channel weights: one scale per output channel keeps small-range channels from rounding to zero.
# - reduce_range for int8 weights only: uint8 x int8 products on AVX2 without VNNI (vpmaddubsw) saturate
#   int16 sums; 7-bit weights avoid it (calibrated C=1024 ECAPA: max |dp| 0.086 -> 0.022). uint8 weights
#   take a path without the overflow, so they keep all 8 bits.
# - the nodes named in metadata `voxport.keep_float` stay float: the exporter derives them from the graph
#   (the audio front end). The power spectrum spans many decades; 8 bits collapse it to one class.
# - onnxruntime first rewrites each Gemm as MatMul + Add (named "<gemm>_MatMul"), then applies the exclusions:
#   a Gemm kept float is excluded under both names.
OP_TYPES = ["Conv", "MatMul", "Gemm"]


def quantize_dynamic_8bit(input_path: str, output: str, per_channel: bool = True, extra_float=(), replace_float=False, search=None, calibration=None, weight_type: str = "QUInt8", mode: str = "q8"):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about pre-processing we already did
    t0 = time.time()
    _, meta, keep = read_source(input_path, extra_float, replace_float)
    reduce_range = weight_type == "QInt8"
    options = {
        "method": "dynamic",
        "weight_type": weight_type,
        "activation_type": "QUInt8",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "op_types": OP_TYPES,
        "nodes_kept_float": keep,
        "why_kept_float": "audio front end (derived from the graph): quantizing it collapses the model to one class",
        "runs_on": "onnxruntime CPU, onnxruntime-web WASM (not WebGPU: no ConvInteger)",
    }
    with atomic_path(output) as tmp:
        try:
            quantize_dynamic(
                input_path, tmp, weight_type=getattr(QuantType, weight_type), per_channel=per_channel, reduce_range=reduce_range,
                op_types_to_quantize=OP_TYPES, nodes_to_exclude=keep + [f"{n}_MatMul" for n in keep], use_external_data_format=has_external_data(input_path),
                extra_options={"MatMulConstBOnly": True},
            )
        except Exception as e:
            raise QuantizeError(f"quantize_dynamic failed on {input_path}: {str(e).splitlines()[0][:300]}") from e
        model = onnx.load(tmp)
        correct_biases(model, input_path, keep, calibration, options)
        result = finish(model, tmp, input_path, meta, mode, options, keep, t0, search=search)
    return result
