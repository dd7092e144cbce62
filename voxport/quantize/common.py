"""What every quantization method shares: reading the source, the float-keep list, writing the result."""
from __future__ import annotations

import json
import os
import time

from ..errors import QuantizeError
from ..onnxutil import (EXTERNAL_DATA_THRESHOLD, embed_external, file_size, read_metadata, reinfer_shapes, save_with_side_file,
                        set_metadata, tensor_array)
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


def over_2gb(path: str) -> bool:
    """The file's weights cannot be inside it (a build keeps smaller files' weights in side files only while it
    works on them: what is made from them is written as it would be from the single file)."""
    return has_external_data(path) and file_size(path) > EXTERNAL_DATA_THRESHOLD


def finish(model, tmp: str, input_path: str, meta: dict, mode: str, options: dict, keep: list, t0: float,
           infer: bool = True, search: dict | None = None, base_dir: str = "", shipped_rule=None) -> QuantizeResult:
    """Fresh shape annotations, the source's metadata plus the options (and what the keep-float search kept, why),
    checker, save. The model's weights may lie in the source's side file (under base_dir): they are copied out one
    at a time, and everything after works on the graph without them. shipped_rule(node, weight) -> (8-bit values,
    scale, zero point), broadcastable: how the method quantizes a weight for its integer kernel; the nodes the search
    kept with float activations then hold exactly those values (what the search measured), else symmetric int8."""
    import onnx

    if search:
        options = {**options, "search": search}
        kept = search.get("kept_float") or []
        if kept:
            # names as the quantizer may have left them: onnxruntime rewrites an excluded Gemm as "<name>_MatMul"
            names = lambda tier: {k["node"] + s for k in kept if k.get("kept", FLOAT_WEIGHTS) == tier for s in ("", "_MatMul")}  # noqa: E731
            half = store_half(model, names(FLOAT_WEIGHTS), base_dir)
            act = names(FLOAT_ACTIVATIONS)
            int8 = store_int8(model, lambda node: node.name in act, bool(options.get("per_channel", True)), base_dir,
                              quantizer=shipped_rule) if act else 0
            options["search"] = {**search, "kept_weights": f"{FLOAT_WEIGHTS}: float16, restored to float32 at session creation "
                                                           f"({half} weights); {FLOAT_ACTIVATIONS}: 8-bit weights ({int8} nodes"
                                                           f"{', the values the integer kernel would take' if shipped_rule else ''}) "
                                                           f"with float inputs and compute"}
    if os.path.exists(tmp + "_data"):
        os.remove(tmp + "_data")
    save_with_side_file(model, tmp, base_dir)  # the weights go out first: the steps below copy the graph
    if infer:
        model = reinfer_shapes(model)
    set_metadata(model, meta)
    set_metadata(model, {"voxport.quantization": json.dumps({"mode": mode, **{k: v for k, v in options.items() if k != "nodes_kept_float"}})})
    onnx.save(model, tmp)
    del model
    onnx.checker.check_model(tmp)
    if not over_2gb(input_path):
        embed_external(tmp)  # under 2 GB the file holds its weights, as it would have been saved whole
    return QuantizeResult(path=tmp, mode=mode, size_bytes=file_size(tmp), source_size_bytes=file_size(input_path),
                          kept_float=keep, options=options, seconds=time.time() - t0)


# what the keep-float search keeps of a node: its weights and compute float (weights stored as float16), or, in
# files whose activations are quantized at run time, only its input and compute float (weights int8)
FLOAT_WEIGHTS = "float weights"
FLOAT_ACTIVATIONS = "float activations"
MIN_ELEMENTS = 1024  # smaller weights (biases, tiny convs) are not worth an int8 copy


def channel_axis(node, w_dims) -> int:
    """The output-channel axis of a Conv / Gemm / MatMul weight (the axis per-channel scales run along)."""
    # Conv/ConvTranspose weight: [out, in, k] -> per output channel on axis 0; MatMul B [K, N] -> axis 1
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return len(w_dims) - 1


def _uses(model) -> dict:
    """tensor name -> how many node inputs read it."""
    from ..onnxutil import tensor_users

    return {name: len(u) for name, u in tensor_users(model).items()}


