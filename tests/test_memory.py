"""Big-model paths (graph and weights apart, weights around onnxsim, side files) give the files the usual path gives."""
import filecmp
import os

import pytest

import voxport.export as ex
from voxport.archs import get_arch
from voxport.archs.wav2vec2 import make_checkpoint
from voxport.onnxutil import embed_external, save_model


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    return make_checkpoint(str(tmp_path_factory.mktemp("w2v") / "ck"), "wav2vec2", "ctc", "layer", preset="small", seed=6,
                           spread=True)


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_light_export_and_lifted_simplify_write_the_same_file(tmp_path, monkeypatch, norm):
    ck = make_checkpoint(str(tmp_path / "ck"), "wav2vec2", "cls", norm, preset="small", seed=3, spread=True)
    spec = get_arch("wav2vec2")
    loaded = spec.load(checkpoint=ck)
    usual = ex.export_model("wav2vec2", str(tmp_path / "usual.onnx"), loaded=loaded)
    lifted = []
    real = ex.lift_weights
    monkeypatch.setattr(ex, "lift_weights", lambda *a, **k: lifted.append(real(*a, **k)) or lifted[-1])
    monkeypatch.setattr(ex, "LIFT_BYTES", 0)  # every MatMul weight goes around onnxsim
    light = ex.export_model("wav2vec2", str(tmp_path / "light.onnx"), loaded=loaded, light_above=0)
    assert lifted and len(lifted[0]) >= 7  # the projection and the encoder's Linear weights
    assert usual.nodes_after == light.nodes_after
    assert filecmp.cmp(tmp_path / "usual.onnx", tmp_path / "light.onnx", shallow=False)
    assert not os.path.exists(str(tmp_path / "light.onnx") + "_data")


def test_light_export_writes_the_weights_torch_export_writes(tmp_path, small_ckpt):
    spec = get_arch("wav2vec2")
    loaded = spec.load(checkpoint=small_ckpt)
    ex._torch_export(spec, loaded, "torchscript", 18, str(tmp_path / "full.onnx"))
    assert ex._export_light(spec, loaded, 18, str(tmp_path / "light.onnx"))
    assert os.path.exists(str(tmp_path / "light.onnx") + "_data")
    assert embed_external(str(tmp_path / "light.onnx"))
    assert filecmp.cmp(tmp_path / "full.onnx", tmp_path / "light.onnx", shallow=False)


def test_keep_external_leaves_a_side_file_that_embeds_to_the_usual_file(tmp_path, small_ckpt):
    import onnx

    spec = get_arch("wav2vec2")
    loaded = spec.load(checkpoint=small_ckpt)
    ex.export_model("wav2vec2", str(tmp_path / "usual.onnx"), loaded=loaded)
    ex.export_model("wav2vec2", str(tmp_path / "side.onnx"), loaded=loaded, keep_external=True, light_above=0)
    side = str(tmp_path / "side.onnx")
    assert os.path.exists(side + "_data")
    assert os.path.getsize(side) < os.path.getsize(tmp_path / "usual.onnx") / 4
    assert embed_external(side)
    assert filecmp.cmp(tmp_path / "usual.onnx", side, shallow=False)
    # and a file saved by onnx with a side file embeds to onnx's own single file
    m = onnx.load(str(tmp_path / "usual.onnx"))
    save_model(m, str(tmp_path / "again.onnx"), True)
    assert embed_external(str(tmp_path / "again.onnx"))
    assert filecmp.cmp(tmp_path / "usual.onnx", tmp_path / "again.onnx", shallow=False)


