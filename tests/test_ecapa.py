"""ECAPA: state-dict compatibility, front end, export, quantize, verify."""
import collections
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from voxport.archs import get_arch
from voxport.archs.ecapa import MIN_SAMPLES, UPSTREAM_KEYS, build_model
from voxport.errors import CheckpointError
from voxport.export import export_model
from voxport.onnxutil import read_metadata
from voxport.quantize import quantize
from voxport.quantize.fit import quantize_to_tolerance
from voxport.verify.check import verify
from voxport.archs.suite import speech_like
from voxport.tolerances import PARITY

from .conftest import save_ecapa_checkpoint

# fp32 export vs eager PyTorch: same math, only kernel order (and FFT vs DFT) differ; 1e-4 is the issue's bar
FP32_TOL = 1e-4


def upstream_logmel(x):
    """The upstream front end as written there: filter and MelSpectrogram built inside the call."""
    import torch.nn.functional as F
    import torchaudio

    flipped = torch.FloatTensor([-0.97, 1.0]).unsqueeze(0).unsqueeze(0)
    x = F.conv1d(F.pad(x.unsqueeze(1), (1, 0), "reflect"), flipped).squeeze(1)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, f_min=20,
                                               f_max=7600, window_fn=torch.hamming_window, n_mels=80)
    x = (mel(x) + 1e-6).log()
    return x - torch.mean(x, dim=-1, keepdim=True)


def test_state_dict_matches_upstream_layout():
    sd = build_model(1024).state_dict()
    assert len(sd) == UPSTREAM_KEYS
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 31
    assert not any(k.startswith("front_end") for k in sd)  # front-end buffers are not persistent


@pytest.mark.parametrize("mode,tol", [("stft", 1e-6), ("dft", 1e-4)])
def test_front_end_matches_upstream(mode, tol):
    x = torch.from_numpy(np.stack([speech_like(12345, 110, 1), speech_like(12345, 220, 2)]))
    ref = upstream_logmel(x)
    got = build_model(8, mode).front_end(x)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= tol


def test_load_checkpoint_strict_and_bin(tmp_path, ecapa_ckpt):
    spec = get_arch("ecapa")
    a = spec.load(checkpoint=ecapa_ckpt)
    assert a.config == {"C": 64, "embeddings": False}
    b_dir = save_ecapa_checkpoint(str(tmp_path / "bin"), C=64, seed=0, fmt="bin")
    b = spec.load(checkpoint=b_dir)
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_wrong_keys_are_listed(tmp_path, ecapa_ckpt):
    from safetensors.torch import load_file, save_file

    sd = load_file(os.path.join(ecapa_ckpt, "model.safetensors"))
    sd["extra.weight"] = torch.zeros(1)
    del sd["fc7.bias"]
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(sd, str(bad / "model.safetensors"))
    (bad / "config.json").write_text('{"C": 64}')
    with pytest.raises(CheckpointError, match=r"1 missing \(fc7.bias\), 1 unexpected \(extra.weight\)"):
        get_arch("ecapa").load(checkpoint=str(bad))


def test_config_and_weights_disagree(tmp_path, ecapa_ckpt):
    import shutil

    d = tmp_path / "c"
    shutil.copytree(ecapa_ckpt, d)
    (d / "config.json").write_text('{"C": 1024}')
    with pytest.raises(CheckpointError, match="C=1024 but the weights have C=64"):
        get_arch("ecapa").load(checkpoint=str(d))