def store_int8(model, select, per_channel: bool, base_dir: str = "", quantizer=None) -> int:
    """Weight-only int8 for the Conv / MatMul / Gemm nodes `select(node)` accepts: symmetric int8 weights and
    their scales (per output channel or per tensor), restored by Cast + Mul, constants that onnxruntime folds at
    session creation. quantizer(node, weight) -> (8-bit values, scale, zero point), broadcastable against the weight:
    those instead (any size; restored by Cast, Sub, Mul). Weights in a side file are read from it (under base_dir).
    Returns how many weights it quantized."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    def symmetric(node, arr):
        """int8 in [-127, 127], one scale per output channel (or per tensor), no zero point."""
        axis = channel_axis(node, arr.shape)
        shape = [1] * arr.ndim
        if per_channel:
            scale = np.abs(arr).max(axis=tuple(i for i in range(arr.ndim) if i != axis)) / 127.0
            shape[axis] = -1
        else:
            scale = np.array(np.abs(arr).max() / 127.0)
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32).reshape(shape)  # broadcasts along the channel axis
        return np.clip(np.round(arr / scale), -127, 127).astype(np.int8), scale, None

    inits, uses = initializer_map(model), _uses(model)
    new, done = [], 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm") and len(node.input) > 1 and select(node):
            wname = node.input[1]
            w = inits.get(wname)
            if (w is not None and uses.get(wname) == 1 and w.data_type == onnx.TensorProto.FLOAT
                    and (quantizer is not None or np.prod(w.dims) >= MIN_ELEMENTS)):
                q, scale, zp = (quantizer or symmetric)(node, tensor_array(w, base_dir))
                model.graph.initializer.remove(w)
                model.graph.initializer.extend([numpy_helper.from_array(q, wname + "_int8"),
                                                numpy_helper.from_array(np.asarray(scale, np.float32), wname + "_scale")])
                new.append(helper.make_node("Cast", [wname + "_int8"], [wname + "_cast"], name=wname + "_cast", to=onnx.TensorProto.FLOAT))
                centred = wname + "_cast"
                if zp is not None:
                    model.graph.initializer.append(numpy_helper.from_array(np.asarray(zp, np.float32), wname + "_zero_point"))
                    new.append(helper.make_node("Sub", [centred, wname + "_zero_point"], [wname + "_centred"], name=wname + "_centre"))
                    centred = wname + "_centred"
                new.append(helper.make_node("Mul", [centred, wname + "_scale"], [wname], name=wname + "_dequantize"))
                done += 1
        new.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new)
    return done


def store_half(model, node_names, base_dir: str = "") -> int:
    """Stores the weights of the nodes the keep-float search kept as float16 + Cast to float32 (constants that
    onnxruntime folds at session creation): half the bytes of float32, 1 more than int8 per weight, and a
    rounding error (2^-11 relative) 16x under int8's. Returns how many weights it stored so."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    inits, uses = initializer_map(model), _uses(model)
    wanted, new, done = set(node_names), [], 0
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.name in wanted and len(node.input) > 1 else None
        if w is not None and w.data_type == onnx.TensorProto.FLOAT and uses.get(w.name) == 1:
            arr = tensor_array(w, base_dir)
            if np.abs(arr).max() < 60000:  # inside float16's range
                model.graph.initializer.remove(w)
                model.graph.initializer.append(numpy_helper.from_array(arr.astype(np.float16), w.name + "_fp16"))
                new.append(helper.make_node("Cast", [w.name + "_fp16"], [w.name], name=w.name + "_to_float", to=onnx.TensorProto.FLOAT))
                done += int(arr.size)
        new.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new)
    return done


def integer_share(path: str) -> float:
    """Of the weights of a quantized file's Conv / MatMul / Gemm products, the share multiplied in integer kernels
    (8-bit weights read by MatMulInteger / ConvInteger); the rest compute in float (the front end, nodes the
    search kept float, weight-only nodes). 0.0 for a file without products."""
    import numpy as np
    import onnx

    model = onnx.load(path, load_external_data=False)
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}

    def weight_size(name: str) -> int:  # through the Cast / Mul / DequantizeLinear that restore a stored weight
        seen = 0
        while name not in sizes and name in made and seen < 4:
            name, seen = made[name].input[0], seen + 1
        return sizes.get(name, 0)

    integer = float_ = 0
    for n in model.graph.node:
        if n.op_type in ("MatMulInteger", "ConvInteger"):
            integer += max(sizes.get(n.input[1], 0), sizes.get(n.input[0], 0))
        elif n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1:
            float_ += weight_size(n.input[1])
    return integer / (integer + float_) if integer + float_ else 0.0


def initializer_map(model) -> dict:
    return {i.name: i for i in model.graph.initializer}
