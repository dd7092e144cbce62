"""Quantize stage: one module per method; each takes an ONNX file and writes another."""
from __future__ import annotations

import json
import os

from ..errors import QuantizeError
from .dynamic import quantize_dynamic_q8

METHODS = {"dynamic": quantize_dynamic_q8}


def quantize(input_path: str, output: str, method: str = "dynamic", per_channel: bool = True, config_path: str | None = None):
    """Quantize `input_path` into `output` and record the options in quantize_config.json beside it."""
    if method not in METHODS:
        raise QuantizeError(f"unknown quantization method '{method}'; choose one of: {', '.join(METHODS)}")
    if not os.path.isfile(input_path):
        raise QuantizeError(f"ONNX file not found: {input_path}")
    result = METHODS[method](input_path, output, per_channel=per_channel)
    write_config(config_path or os.path.join(os.path.dirname(os.path.abspath(output)), "quantize_config.json"),
                 os.path.basename(output), result.options)
    return result


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
