"""Quantize stage: one module per method; each takes an ONNX file and writes another."""
from __future__ import annotations

import dataclasses
import functools
import json
import os

from ..archs.base import SKIP
from ..errors import QuantizeError
from .common import Skipped
from .dynamic import quantize_dynamic_8bit
from .fp16 import quantize_fp16
from .q4 import quantize_q4
from .weight_only import quantize_weight_only

# (mode = Transformers.js dtype, method) -> the function that writes that file
METHODS = {
    ("q8", "weight-only"): functools.partial(quantize_weight_only, mode="q8"),
    ("q8", "dynamic"): functools.partial(quantize_dynamic_8bit, weight_type="QUInt8", mode="q8"),
    ("q8", "dynamic-s8"): functools.partial(quantize_dynamic_8bit, weight_type="QInt8", mode="q8", op_types=("MatMul", "Gemm")),
    ("int8", "weight-only"): functools.partial(quantize_weight_only, mode="int8"),
    ("int8", "dynamic"): functools.partial(quantize_dynamic_8bit, weight_type="QInt8", mode="int8"),
    ("uint8", "dynamic"): functools.partial(quantize_dynamic_8bit, weight_type="QUInt8", mode="uint8"),
    ("fp16", "float16"): quantize_fp16,
    ("q4", "MatMulNBits"): functools.partial(quantize_q4, mode="q4"),
    ("q4f16", "MatMulNBits"): functools.partial(quantize_q4, mode="q4f16", fp16=True),
}
MODES = sorted({m for m, _ in METHODS}, key=["q8", "fp16", "int8", "uint8", "q4", "q4f16"].index)
Q8_METHODS = sorted(m for mode, m in METHODS if mode == "q8")
EIGHT_BIT_METHODS = sorted({m for mode, m in METHODS if mode in ("q8", "int8", "uint8")})


def quantize(input_path: str, output: str, mode: str = "q8", method: str | None = None, per_channel: bool | None = None,
             config_path: str | None = None, extra_float=(), replace_float=False, write_config_file: bool = True,
             search: dict | None = None, calibration: list | None = None):
    """Write `output` from `input_path` in `mode` and record the options in quantize_config.json beside it.
    method / per_channel: None takes the recipe the file's architecture chose for this mode (ArchSpec.recipes).
    calibration: cases whose float activations drive bias correction (8-bit methods), or None."""
    if mode not in MODES:
        raise QuantizeError(f"unknown mode '{mode}'; choose one of: {', '.join(MODES)}")
    if not os.path.isfile(input_path):
        raise QuantizeError(f"ONNX file not found: {input_path}")
    if method is None or per_channel is None:
        rec = arch_recipe(input_path, mode)
        if method is None and rec.fallback is not None:
            # the first recipe is taken only where it is measured (build, quantize_to_tolerance name it)
            rec = rec.fallback
        method = method or rec.method
        per_channel = rec.per_channel if per_channel is None else per_channel
    if method == SKIP:  # the architecture makes no such file; its recipe says what was measured
        raise Skipped(arch_recipe(input_path, mode).why)
    fn = METHODS.get((mode, method))
    if fn is None:
        choices = ", ".join(m for md, m in METHODS if md == mode)
        raise QuantizeError(f"{mode} cannot be made with method '{method}'; choose one of: {choices}")
    result = fn(input_path, output, per_channel=per_channel, extra_float=extra_float, replace_float=replace_float, search=search,
                calibration=calibration)
    result = dataclasses.replace(result, path=output)
    if write_config_file:
        write_config(config_path or os.path.join(os.path.dirname(os.path.abspath(output)), "quantize_config.json"),
                     os.path.basename(output), {"mode": mode, **result.options})
    return result


def arch_recipe(path: str, mode: str):
    """How the file's architecture (from the exporter's metadata) makes `mode`; the base recipe for foreign files."""
    import onnx

    from ..archs import get_arch
    from ..archs.base import ArchSpec
    from ..onnxutil import read_metadata

    try:
        arch = read_metadata(onnx.load(path, load_external_data=False)).get("voxport.arch")
        spec = get_arch(arch) if arch else ArchSpec()
    except Exception:
        spec = ArchSpec()
    return spec.recipe(mode)


def read_config(path: str, file_name: str) -> dict:
    """One file's entry of quantize_config.json ({} when there is none)."""
    try:
        with open(path) as f:
            return json.load(f).get("files", {}).get(file_name, {})
    except (OSError, ValueError):
        return {}


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


__all__ = ["quantize", "read_config", "write_config", "MODES", "METHODS", "Q8_METHODS", "EIGHT_BIT_METHODS", "Skipped"]
