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

    from onnx import TensorProto

    del model.graph.value_info[:]
    aside, outside = {}, {}
    for t in model.graph.initializer:
        if len(t.raw_data) > big:
            aside[t.name] = t.raw_data
            t.ClearField("raw_data")
        elif t.data_location == TensorProto.EXTERNAL:  # read as the weights set aside are: no data
            outside[t.name] = list(t.external_data)
            del t.external_data[:]
            t.ClearField("data_location")
    # the emptied weights are graph inputs meanwhile: shape and type known, no values (the inference reads an
    # initializer's values where it passes constants on, e.g. through the Cast of a float16-stored weight)
    order = [t.name for t in model.graph.initializer]
    lifted = weights_as_inputs(model, [t.name in aside or t.name in outside for t in model.graph.initializer])
    # guess_output_rank: ops it has no rule for (QAttention) get the rank and type of their first input, so the
    # inference goes on past them. Its infer_shapes() is not called: where inference stays incomplete it saves a
    # file into the working directory and raises; here what was inferred is kept.
    sym = SymbolicShapeInference(2**31 - 1, True, True, 0)
    try:
        try:
            sym._preprocess(model)
            while sym.run_:
                sym._infer_impl()
            inferred = sym.out_mp_
        except Exception:  # a rule that cannot take an input of unknown shape (MatMul after STFT): ONNX's inference
            import onnx

            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    finally:
        restore_weights(model, lifted, order)
        for t in model.graph.initializer:
            if t.name in aside:
                t.raw_data = aside[t.name]
            elif t.name in outside:
                t.data_location = TensorProto.EXTERNAL
                t.external_data.extend(outside[t.name])
    # a guess can be wrong (QAttention's first input is uint8, its output float): no annotation rather than a wrong one
    # (standard ONNX ops it has no rule for go through ONNX's own inference: those annotations are real)
    guessed = {o for n in model.graph.node if n.domain not in ("", "ai.onnx") and n.op_type not in sym.dispatcher_
               for o in n.output}
    skip = guessed | {o.name for o in model.graph.output}
    model.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in skip)


def tensor_users(model) -> dict:
    """tensor name -> [(node, input index)] of every node input that reads it."""
    users = {}
    for n in model.graph.node:
        for i, x in enumerate(n.input):
            users.setdefault(x, []).append((n, i))
    return users


def weights_as_inputs(model, take: list) -> list:
    """The initializers flagged in `take` (one bool each, in order) become graph inputs of the same type and shape;
    returns copies of them, in order, for restore_weights()."""
    from onnx import TensorProto, helper

    inits = list(model.graph.initializer)
    taken = []
    for t, flag in zip(inits, take):
        if flag:
            c = TensorProto()
            c.CopyFrom(t)
            taken.append(c)
    if not taken:
        return []
    keep = [t for t, flag in zip(inits, take) if not flag]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in taken)
    return taken


def restore_weights(model, lifted: list, order: list | None = None) -> None:
    """The weights weights_as_inputs() took out back in as initializers (and out of the graph inputs), in place.
    order: the initializer names before lifting: those kept come back in that order, then the rest as they are
    (onnxsim's order: the weights it kept, then the constants it made)."""
    if not lifted:
        return
    names = {t.name for t in lifted}
    keep = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    if order is None:
        model.graph.initializer.extend(lifted)
        return
    now = {t.name: t for t in model.graph.initializer}
    now.update({t.name: t for t in lifted})
    rank = {n: i for i, n in enumerate(order)}
    seq = [n for n in order if n in now] + [t.name for t in model.graph.initializer if t.name not in rank]
    tensors = [now[n] for n in seq]
    del model.graph.initializer[:]
    model.graph.initializer.extend(tensors)


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
    """Size of an ONNX file plus its external data file if it has one; for a file under 2 GB whose weights are
    in a side file only while a build works on it, the size it has once they are inside (embed_external)."""
    size = os.path.getsize(path)
    data = path + "_data"
    if os.path.exists(data):
        size += os.path.getsize(data)
        if size <= EXTERNAL_DATA_THRESHOLD:
            return embedded_size(path)
    return size


@contextlib.contextmanager
def atomic_path(final: str):
    """Yield a temporary path beside `final`; move it (and an `_data` side file) into place on success."""
    from .files import make_parents, remove_empty

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


