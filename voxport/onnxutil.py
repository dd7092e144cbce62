"""Small helpers on ONNX files: metadata, shape annotations, atomic writes."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

EXTERNAL_DATA_THRESHOLD = 2_000_000_000  # protobuf's 2 GB limit, with margin


def read_metadata(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def set_metadata(model, values: dict) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for k, v in values.items():
        if k in existing:
            existing[k].value = str(v)
        else:
            p = model.metadata_props.add()
            p.key, p.value = k, str(v)


def opset_of(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def reinfer_shapes(model):
    """Drop every intermediate shape annotation and infer them again from the graph (with onnxruntime's inference
    when the graph holds com.microsoft ops: ONNX's own stops at them, and what follows is left untyped)."""
    import onnx

    del model.graph.value_info[:]
    if any(n.domain == "com.microsoft" for n in model.graph.node):
        contrib_shapes(model)
        return model
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)


def contrib_shapes(model, big: int = 1 << 20) -> None:
    """Type and shape annotations for every tensor of a graph with contrib ops, by onnxruntime's symbolic shape
    inference, in place. Weights over `big` bytes are set aside meanwhile, so models over 2 GB are annotated too."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    del model.graph.value_info[:]
    aside = {}
    for t in model.graph.initializer:
        if len(t.raw_data) > big:
            aside[t.name] = t.raw_data
            t.ClearField("raw_data")
    # guess_output_rank: ops it has no rule for (QAttention) get the rank and type of their first input, so the
    # inference goes on past them. Its infer_shapes() is not called: where inference stays incomplete it saves a
    # file into the working directory and raises; here what was inferred is kept.
    sym = SymbolicShapeInference(2**31 - 1, True, True, 0)
    try:
        sym._preprocess(model)
        while sym.run_:
            sym._infer_impl()
        inferred = sym.out_mp_
    finally:
        for t in model.graph.initializer:
            if t.name in aside:
                t.raw_data = aside[t.name]
    # a guess can be wrong (QAttention's first input is uint8, its output float): no annotation rather than a wrong one
    # (standard ONNX ops it has no rule for go through ONNX's own inference: those annotations are real)
    guessed = {o for n in model.graph.node if n.domain not in ("", "ai.onnx") and n.op_type not in sym.dispatcher_
               for o in n.output}
    skip = guessed | {o.name for o in model.graph.output}
    model.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in skip)


def model_size(model) -> int:
    """Bytes the model takes serialized; protobuf cannot even measure a message past 2 GB, so the weights'
    bytes are counted first and only a model clearly under the limit is measured."""
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights > EXTERNAL_DATA_THRESHOLD:
        return weights
    return model.ByteSize()


def save_model(model, path: str, external_data: bool | None = None) -> None:
    """Save, with weights in a side file when the model is too big for one protobuf."""
    import onnx

    if external_data is None:
        external_data = model_size(model) > EXTERNAL_DATA_THRESHOLD
    if external_data:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + "_data", size_threshold=1024)
    else:
        onnx.save_model(model, path)


def file_size(path: str) -> int:
    """Size of an ONNX file plus its external data file if it has one."""
    size = os.path.getsize(path)
    data = path + "_data"
    if os.path.exists(data):
        size += os.path.getsize(data)
    return size


@contextlib.contextmanager
def atomic_path(final: str):
    """Yield a temporary path beside `final`; move it (and an `_data` side file) into place on success."""
    from .package import make_parents, remove_empty

    d = os.path.dirname(os.path.abspath(final))
    created = make_parents(final)  # removed again when nothing is written
    tmpdir = tempfile.mkdtemp(prefix=".voxport-", dir=d)
    tmp = os.path.join(tmpdir, os.path.basename(final))
    try:
        yield tmp
        if os.path.exists(tmp + "_data"):
            os.replace(tmp + "_data", final + "_data")
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        remove_empty(created, final)


def topological_sort(model) -> None:
    """Reorder graph nodes so every node follows its producers (some converters append nodes at the end)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near node {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