def _ort(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("opset", [18, 17])
def test_export_dynamic_axes_and_parity(tmp_path, ecapa_ckpt, opset):
    spec = get_arch("ecapa")
    loaded = spec.load(checkpoint=ecapa_ckpt)
    out = str(tmp_path / "m.onnx")
    r = export_model("ecapa", out, loaded=loaded, opset=opset)
    m = onnx.load(out)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["input_values"] and [o.name for o in m.graph.output] == ["logits"]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param and not d.dim_value for d in dims)  # both axes symbolic
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert r.nodes_after <= r.nodes_before
    meta = read_metadata(m)
    assert meta["sample_rate"] == "16000"
    assert json.loads(meta["voxport.front_end"])["n_mels"] == 80
    src = json.loads(meta["voxport.source"])  # the folder's name and the weights' sha256, never a local path
    assert src["checkpoint"] == os.path.basename(ecapa_ckpt) and src["local"] is True
    assert os.path.dirname(os.path.abspath(ecapa_ckpt)) not in meta["voxport.source"]
    assert list(src["weights"]) == ["model.safetensors"] and len(src["weights"]["model.safetensors"]) == 64
    assert meta["voxport.version"]
    keep = json.loads(meta["voxport.keep_float"])
    ops = collections.Counter(n.op_type for n in m.graph.node if n.name in keep)
    assert ops["MatMul"] == 1 and ops["Log"] == 0  # the mel filterbank, nothing past the log
    assert ops["Conv"] >= 1  # pre-emphasis
    from voxport.export import _ranks

    bns = [n.input[0] for n in m.graph.node if n.op_type == "BatchNormalization"]
    assert bns and set(_ranks(m, bns, ["input_values"]).values()) == {3}  # rank-2 ones became Mul + Add (WebGPU)
    sess = _ort(out)
    for b, n in [(1, MIN_SAMPLES), (3, 16000), (5, 7777)]:
        x = np.stack([speech_like(n, 100 + 30 * i, i) for i in range(b)])
        with torch.no_grad():
            ref = loaded.model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"input_values": x})[0]
        assert got.shape == (b, 2)
        assert np.abs(got - ref).max() <= FP32_TOL


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ecapa_ckpt):
    loaded = get_arch("ecapa").load(checkpoint=ecapa_ckpt)
    out = str(tmp_path_factory.mktemp("exp") / "model.onnx")
    export_model("ecapa", out, loaded=loaded)
    return out, loaded


def test_pointwise_convolutions_are_matmuls_and_dynamic_s8_makes_them_integer(tmp_path, exported):
    """The exporter writes the 1x1 convolutions over frames as MatMul (squeeze-excitation stays Conv); dynamic-s8
    quantizes those at run time with 7-bit int8 weights and stores the other weights int8 with float compute."""
    from voxport.quantize.common import integer_share

    src, loaded = exported
    m = onnx.load(src)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    keep = set(json.loads(read_metadata(m)["voxport.keep_float"]))
    body = [n for n in m.graph.node if n.op_type == "MatMul" and n.name not in keep]
    assert len(body) == 9  # 3 blocks x (conv1, conv3), layer4, the two attention convolutions
    assert ops["Conv"] >= 3 * 7 + 1 + 6  # Res2 kernel-3 convs, the first conv, squeeze-excitation
    out = str(tmp_path / "q.onnx")
    r = quantize(src, out, method="dynamic-s8", write_config_file=False)
    q = onnx.load(out)
    qops = collections.Counter(n.op_type for n in q.graph.node)
    assert qops["MatMulInteger"] == 9 + ops["Gemm"] and not qops["ConvInteger"]  # the Gemms (fc6, fc7) as MatMul
    assert r.options["weight_type"] == "QInt8" and r.options["reduce_range"] is True  # no u8 x s8 saturation on AVX2
    # the convolutions: int8 weights, float compute (all but the exporter's and those too small to be worth it)
    inits = {i.name: i for i in m.graph.initializer}
    big = [n for n in m.graph.node if n.op_type == "Conv" and n.name not in keep and np.prod(inits[n.input[1]].dims) >= 1024]
    assert r.options["weight_only"]["nodes"] == len(big) >= 1
    share = integer_share(out)
    assert 0.5 < share < 1.0  # the first conv and the kernel-3 convs compute in float
    assert integer_share(src) == 0.0
    # without a reference to measure it, the recipe's fallback is made
    plain = quantize(src, str(tmp_path / "p.onnx"), write_config_file=False)
    assert plain.options["method"] == "weight-only"


