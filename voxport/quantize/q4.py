"""4-bit weight-only MatMul (MatMulNBits, block-wise), for graphs whose weights sit in MatMuls."""
from __future__ import annotations

import time

import numpy as np

from ..onnxutil import atomic_path
from .common import Skipped, finish, initializer_map, read_source
from .fp16 import to_fp16

BLOCK_SIZE = 32
# Below this share of weights in MatMul, 4-bit MatMul saves too little to be worth a file.
MIN_MATMUL_SHARE = 0.5


def matmul_share(model, keep: set) -> float:
    inits = initializer_map(model)
    total = sum(int(np.prod(i.dims)) for i in inits.values() if i.data_type == 1)
    mm = sum(int(np.prod(inits[n.input[1]].dims)) for n in model.graph.node
             if n.op_type == "MatMul" and n.name not in keep and n.input[1] in inits)
    return mm / total if total else 0.0


def quantize_q4(input_path: str, output: str, per_channel: bool = True, extra_float=(), replace_float=False, search=None, calibration=None, mode: str = "q4", fp16: bool = False):
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    t0 = time.time()
    src, meta, keep = read_source(input_path, extra_float, replace_float)
    share = matmul_share(onnx.load(input_path), set(keep))
    if share < MIN_MATMUL_SHARE:
        raise Skipped(f"only {share:.0%} of the weights are in MatMul nodes (4-bit applies to MatMul only)")
    model = onnx.load(input_path)
    q = MatMulNBitsQuantizer(model, block_size=BLOCK_SIZE, is_symmetric=True, nodes_to_exclude=list(keep))
    q.process()
    model = q.model.model
    options = {"method": "MatMulNBits", "bits": 4, "block_size": BLOCK_SIZE, "symmetric": True,
               "matmul_weight_share": round(share, 3), "nodes_kept_float": keep}
    if fp16:
        block = list(keep) + [n.name for n in model.graph.node if n.op_type == "Log"][:1]
        model = to_fp16(model, set(block))
        options["float16"] = True
    with atomic_path(output) as tmp:
        result = finish(model, tmp, input_path, meta, mode, options, keep, t0, search=search)
    return result