def give_back_memory() -> None:
    """Hand the heap pages freed so far back to the OS: glibc keeps them otherwise, and what a stage freed (the
    PyTorch weights, a model's protobuf) stays resident under the next stage's own peak."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def external_tensor(name: str, data_type: int, dims, location: str, offset: int, length: int):
    """A TensorProto whose data lies in a side file (`location`, relative to the model's folder)."""
    from onnx import TensorProto

    t = TensorProto(name=name, data_type=data_type, dims=list(dims), data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def external_info(tensor) -> dict:
    return {e.key: e.value for e in tensor.external_data}


def has_external(model) -> bool:
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def tensor_bytes(tensor, base_dir: str) -> bytes:
    """The raw bytes of an initializer, read from its side file when it has one."""
    from onnx import TensorProto

    if tensor.data_location != TensorProto.EXTERNAL:
        return tensor.raw_data
    info = external_info(tensor)
    with open(os.path.join(base_dir, info["location"]), "rb") as f:
        f.seek(int(info.get("offset", 0)))
        return f.read(int(info["length"]))


def tensor_array(tensor, base_dir: str):
    """An initializer's value as a numpy array (its side file read when it has one)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    if tensor.data_location != TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    return np.frombuffer(tensor_bytes(tensor, base_dir), dtype=dtype).reshape(tuple(tensor.dims))


def load_light(path: str):
    """The model at `path` with the data of its side file left there (a few MB for any size)."""
    import onnx

    return onnx.load(path, load_external_data=False)


def embed_external(path: str) -> bool:
    """A file whose weights lie in a side file, under protobuf's limit, rewritten with its weights inside (the form
    a small model ships in). Writes the file tensor by tensor: the weights are never all in memory. Returns whether
    it rewrote the file."""
    data = path + "_data"
    if not os.path.exists(data) or os.path.getsize(path) + os.path.getsize(data) > EXTERNAL_DATA_THRESHOLD:
        return False
    model = load_light(path)
    base = os.path.dirname(os.path.abspath(path))
    tmp = path + ".embed.tmp"
    # a GraphProto is its fields in any order and a ModelProto field repeated is merged, but onnx.save writes the
    # graph's fields in field-number order: the same bytes come from writing that order with each tensor filled in
    try:
        _write_embedded(model, base, tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)
    os.remove(data)
    return True


def _layout(model) -> tuple:
    """(bytes before the graph, the graph's tag and length, its parts (_graph_parts), bytes after): the model's
    serialized form with every tensor inside, as onnx.save writes it (fields in field-number order)."""
    from onnx import ModelProto

    head = ModelProto()
    head.CopyFrom(model)
    head.ClearField("graph")
    before, after = ModelProto(), ModelProto()
    for fd, value in head.ListFields():
        target = before if fd.number < 7 else after  # ModelProto.graph is field 7
        if fd.is_repeated:
            getattr(target, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(target, fd.name).CopyFrom(value)
        else:
            setattr(target, fd.name, value)
    parts = _graph_parts(model.graph)
    tag = _varint(7 << 3 | 2) + _varint(sum(n for _, n in parts))
    return before.SerializeToString(), tag, parts, after.SerializeToString()


def embedded_size(path: str) -> int:
    """Bytes the file at `path` takes with the weights of its side file inside."""
    before, tag, parts, after = _layout(load_light(path))
    return len(before) + len(tag) + sum(n for _, n in parts) + len(after)


def _write_embedded(model, base: str, tmp: str) -> None:
    before, tag, parts, after = _layout(model)
    with open(tmp, "wb") as f:
        f.write(before)
        f.write(tag)
        for part, _ in parts:
            if isinstance(part, bytes):
                f.write(part)
            else:  # an external tensor: its fields, then its raw_data (field 9) read now
                meta, t = part
                f.write(meta)
                f.write(tensor_bytes(t, base))
        f.write(after)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _graph_parts(graph) -> list:
    """The serialized GraphProto as (bytes, length) parts in field-number order (onnx.save's order); an external
    tensor is ((its serialized fields and raw_data's tag and length, tensor), length) for the caller to fill in."""
    from onnx import GraphProto, TensorProto

    out = []
    for fd in sorted(GraphProto.DESCRIPTOR.fields, key=lambda fd: fd.number):
        if fd.name == "initializer":
            for t in graph.initializer:
                if t.data_location != TensorProto.EXTERNAL:
                    if t.HasField("data_location"):  # DEFAULT written out (onnx.load of a side file sets it): as if never set
                        c = TensorProto()
                        c.CopyFrom(t)
                        c.ClearField("data_location")
                        t = c
                    b = t.SerializeToString()
                    out.append((_varint(5 << 3 | 2) + _varint(len(b)) + b, len(_varint(len(b))) + 1 + len(b)))
                    continue
                meta = TensorProto()
                meta.CopyFrom(t)
                meta.ClearField("data_location")
                del meta.external_data[:]
                if any(f.number > 9 for f, _ in meta.ListFields()):
                    raise ValueError(f"tensor {t.name} has fields after raw_data; cannot stream it")
                n = int(external_info(t)["length"])
                m = meta.SerializeToString() + _varint(9 << 3 | 2) + _varint(n)
                size = len(m) + n
                head = _varint(5 << 3 | 2) + _varint(size)
                out.append(((head + m, t), len(head) + size))
            continue
        part = GraphProto()
        if fd.is_repeated:
            if not len(getattr(graph, fd.name)):
                continue
            getattr(part, fd.name).extend(getattr(graph, fd.name))
        elif graph.HasField(fd.name):
            if fd.message_type is not None:
                getattr(part, fd.name).CopyFrom(getattr(graph, fd.name))
            else:
                setattr(part, fd.name, getattr(graph, fd.name))
        else:
            continue
        b = part.SerializeToString()
        out.append((b, len(b)))
    return out


def save_with_side_file(model, path: str, base_dir: str = "", threshold: int = 1024) -> None:
    """Save with every weight of `threshold` bytes or more in `path`_data: tensors whose data is already in a side
    file (relative to base_dir) are copied from it one at a time, so the weights are never all in memory."""
    import onnx
    from onnx import TensorProto

    data = path + "_data"
    offset = 0
    with open(data, "wb") as f:
        for t in model.graph.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                b = tensor_bytes(t, base_dir)
            elif len(t.raw_data) >= threshold:
                b = t.raw_data
            else:
                continue
            f.write(b)
            info = external_tensor(t.name, t.data_type, t.dims, os.path.basename(data), offset, len(b))
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            del t.external_data[:]
            t.external_data.extend(info.external_data)
            offset += len(b)
    onnx.save(model, path)
