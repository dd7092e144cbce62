"""Export stage: PyTorch -> ONNX (dynamo or TorchScript), simplified, shape-checked, with metadata."""
from __future__ import annotations

import contextlib
import io
import logging
import json
import os
import time
import warnings

import numpy as np

from . import __version__
from .archs import Loaded, get_arch
from .errors import ExportError
from .onnxutil import (atomic_path, embed_external, file_size, has_external, opset_of, reinfer_shapes, restore_weights,
                       save_model, save_with_side_file, set_metadata, tensor_users, weights_as_inputs)
from .results import ExportResult

OPSETS = (17, 18)


def load(arch: str, checkpoint=None, random_init=False, seed=0, **kw) -> Loaded:
    return get_arch(arch).load(checkpoint=checkpoint, random_init=random_init, seed=seed, **kw)


def export_model(
    arch: str,
    output: str,
    checkpoint: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    opset: int = 18,
    loaded: Loaded | None = None,
    external_data: bool | None = None,
    progress=None,
    keep_external: bool = False,
    release=None,
    light_above: int = None,
) -> ExportResult:
    """Export `arch` to `output`; the file appears only when every check passed.
    keep_external: leave the weights in a side file (`output`_data) whatever the size, for later stages to read
    the graph without them (a build embeds them when it writes the folder: embed_external). release: called once
    the PyTorch model has been exported (a build frees its weights there). light_above: export the graph and the
    weights apart above this many bytes of weights (_export_light) [LIGHT_EXPORT_BYTES]."""
    light_above = LIGHT_EXPORT_BYTES if light_above is None else light_above
    spec = get_arch(arch)
    if opset not in OPSETS:
        raise ExportError(f"opset {opset} is not supported; use one of {', '.join(map(str, OPSETS))}")
    say = progress or (lambda msg: None)
    t0 = time.time()
    if loaded is None:
        say("loading checkpoint")
        loaded = spec.load(checkpoint=checkpoint, random_init=random_init, seed=seed)
    route = spec.routes[opset]
    with atomic_path(output) as tmp:
        raw = tmp + ".raw.onnx"
        say(f"exporting with {route} at opset {opset}")
        light = (route == "torchscript" and _weights_bytes(loaded.model) > light_above
                 and _export_light(spec, loaded, opset, raw))
        if not light:
            _torch_export(spec, loaded, route, opset, raw)
        if release is not None:
            release()  # nothing below runs the PyTorch model
        say("simplifying")
        model, before, after = simplify_file(raw, spec.input_names(loaded), spec.output_names(loaded), spec.simplify_skip)
        if opset_of(model) != opset:
            raise ExportError(f"the exporter wrote opset {opset_of(model)} instead of {opset}")
        model, fused = spec.fuse(loaded, model)
        if any(fused.values()):
            say("fused " + ", ".join(f"{op} x{k}" for op, k in fused.items() if k))
            model = _check_fused(model)
            after = len(model.graph.node)
        keep = spec.keep_float(model)
        set_metadata(model, {
            "voxport.version": __version__,
            "voxport.arch": spec.name,
            "voxport.task": spec.task(loaded),
            "voxport.source": json.dumps(loaded.source),
            "voxport.keep_float": json.dumps(keep),
            "sample_rate": spec.sample_rate,
            "voxport.min_samples": spec.min_samples(loaded),  # `voxport run` refuses shorter clips with a message
            **{f"voxport.{k}": v for k, v in spec.metadata(loaded).items()},
            **({"voxport.fused": json.dumps({k: v for k, v in fused.items() if v})} if any(fused.values()) else {}),
        })
        if keep_external or has_external(model):  # weights in the raw export's side file are copied over one at a time
            save_with_side_file(model, tmp, os.path.dirname(raw))
        else:
            save_model(model, tmp, external_data)
        del model
        for f in (raw, raw + "_data", raw + ".data"):
            if os.path.exists(f):
                os.remove(f)
        say("checking dynamic axes")
        shapes = check_dynamic(tmp, spec, loaded)
        if not external_data and not keep_external:
            embed_external(tmp)  # under 2 GB a file ships with its weights inside
        size = file_size(tmp)
    return ExportResult(
        path=output, arch=spec.name, opset=opset, route=route,
        inputs=spec.input_names(loaded), outputs=spec.output_names(loaded),
        nodes_before=before, nodes_after=after, size_bytes=size, keep_float=keep,
        seconds=time.time() - t0, checked_shapes=shapes,
    )