@pytest.mark.parametrize("method", ["dynamic", "weight-only"])
def test_q8_keeps_front_end_float(tmp_path, exported, method):
    src, loaded = exported
    out = str(tmp_path / "model_quantized.onnx")
    r, fitted = quantize_to_tolerance(src, out, method=method, loaded=loaded)
    q = onnx.load(out)
    ops = collections.Counter(n.op_type for n in q.graph.node)
    searched = {k["node"] for k in fitted.kept_float}
    if method == "dynamic":  # every Conv is integer unless the search kept it float
        assert ops["ConvInteger"] + ops["MatMulInteger"] + len(searched) >= 30 and ops["MatMulInteger"] + ops["MatMul"] >= 1
    else:  # runs on WebGPU: no integer kernels; int8 weights restored by Cast + Mul, folded at session creation
        assert not ops["ConvInteger"] and not ops["MatMulInteger"] and not ops["DynamicQuantizeLinear"]
        assert not ops["DequantizeLinear"]  # never folded by onnxruntime: it would run on every inference
        weights = [i for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1]
        casts = [n for n in q.graph.node if n.op_type == "Cast" and n.input[0].endswith("_int8")]
        assert len(casts) == len(weights) >= 10
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(out, opts, providers=["CPUExecutionProvider"])
        folded = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
        assert not any(n.input[0].endswith("_int8") for n in onnx.load(opts.optimized_model_filepath).graph.node)
        assert folded["Cast"] < ops["Cast"]
    for k in fitted.kept_float:  # what the search kept float is stored as float16 weights
        assert k["kept"] in ("float weights", "float activations")
    keep = set(r.kept_float)
    assert searched <= keep and len(keep) == len(json.loads(read_metadata(q)["voxport.keep_float"])) + len(searched)
    kept = [n for n in q.graph.node if n.name in keep]
    assert collections.Counter(n.op_type for n in kept)["MatMul"] == 1  # mel filterbank still float
    fb = next(n for n in kept if n.op_type == "MatMul")
    inits = {i.name: i for i in q.graph.initializer}
    assert any(inits[x].data_type == onnx.TensorProto.FLOAT for x in fb.input if x in inits)
    cfg = json.load(open(tmp_path / "quantize_config.json"))
    opts = cfg["files"]["model_quantized.onnx"]
    recipe = get_arch("ecapa").recipe("q8")
    assert opts["method"] == method and opts["per_channel"] is recipe.per_channel
    assert sorted(opts["nodes_kept_float"]) == sorted(keep)
    assert read_metadata(q)["voxport.arch"] == "ecapa"
    assert r.size_bytes < os.path.getsize(src) / 3
    report = verify({"model_quantized.onnx": out}, loaded)
    assert report.passed, report.to_table()


def test_fp16_loads_keeps_io_float32_and_front_end(tmp_path, exported):
    src, loaded = exported
    out = str(tmp_path / "model_fp16.onnx")
    r = quantize(src, out, mode="fp16")
    m = onnx.load(out)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    onnx.checker.check_model(m, full_check=True)
    halves = [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > 50
    types = {v.name: v.type.tensor_type.elem_type for v in m.graph.value_info}
    log = next(n for n in m.graph.node if n.op_type == "Log")
    assert types[log.input[0]] == onnx.TensorProto.FLOAT and log.name in r.kept_float
    assert r.size_bytes < 0.55 * os.path.getsize(src)
    report = verify({"model_fp16.onnx": out}, loaded)
    assert report.passed and report.files[0].kind == "fp16", report.to_table()


def test_q4_is_skipped_with_the_measured_reason(tmp_path, exported):
    from voxport.quantize import Skipped

    with pytest.raises(Skipped, match="4-bit weights flip decisions of ECAPA"):
        quantize(exported[0], str(tmp_path / "model_q4.onnx"), mode="q4")
    assert not os.path.exists(tmp_path / "model_q4.onnx")


def test_quantize_refuses_file_without_metadata(tmp_path, exported):
    from voxport.errors import QuantizeError

    m = onnx.load(exported[0])
    del m.metadata_props[:]
    p = str(tmp_path / "plain.onnx")
    onnx.save(m, p)
    with pytest.raises(QuantizeError, match="export it with `voxport export-model`"):
        quantize(p, str(tmp_path / "q.onnx"))
    assert not os.path.exists(tmp_path / "q.onnx")


def test_verify_detects_a_drifting_file(tmp_path, exported):
    src, loaded = exported
    m = onnx.load(src)
    gemm = [n for n in m.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    inits = {i.name: i for i in m.graph.initializer}
    w = next(inits[x] for x in gemm.input if x in inits)
    arr = onnx.numpy_helper.to_array(w) * 1.01
    w.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), w.name))
    bad = str(tmp_path / "model.onnx")
    onnx.save(m, bad)
    report = verify({"model.onnx": bad}, loaded)
    assert not report.passed
    assert "max |dlogit|" in report.files[0].reasons[0]


def test_suite_covers_the_issue_cases(ecapa_ckpt):
    spec = get_arch("ecapa")
    loaded = spec.load(checkpoint=ecapa_ckpt)
    cases = spec.cases(loaded)
    lengths = [c.input_values.shape[1] for c in cases]
    batches = {c.input_values.shape[0] for c in cases}
    assert min(lengths) == MIN_SAMPLES and max(lengths) == 30 * 16000
    assert batches == {1, 3}
    assert any(np.all(c.input_values == 0) for c in cases)  # silence
    assert any(np.abs(c.input_values).max() == 1.0 for c in cases)  # clipping