@pytest.mark.parametrize("weight_type,op_types,reduce_range,per_channel", [
    ("QInt8", ("MatMul", "Gemm"), True, True),  # q8 dynamic-s8
    ("QUInt8", ("Conv", "MatMul", "Gemm"), False, True),  # uint8
    ("QInt8", ("Conv", "MatMul", "Gemm"), True, False),
])
def test_integer_products_are_the_graph_onnxruntime_quantize_dynamic_writes(tmp_path, small_ckpt, ecapa_ckpt, weight_type,
                                                                              op_types, reduce_range, per_channel):
    """quantize_products reads one weight at a time from the side file and writes what onnxruntime's quantizer
    writes from the whole model: the same initializers (bit for bit), the same nodes, the same outputs."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from voxport.onnxutil import load_light, tensor_array
    from voxport.quantize.common import read_source
    from voxport.quantize.integer import quantize_products

    def node_set(model):
        return sorted(str((n.op_type, n.name, list(n.input), list(n.output), sorted(str(a) for a in n.attribute))) for n in model.graph.node)

    for arch, ck in (("wav2vec2", small_ckpt), ("ecapa", ecapa_ckpt)):
        side = str(tmp_path / f"{arch}.onnx")
        ex.export_model(arch, side, checkpoint=ck, keep_external=True, light_above=0)
        assert os.path.exists(side + "_data")
        _, _, keep = read_source(side)
        ref = str(tmp_path / f"{arch}-ort.onnx")
        quantize_dynamic(side, ref, weight_type=getattr(QuantType, weight_type), per_channel=per_channel, reduce_range=reduce_range,
                         op_types_to_quantize=list(op_types), nodes_to_exclude=keep + [f"{n}_MatMul" for n in keep],
                         extra_options={"MatMulConstBOnly": True})
        theirs = onnx.load(ref)
        ours = load_light(side)
        seen = []
        n = quantize_products(ours, str(tmp_path), weight_type, per_channel, reduce_range, op_types, keep,
                              progress=lambda i, total: seen.append((i, total)))
        assert n > 0 and seen[-1] == (n, n)
        a = {i.name: numpy_helper.to_array(i) for i in theirs.graph.initializer}
        b = {i.name: tensor_array(i, str(tmp_path)) for i in ours.graph.initializer}
        assert sorted(a) == sorted(b)
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]), k
        assert node_set(theirs) == node_set(ours)
        mine = str(tmp_path / f"{arch}-ours.onnx")
        save_model(ours, mine)
        x = np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32) * 0.1
        feed = lambda s: {i.name: (x if i.type == "tensor(float)" else np.ones_like(x, dtype=np.int64)) for i in s.get_inputs()}  # noqa: E731
        s1, s2 = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (ref, mine))
        for o1, o2 in zip(s1.run(None, feed(s1)), s2.run(None, feed(s2))):
            np.testing.assert_array_equal(o1, o2)


def test_build_frees_the_pytorch_weights_after_export(tmp_path):
    from voxport.build import build

    ck = make_checkpoint(str(tmp_path / "ck"), "wav2vec2", "cls", "group", preset="tiny", seed=2, spread=True)
    seen = {}
    import voxport.build as b

    real = b.release_model

    def spy(spec, loaded, cases, refs):
        real(spec, loaded, cases, refs)
        seen["device"] = next(loaded.model.parameters()).device.type
        seen["drift"] = loaded.extra.get("padding_drift")

    import pytest as _pytest
    mp = _pytest.MonkeyPatch()
    mp.setattr(b, "release_model", spy)
    try:
        r = build("wav2vec2", str(tmp_path / "out"), checkpoint=ck, quantize_modes=("q8",))
    finally:
        mp.undo()
    assert r.verify.passed
    assert seen["device"] == "meta" and seen["drift"] is not None  # group norm: the padding drift was computed first
    assert not [f for f in os.listdir(tmp_path / "out" / "onnx") if f.endswith("_data")]


@pytest.mark.parametrize("method", ["weight-only", "dynamic"])
def test_switch_runner_on_side_files_gives_the_outputs_of_the_single_file(tmp_path, small_ckpt, method):
    """The search's runner on a float file whose weights lie in a side file (mapped, not read in) gives, for any set
    of quantized items, the outputs it gives on the same file saved whole; with every item quantized, the quantized
    file's outputs within what run-time integer accumulation changes."""
    import numpy as np

    from voxport.quantize import quantize
    from voxport.quantize.common import read_source
    from voxport.quantize.fit import SwitchRunner, shipped_biases
    from voxport.quantize.shipped import shipped_weights, weight_nodes as _weight_nodes
    from voxport.verify.check import build_cases
    from voxport.verify.runtimes import OnnxRuntimePython

    spec = get_arch("wav2vec2")
    loaded = spec.load(checkpoint=small_ckpt)
    os.makedirs(tmp_path / "side")
    src, side = str(tmp_path / "model.onnx"), str(tmp_path / "side" / "model.onnx")
    ex.export_model("wav2vec2", src, loaded=loaded)
    ex.export_model("wav2vec2", side, loaded=loaded, keep_external=True)
    assert os.path.exists(side + "_data")
    q, qs = str(tmp_path / "q.onnx"), str(tmp_path / "side" / "q.onnx")
    quantize(src, q, mode="q8", method=method, write_config_file=False)
    quantize(side, qs, mode="q8", method=method, write_config_file=False)
    assert not os.path.exists(qs + "_data")  # under 2 GB a quantized file is written whole, as from a single file
    model, _, keep = read_source(src)
    nodes = _weight_nodes(model, set(keep))
    deq = shipped_weights(q, nodes)
    nodes = [(n, w) for n, w in nodes if w in deq]
    dynamic = method == "dynamic"
    biases = shipped_biases(q, model, nodes)
    side_model, _, _ = read_source(side)
    whole = SwitchRunner(src, nodes, q, dynamic, biases, str(tmp_path))
    mapped = SwitchRunner(side, nodes, qs, dynamic, shipped_biases(qs, side_model, nodes, str(tmp_path / "side")), str(tmp_path))
    assert not [f for f in os.listdir(tmp_path / "side") if f.startswith("voxport-switch-")]  # its graph is not left behind
    cases = build_cases(spec, loaded, speech=False)[:3]
    items = len(nodes) * (2 if dynamic else 1)
    some = np.zeros(items)
    some[::3] = 1.0
    for s in (np.ones(items), some, np.zeros(items)):
        r1, r2 = whole.run(s, cases), mapped.run(s, cases)
        assert all(np.array_equal(x, y) for x, y in zip(r1, r2))
    real = OnnxRuntimePython().run_cases(q, cases)
    fp32 = OnnxRuntimePython().run_cases(src, cases)
    on = whole.run(np.ones(items), cases)
    err = max(np.abs(a - b).max() for a, b in zip(real, fp32))
    emu = max(np.abs(a - b).max() for a, b in zip(on, real))
    assert err > 0 and emu <= (0.01 if method == "weight-only" else 0.25) * err, (emu, err)


def test_shapes_of_a_fused_graph_with_weights_set_aside_and_float16_weights(tmp_path, small_ckpt):
    """A searched file keeps weights as float16 + Cast; annotating it with the big weights set aside (as for files over
    2 GB) must not read their values (it did, through the Cast: 'cannot reshape array of size 0' on XLS-R-300M), and
    gives the annotations it gives with the weights in place; the weights come back in their order, unchanged."""
    import onnx

    from voxport.onnxutil import contrib_shapes
    from voxport.quantize.common import store_half

    path = str(tmp_path / "m.onnx")
    ex.export_model("wav2vec2", path, checkpoint=small_ckpt)
    model = onnx.load(path)
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"][:4]
    assert store_half(model, matmuls) > 0
    before = [(t.name, t.raw_data) for t in model.graph.initializer]
    contrib_shapes(model)  # nothing set aside
    full = {v.name: v.SerializeToString() for v in model.graph.value_info}
    contrib_shapes(model, big=1024)  # every weight over 1 KB set aside (shape constants stay)
    assert {v.name: v.SerializeToString() for v in model.graph.value_info} == full
    assert [(t.name, t.raw_data) for t in model.graph.initializer] == before
    assert [i.name for i in model.graph.input] == ["input_values", "attention_mask"]