def _check_fused(model):
    """Fresh shape annotations (onnxruntime's inference: ONNX's own stops at contrib ops) and the checker."""
    import onnx

    from .onnxutil import contrib_shapes, model_size

    contrib_shapes(model)
    if model_size(model) < 1_800_000_000:
        order = [t.name for t in model.graph.initializer]
        lifted = _external_as_inputs(model)  # the checker reads a side file only through a path
        try:
            onnx.checker.check_model(model)
        finally:
            restore_weights(model, lifted, order)
    return model


def _external_as_inputs(model) -> list:
    """Initializers with data in a side file become graph inputs of the same type and shape (restore_weights undoes it)."""
    from onnx.external_data_helper import uses_external_data

    return weights_as_inputs(model, [uses_external_data(t) for t in model.graph.initializer])


def _torch_export(spec, loaded, route, opset, path, export_params=True):
    import torch

    # the exporter's registry warns once per torchvision op when torchvision is absent (voxport exports none of them)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    module = spec.export_module(loaded, route)
    args = spec.example_inputs(loaded)
    names = spec.input_names(loaded)
    outputs = spec.output_names(loaded)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), torch.no_grad():
            warnings.simplefilter("ignore")
            if route == "dynamo":
                batch, time_ = torch.export.Dim("batch_size"), torch.export.Dim("num_samples", min=spec.min_samples(loaded))
                dyn = {n: {0: batch, 1: time_} for n in names}
                prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=names,
                                         output_names=outputs, dynamic_shapes=dyn, optimize=True,
                                         verbose=False)
                prog.save(path, external_data=_needs_external(module))
            else:
                axes = {n: {0: "batch_size", 1: "num_samples"} for n in names}
                for out in outputs:
                    axes[out] = spec.output_axes(loaded, out)
                torch.onnx.export(module, args, path, dynamo=False, opset_version=opset, input_names=names,
                                  output_names=outputs, dynamic_axes=axes, do_constant_folding=True,
                                  export_params=export_params)
    except ExportError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"torch.onnx.export ({route}, opset {opset}) failed: {msg[:300]}") from e


LIGHT_EXPORT_BYTES = 256 << 20  # models with more weights than this are exported without them (see _export_light)


def _weights_bytes(module) -> int:
    state = getattr(module, "state_dict", None)
    return sum(t.numel() * t.element_size() for t in state().values()) if state else 0


def _export_light(spec, loaded, opset, path) -> bool:
    """TorchScript export of the graph alone, its weights then written from the PyTorch tensors into a side file
    (`path`_data) one at a time. torch.onnx.export with the weights holds the model, the folded weights, the
    serialized protobuf and its Python copy at once: 5.6 GB for XLS-R-300M (1.26 GB of weights); this way the
    model and one weight. The graph is the same: the graph-only export names each weight as a graph input, a
    parameter by its name and a Linear weight's folded transpose "onnx::MatMul_<n>", read from the Linear that the
    MatMul node's scope names. Returns False (nothing written) when a weight cannot be matched so; the caller
    then exports the usual way."""
    import re

    import numpy as np
    import onnx
    import torch
    from onnx import helper

    from .onnxutil import external_tensor

    module = spec.export_module(loaded, "torchscript")
    _torch_export(spec, loaded, "torchscript", opset, path, export_params=False)
    model = onnx.load(path)
    state = module.state_dict()
    names = spec.input_names(loaded)
    users = tensor_users(model)
    values = []
    for v in model.graph.input:
        if v.name in names:
            continue
        t = state.get(v.name)
        if t is None:
            use = users.get(v.name, [])
            m = re.fullmatch(r"/(.+)/MatMul", use[0][0].name) if len(use) == 1 and use[0][1] == 1 else None
            try:
                lin = module.get_submodule(m.group(1).replace("/", ".")) if m else None
            except AttributeError:
                lin = None
            if not isinstance(lin, torch.nn.Linear) or lin.weight.dim() != 2:
                return _discard(path)
            t = lin.weight.t()
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
        dtype = v.type.tensor_type.elem_type
        if list(t.shape) != dims or helper.tensor_dtype_to_np_dtype(dtype) != np.dtype(str(t.dtype).replace("torch.", "")):
            return _discard(path)
        values.append((v.name, dtype, dims, t))
    keep = [v for v in model.graph.input if v.name in names]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    data, offset = os.path.basename(path) + "_data", 0
    with open(path + "_data", "wb") as f:
        for name, dtype, dims, t in values:
            b = t.detach().contiguous().numpy().tobytes()
            f.write(b)
            model.graph.initializer.append(external_tensor(name, dtype, dims, data, offset, len(b)))
            offset += len(b)
    onnx.save(model, path)
    return True