def test_explain_finds_the_front_end_and_meets_a_target(tmp_path, exported):
    from voxport.quantize.sensitivity import explain

    src, loaded = exported
    r = explain(src, mode="q8", method="weight-only", target=0.002, loaded=loaded)
    fb = [x for x in r.ranking if x.kept_by_exporter]
    assert [x.op_type for x in fb].count("MatMul") == 1  # the mel filterbank is ranked and marked as the exporter's
    errs = [x.max_abs_prob for x in r.ranking]
    assert errs == sorted(errs, reverse=True) and all(0 <= e < 0.15 for e in errs) and errs[0] > 1e-3
    assert r.achieved <= 0.002 and r.size_bytes >= r.base_size_bytes
    assert set(r.kept_float) <= {x.node for x in r.ranking if not x.kept_by_exporter}
    out = str(tmp_path / "model_quantized.onnx")
    q = quantize(src, out, method="weight-only", extra_float=r.kept_float)
    assert set(r.kept_float) <= set(q.kept_float)
    report = verify({"model_quantized.onnx": out}, loaded)
    assert report.files[0].max_abs_prob <= 0.002 + 1e-3, report.to_table()  # the verify suite adds its 30 s case


def test_explain_ranks_dynamic_files_by_weights_and_inputs(exported):
    """uint8 (dynamic): each node alone with its weights and its input activation quantized, from one switch graph."""
    from voxport.quantize.sensitivity import explain

    src, loaded = exported
    r = explain(src, mode="uint8", loaded=loaded)
    assert r.method == "dynamic"
    errs = [x.max_abs_prob for x in r.ranking]
    assert errs == sorted(errs, reverse=True) and errs[0] > 1e-3
    assert sum(e > 0 for e in errs) >= 20  # every node big enough to quantize moves the output


def test_embeddings_output_is_the_vector_fc7_reads(tmp_path, ecapa_ckpt):
    """--embeddings: the graph also returns ReLU(bn6(fc6(.))), 192-d, verified by cosine and pairwise scores in every
    file; the logits are fc7 of exactly that vector; the folder's source record rebuilds the two-output reference."""
    from safetensors.numpy import load_file

    from voxport.build import build
    from voxport.verify.check import verify_folder

    out = str(tmp_path / "vg")
    r = build("ecapa", out, checkpoint=ecapa_ckpt, quantize_modes=("q8",), load_options={"embeddings": True})
    assert r.verify.passed
    for f in r.verify.files:
        tol = PARITY["ecapa"][f.kind]
        assert f.embedding_rows >= 40 and f.min_cosine >= tol.min_cosine and f.max_pair_delta <= tol.max_pair_delta
    sess = _ort(os.path.join(out, "onnx", "model.onnx"))
    assert [o.name for o in sess.get_outputs()] == ["logits", "embeddings"]
    x = np.stack([speech_like(16000, 120 + 60 * i, i) for i in range(3)])
    logits, emb = sess.run(None, {"input_values": x})
    assert emb.shape == (3, 192) and (emb >= 0).all()  # after the ReLU
    w = load_file(os.path.join(ecapa_ckpt, "model.safetensors"))
    np.testing.assert_allclose(emb @ w["fc7.weight"].T + w["fc7.bias"], logits, atol=1e-4)
    again = verify_folder(out, loaded=get_arch("ecapa").load(checkpoint=ecapa_ckpt, embeddings=True))
    assert again.passed and all(f.min_cosine >= 0.99999 for f in again.files if f.kind == "fp32")


def test_checkpoint_script_trains_every_weight():
    # scripts/make_ecapa_checkpoint.py --train-steps: end-to-end training moves every weight, not only the head
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_ecapa_checkpoint", os.path.join(os.path.dirname(__file__), "..", "scripts", "make_ecapa_checkpoint.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    model = build_model(16)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    t = np.arange(32000) / 16000
    low = [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (110, 130)]
    high = [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (220, 260)]
    info = script.train_end_to_end(model, np.random.default_rng(0), low, high, steps=3, batch=4, log=lambda m: None)
    assert info["train_steps"] == 3 and not model.training
    after = model.state_dict()
    learned = [k for k in before if k.endswith("weight") and "bn" not in k and not k.startswith("torchfbank")]
    assert learned and all(not torch.equal(before[k], after[k]) for k in learned)
