"""What every quantization method shares: reading the source, the float-keep list, writing the result."""
from __future__ import annotations

import json
import os
import time

from ..errors import QuantizeError
from ..onnxutil import file_size, read_metadata, reinfer_shapes, save_model, set_metadata
from ..results import QuantizeResult


class Skipped(QuantizeError):
    """A mode that does not apply to this model; the message says why."""


def read_source(input_path: str, extra_float=(), replace_float=False):
    """(model without external weights, metadata, keep-float node names: the exporter's plus extra_float,
    or extra_float alone with replace_float, as the sensitivity analysis needs)."""
    import onnx

    try:
        src = onnx.load(input_path, load_external_data=False)
    except Exception:
        raise QuantizeError(f"{input_path} is not an ONNX model") from None
    meta = read_metadata(src)
    if "voxport.keep_float" not in meta:
        raise QuantizeError(f"{input_path} has no voxport metadata saying what must stay float; export it with `voxport export-model` first")
    base = json.loads(meta["voxport.keep_float"])
    keep = list(extra_float) if replace_float else base + [n for n in extra_float if n not in base]
    names = {n.name for n in src.graph.node}
    missing = [k for k in keep if k not in names]
    if missing:
        raise QuantizeError(f"{len(missing)} nodes to keep float are not in the graph (e.g. {missing[0]}); re-export the model")
    return src, meta, keep


def has_external_data(path: str) -> bool:
    return os.path.exists(path + "_data")


def finish(model, tmp: str, input_path: str, meta: dict, mode: str, options: dict, keep: list, t0: float,
           infer: bool = True, search: dict | None = None) -> QuantizeResult:
    """Fresh shape annotations, the source's metadata plus the options (and what the keep-float search kept, why),
    checker, save."""
    import onnx

    if search:
        options = {**options, "search": search}
    if infer:
        model = reinfer_shapes(model)
    set_metadata(model, meta)
    set_metadata(model, {"voxport.quantization": json.dumps({"mode": mode, **{k: v for k, v in options.items() if k != "nodes_kept_float"}})})
    onnx.checker.check_model(model)
    if os.path.exists(tmp + "_data"):
        os.remove(tmp + "_data")
    save_model(model, tmp, True if has_external_data(input_path) else None)
    return QuantizeResult(path=tmp, mode=mode, size_bytes=file_size(tmp), source_size_bytes=file_size(input_path),
                          kept_float=keep, options=options, seconds=time.time() - t0)


def initializer_map(model) -> dict:
    return {i.name: i for i in model.graph.initializer}


def correct_biases(model, input_path: str, keep: list, calibration: list | None, options: dict) -> None:
    """Bias correction (see bias.py) on a quantized model in memory, recorded in options."""
    if not calibration:
        return
    if has_external_data(input_path):
        options["bias_correction"] = "not applied: the float model is stored with external data (over 2 GB)"
        return
    import onnx

    from .bias import correct
    from .fit import _weight_nodes, shipped_weights

    nodes = _weight_nodes(onnx.load(input_path, load_external_data=False), set(keep))
    moved = correct(model, input_path, nodes, shipped_weights(model, nodes), calibration)
    options["bias_correction"] = {"layers": moved, "calibration_cases": len(calibration),
                                  "why": "subtracts the mean output shift of each rounded layer (dW @ E[x]); no bytes"}