def _discard(path: str) -> bool:
    for f in (path, path + "_data"):
        if os.path.exists(f):
            os.remove(f)
    return False


def _needs_external(module) -> bool:
    n = sum(p.numel() * p.element_size() for p in module.parameters())
    return n > 1_800_000_000


LIFT_BYTES = 1 << 20  # weights over this size go around onnxsim (see lift_weights)


def lift_weights(model, min_bytes: int = LIFT_BYTES, base_dir: str = "") -> list:
    """Big weights that nothing can be folded from become graph inputs of the same type and shape, in place:
    onnxsim (and onnxruntime's constant folding inside it) then copies a graph of a few MB instead of every weight
    several times (XLS-R-300M: 9.3 GB). A weight is lifted when every use is the weight input of a MatMul whose
    other input is computed from the graph inputs: no constant folding or fusion pass reads it. Returns the
    initializers taken out, in their order, for restore_weights()."""
    from onnx import TensorProto

    from .onnxutil import external_info

    consts = {t.name for t in model.graph.initializer} | {""}
    for n in model.graph.node:
        if n.op_type == "Constant" or all(x in consts for x in n.input):
            consts.update(n.output)
    uses = tensor_users(model)
    take = []
    for t in model.graph.initializer:
        size = int(external_info(t)["length"]) if t.data_location == TensorProto.EXTERNAL else len(t.raw_data)
        u = uses.get(t.name, [])
        take.append(bool(size >= min_bytes and u and all(n.op_type == "MatMul" and i == 1 and n.input[0] not in consts
                                                          for n, i in u)))
    return weights_as_inputs(model, take)


def simplify_file(path: str, input_names: list, output_names, skip=(), lift: int | None = -1):
    """onnxsim constant folding, then fresh shape inference and the full checker. Returns (model, nodes before, after).
    output_names: the expected outputs (a list, or one name); skip: onnxsim optimizer passes not to run.
    lift: weights of at least this many bytes go around onnxsim (lift_weights), -1: LIFT_BYTES, None: none (nor in
    graphs with BatchNormalization: batchnorm_2d_to_affine runs them). A file with a side
    file keeps its big weights there: the model returned refers to them (tensors with external data)."""
    import onnx
    import onnxsim
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    base = os.path.dirname(os.path.abspath(path))
    model = onnx.load(path, load_external_data=False)
    before = len(model.graph.node)
    del model.graph.value_info[:]  # stale annotations from the exporter break shape inference
    lift = LIFT_BYTES if lift == -1 else lift
    bn = any(n.op_type == "BatchNormalization" for n in model.graph.node)
    order = [t.name for t in model.graph.initializer]
    lifted = lift_weights(model, lift) if lift is not None and not bn else []
    for t in model.graph.initializer:
        if uses_external_data(t):
            load_external_data_for_tensor(t, base)
    big = model.ByteSize() > 1_800_000_000
    try:
        simple, ok = onnxsim.simplify(model, check_n=0, skip_shape_inference=big, skipped_optimizers=list(skip) or None)
    except Exception as e:
        raise ExportError(f"onnxsim failed: {str(e).splitlines()[0][:300]}") from e
    if not ok:
        raise ExportError("onnxsim could not validate the simplified graph")
    del model
    constants_to_initializers(simple)
    if not big:
        simple = reinfer_shapes(simple)
        if batchnorm_2d_to_affine(simple, input_names):
            simple = reinfer_shapes(simple)
        onnx.checker.check_model(simple, full_check=True)
    restore_weights(simple, lifted, order)
    got = [i.name for i in simple.graph.input]
    want = [output_names] if isinstance(output_names, str) else list(output_names)
    if got != list(input_names) or [o.name for o in simple.graph.output] != want:
        raise ExportError(f"graph IO is {got} -> {[o.name for o in simple.graph.output]}, expected {input_names} -> {want}")
    return simple, before, len(simple.graph.node)


