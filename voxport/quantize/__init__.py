"""Quantize stage: one module per method; each takes an ONNX file and writes another."""
from __future__ import annotations

import dataclasses
import functools
import json
import os

from ..errors import QuantizeError
from .common import Skipped
from .dynamic import quantize_dynamic_8bit
from .fp16 import quantize_fp16
from .q4 import quantize_q4
from .weight_only import quantize_weight_only

# q8 methods: "dynamic" (ConvInteger, CPU/WASM) or "weight-only" (DequantizeLinear, runs on WebGPU too)
Q8_METHODS = {
    "dynamic": functools.partial(quantize_dynamic_8bit, weight_type="QUInt8", mode="q8"),
    "weight-only": functools.partial(quantize_weight_only, mode="q8"),
}
# mode (Transformers.js dtype) -> method
MODES = {
    "q8": None,  # chosen by q8_method
    "int8": functools.partial(quantize_dynamic_8bit, weight_type="QInt8", mode="int8"),
    "uint8": functools.partial(quantize_dynamic_8bit, weight_type="QUInt8", mode="uint8"),
    "fp16": quantize_fp16,
    "q4": functools.partial(quantize_q4, mode="q4"),
    "q4f16": functools.partial(quantize_q4, mode="q4f16", fp16=True),
}
# Each architecture names its q8 method (ArchSpec.q8_method); this is the fallback.
DEFAULT_Q8_METHOD = "weight-only"


def quantize(input_path: str, output: str, mode: str = "q8", method: str | None = None, per_channel: bool = True,
             config_path: str | None = None, extra_float=(), replace_float=False, write_config_file: bool = True,
             search: dict | None = None, calibration: list | None = None):
    """Write `output` from `input_path` in `mode` and record the options in quantize_config.json beside it.
    calibration: verify cases whose float activations drive bias correction (8-bit methods), or None."""
    if mode not in MODES:
        raise QuantizeError(f"unknown mode '{mode}'; choose one of: {', '.join(MODES)}")
    if not os.path.isfile(input_path):
        raise QuantizeError(f"ONNX file not found: {input_path}")
    if mode == "q8":
        method = method or arch_q8_method(input_path)
        if method not in Q8_METHODS:
            raise QuantizeError(f"unknown q8 method '{method}'; choose one of: {', '.join(Q8_METHODS)}")
        fn = Q8_METHODS[method]
    else:
        fn = MODES[mode]
    result = fn(input_path, output, per_channel=per_channel, extra_float=extra_float, replace_float=replace_float, search=search,
                calibration=calibration)
    result = dataclasses.replace(result, path=output)
    if write_config_file:
        write_config(config_path or os.path.join(os.path.dirname(os.path.abspath(output)), "quantize_config.json"),
                     os.path.basename(output), {"mode": mode, **result.options})
    return result


def arch_q8_method(path: str) -> str:
    """The q8 method the file's architecture chose, from the exporter's metadata."""
    import onnx

    from ..archs import get_arch
    from ..onnxutil import read_metadata

    try:
        arch = read_metadata(onnx.load(path, load_external_data=False)).get("voxport.arch")
        return get_arch(arch).q8_method if arch else DEFAULT_Q8_METHOD
    except Exception:
        return DEFAULT_Q8_METHOD


def write_config(path: str, file_name: str, options: dict) -> None:
    """Merge one file's options into quantize_config.json (keyed by file name)."""
    from .. import __version__

    data = {}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                data = json.load(f)
        except ValueError:
            data = {}
    data["voxport_version"] = __version__
    data.setdefault("files", {})[file_name] = options
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


__all__ = ["quantize", "MODES", "Q8_METHODS", "DEFAULT_Q8_METHOD", "Skipped"]
