"""Dynamic QUInt8 quantization ("q8"), the front end left in float."""
from __future__ import annotations

import json
import os
import time

from ..errors import QuantizeError
from ..onnxutil import atomic_path, file_size, read_metadata, reinfer_shapes, save_model, set_metadata
from ..results import QuantizeResult

# Why each choice:
# - uint8 weights and activations: ORT's CPU/WASM integer kernels are fastest with u8 x u8 on AVX2 (no VNNI).
# - per-channel weights: one scale per output channel keeps small-range channels from rounding to zero.
# - reduce_range off: 8 full bits; the 7-bit overflow guard only matters on VNNI-less int8 x int8 paths.
# - the nodes named in metadata `voxport.keep_float` stay float: the exporter derives them from the graph
#   (the audio front end). The power spectrum spans many decades; 8 bits collapse it to one class.
OP_TYPES = ["Conv", "MatMul", "Gemm"]


def quantize_dynamic_q8(input_path: str, output: str, per_channel: bool = True) -> QuantizeResult:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about pre-processing we already did

    t0 = time.time()
    try:
        src = onnx.load(input_path, load_external_data=False)
    except Exception:
        raise QuantizeError(f"{input_path} is not an ONNX model") from None
    meta = read_metadata(src)
    keep = json.loads(meta.get("voxport.keep_float", "[]"))
    if "voxport.keep_float" not in meta:
        raise QuantizeError(f"{input_path} has no voxport metadata saying what must stay float; export it with `voxport export-model` first")
    names = {n.name for n in src.graph.node}
    missing = [k for k in keep if k not in names]
    if missing:
        raise QuantizeError(f"{len(missing)} nodes to keep float are not in the graph (e.g. {missing[0]}); re-export the model")
    options = {
        "method": "dynamic",
        "weight_type": "QUInt8",
        "activation_type": "QUInt8",
        "per_channel": per_channel,
        "reduce_range": False,
        "op_types": OP_TYPES,
        "nodes_kept_float": keep,
        "why_kept_float": "audio front end (derived from the graph): quantizing it collapses the model to one class",
    }
    with atomic_path(output) as tmp:
        try:
            quantize_dynamic(
                input_path, tmp, weight_type=QuantType.QUInt8, per_channel=per_channel, reduce_range=False,
                op_types_to_quantize=OP_TYPES, nodes_to_exclude=keep,
                use_external_data_format=os.path.exists(input_path + "_data"),
                extra_options={"MatMulConstBOnly": True},
            )
        except Exception as e:
            raise QuantizeError(f"quantize_dynamic failed on {input_path}: {str(e).splitlines()[0][:300]}") from e
        model = onnx.load(tmp)
        model = reinfer_shapes(model)
        set_metadata(model, {k: v for k, v in meta.items()})
        set_metadata(model, {"voxport.quantization": json.dumps({k: v for k, v in options.items() if k != "nodes_kept_float"})})
        onnx.checker.check_model(model)
        ext = os.path.exists(input_path + "_data")
        if os.path.exists(tmp + "_data"):
            os.remove(tmp + "_data")
        save_model(model, tmp, ext or None)
        size = file_size(tmp)
    return QuantizeResult(path=output, mode="q8", size_bytes=size, source_size_bytes=file_size(input_path),
                          kept_float=keep, options=options, seconds=time.time() - t0)