def _ranks(model, names: list, input_names: list) -> dict:
    """Ranks of some tensors, found by running the graph once (shape inference loses them past STFT)."""
    import copy

    import onnx
    import onnxruntime as ort

    probe = copy.deepcopy(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"input_values": np.full((2, 16000), 0.01, np.float32)}
    if "attention_mask" in input_names:
        feed["attention_mask"] = np.ones((2, 16000), np.int64)
    outs = sess.run(names, feed)
    return {n: o.ndim for n, o in zip(names, outs)}


def batchnorm_2d_to_affine(model, input_names=("input_values",)) -> int:
    """BatchNormalization on a [batch, channels] input becomes Mul + Add with folded constants.

    onnxruntime-web's WebGPU kernel reads the wrong channel's statistics for rank-2 inputs (output i uses
    channel i/4: ECAPA's max |dp| 0.92 vs native); the affine form is the same math (2e-7) everywhere.
    """
    from onnx import helper, numpy_helper

    bns = [n.input[0] for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not bns:
        return 0
    rank = _ranks(model, sorted(set(bns)), list(input_names))
    inits = {i.name: i for i in model.graph.initializer}
    nodes, done = [], 0
    for n in model.graph.node:
        if n.op_type == "BatchNormalization" and rank.get(n.input[0]) == 2 and all(x in inits for x in n.input[1:5]) \
                and len(n.output) == 1:
            scale, bias, mean, var = (numpy_helper.to_array(inits[x]).astype(np.float64) for x in n.input[1:5])
            eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
            mul = scale / np.sqrt(var + eps)
            add = bias - mean * mul
            base = n.name or n.output[0]
            model.graph.initializer.extend([numpy_helper.from_array(mul.astype(np.float32), base + "_scale"),
                                            numpy_helper.from_array(add.astype(np.float32), base + "_shift")])
            mid = base + "_scaled"
            nodes.append(helper.make_node("Mul", [n.input[0], base + "_scale"], [mid], name=base + "_mul"))
            nodes.append(helper.make_node("Add", [mid, base + "_shift"], [n.output[0]], name=base + "_add"))
            done += 1
        else:
            nodes.append(n)
    if done:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        used = {i for n in model.graph.node for i in n.input}
        unused = [i for i in model.graph.initializer if i.name not in used]
        for i in unused:
            model.graph.initializer.remove(i)
    return done


def constants_to_initializers(model) -> None:
    """Constant nodes holding tensors become initializers, so quantizers see every weight."""
    keep = []
    for n in model.graph.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = n.attribute[0].t
            t.name = n.output[0]
            model.graph.initializer.append(t)
        else:
            keep.append(n)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def check_dynamic(path: str, spec, loaded) -> list:
    """Run the file on shapes other than the example one; a frozen axis fails here."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    rng = np.random.default_rng(0)
    done = []
    for b, n in spec.check_shapes(loaded):
        feed = {"input_values": (0.1 * rng.standard_normal((b, n))).astype(np.float32)}
        if "attention_mask" in names:
            feed["attention_mask"] = np.ones((b, n), np.int64)
        try:
            outs = sess.run(None, feed)
        except Exception as e:
            raise ExportError(f"exported graph fails on batch {b} x {n} samples: {str(e).splitlines()[0][:200]}") from e
        for out in outs:
            if out.shape[0] != b:
                raise ExportError(f"exported graph returns batch {out.shape[0]} for batch {b}: the batch axis was frozen")
        done.append([b, n])
    return done
