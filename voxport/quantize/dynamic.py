"""Dynamic quantization: 8-bit weights, activations quantized at run time (ConvInteger / MatMulInteger).

Integer kernels run on onnxruntime's CPU and onnxruntime-web's WASM; under WebGPU they run on its CPU fallback.
"""
from __future__ import annotations

import logging
import time

from ..errors import QuantizeError
from ..onnxutil import atomic_path, file_size
from .common import correct_biases, finish, over_2gb, read_source, store_int8

# Why each choice:
# - per-channel weights: one scale per output channel keeps small-range channels from rounding to zero.
# - reduce_range for int8 weights by default: uint8 x int8 products on AVX2 without VNNI (vpmaddubsw) saturate
#   int16 sums; 7-bit weights avoid it (calibrated C=1024 ECAPA: max |dp| 0.086 -> 0.022). uint8 weights
#   take a path without the overflow, so they keep all 8 bits, but u8 x u8 has no VNNI kernel: "dynamic-s8"
#   (int8 weights, 7-bit range) ran 0.53x fp32 against 0.73x for QUInt8 weights (C=1024 ECAPA, MatMul form), and
#   its outputs under an emulated Haswell (AVX2, no VNNI) equal VNNI's within 1.2e-7 (8-bit weights: 0.028 -> 0.098).
# - the nodes named in metadata `voxport.keep_float` stay float: the exporter derives them from the graph
#   (the audio front end). The power spectrum spans many decades; 8 bits collapse it to one class.
# - onnxruntime first rewrites each Gemm as MatMul + Add (named "<gemm>_MatMul"), then applies the exclusions:
#   a Gemm kept float is excluded under both names.
OP_TYPES = ["Conv", "MatMul", "Gemm"]
APART_ABOVE = 256 << 20  # float files larger than this are quantized in a child process


def _in_child(input_path: str, output: str, kw: dict) -> str:
    """_run_quantize_dynamic in a new interpreter (whatever the caller's main module does on import)."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from voxport.quantize.dynamic import _run_quantize_dynamic as q; "
            "a = json.loads(sys.argv[1]); sys.stdout.write(json.dumps(q(a['input'], a['output'], **a['kw'])))")
    args = json.dumps({"input": input_path, "output": output, "kw": kw})
    p = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
    if p.returncode:
        lines = (p.stderr or "").strip().splitlines()
        return lines[-1][:300] if lines else f"the quantizer process exited with {p.returncode}"
    return json.loads(p.stdout or '""')


def _run_quantize_dynamic(input_path: str, output: str, weight_type: str, per_channel: bool, reduce_range: bool,
                          nodes_to_exclude: list, external: bool, op_types: list = OP_TYPES) -> str:
    """onnxruntime's quantize_dynamic; returns "" or the first line of its error."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            input_path, output, weight_type=getattr(QuantType, weight_type), per_channel=per_channel, reduce_range=reduce_range,
            op_types_to_quantize=list(op_types), nodes_to_exclude=nodes_to_exclude, use_external_data_format=external,
            extra_options={"MatMulConstBOnly": True},
        )
    except Exception as e:
        return str(e).splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return ""


def quantize_dynamic_8bit(input_path: str, output: str, per_channel: bool = True, extra_float=(), replace_float=False, search=None,
                          calibration=None, weight_type: str = "QUInt8", mode: str = "q8", reduce_range: bool | None = None,
                          op_types=tuple(OP_TYPES)):
    """op_types: the ops quantized at run time; the other Conv / MatMul / Gemm weights are stored as int8 with
    float compute (weight-only), e.g. Conv kept off ConvInteger, which runs slower than float Conv on
    onnxruntime's CPU kernels for ECAPA's small convolutions (5.3 ms against 2.1 ms per 3 s at C=512)."""
    import onnx

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about pre-processing we already did
    t0 = time.time()
    _, meta, keep = read_source(input_path, extra_float, replace_float)
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
        kw = dict(weight_type=weight_type, per_channel=per_channel, reduce_range=reduce_range,
                  nodes_to_exclude=keep + [f"{n}_MatMul" for n in keep], external=over_2gb(input_path), op_types=list(op_types))
        if file_size(input_path) > APART_ABOVE:
            # onnxruntime's quantizer holds three copies of the float model (it saves and reloads a deep copy to
            # refresh shape annotations): 3.9 GB for XLS-R-300M. A fresh interpreter without PyTorch does it, so
            # that peak is not added to this process's; its peak is counted as the build's children's.
            err = _in_child(input_path, tmp, kw)
        else:
            err = _run_quantize_dynamic(input_path, tmp, **kw)
        if err:
            raise QuantizeError(f"quantize_dynamic failed on {input_path}: {err}")
        model = onnx.load(tmp)
        rest = [t for t in OP_TYPES if t not in op_types]
        if rest:
            kept = set(keep)
            options["weight_only"] = {"op_types": rest, "nodes": store_int8(
                model, lambda n: n.op_type in rest and n.name not in kept, per_channel=per_channel)}
        correct_biases(model, input_path, keep, calibration, options)
        result = finish(model, tmp, input_path, meta, mode, options, keep, t0, search=search)
    return result
