"""wav2vec2-family embeddings: x-vector heads (`embeddings`) and plain encoders (`last_hidden_state`, frames)."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers

from voxport.archs import get_arch
from voxport.archs.base import Case
from voxport.archs.wav2vec2 import make_checkpoint
from voxport.build import build
from voxport.export import export_model
from voxport.tolerances import parity
from voxport.verify.check import compare_embeddings
from voxport.archs.suite import speech_like

# (model type, task, feature-encoder norm)
COMBOS = [("wav2vec2", "xvector", "layer"), ("wavlm", "xvector", "group"), ("wavlm", "frames", "layer"),
          ("hubert", "frames", "group")]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("w2v-emb")
    return {c: make_checkpoint(str(root / "-".join(c)), *c, seed=1, spread=True) for c in COMBOS}


def padded_batch(lengths, seed=0):
    x = np.zeros((len(lengths), max(lengths)), np.float32)
    mask = np.zeros_like(x, dtype=np.int64)
    for i, n in enumerate(lengths):
        x[i, :n] = speech_like(n, 110 + 40 * i, seed + i)
        mask[i, :n] = 1
    return x, mask


def test_xvector_graph_pools_like_transformers(tmp_path, ckpts):
    """transformers pools x-vector frames row by row in a Python loop; the graph masks instead. Both on a padded batch
    (and the same graph on another batch size, which a traced loop would have frozen)."""
    spec = get_arch("wav2vec2")
    loaded = spec.load(checkpoint=ckpts[("wav2vec2", "xvector", "layer")])
    hf = transformers.Wav2Vec2ForXVector.from_pretrained(ckpts[("wav2vec2", "xvector", "layer")]).eval()
    path = str(tmp_path / "x.onnx")
    export_model("wav2vec2", path, loaded=loaded)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["embeddings"]
    for lengths in ([24000, 15000, 5600], [9000, 16000]):
        x, mask = padded_batch(lengths)
        with torch.no_grad():
            want = hf(torch.from_numpy(x), attention_mask=torch.from_numpy(mask)).embeddings.numpy()
        got = sess.run(None, {"input_values": x, "attention_mask": mask})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    # the shortest clip the spec allows gives finite embeddings (the TDNN's dilated context leaves 2 frames)
    n = spec.min_samples(loaded)
    short = speech_like(n, 150, 3)[None]
    assert np.isfinite(sess.run(None, {"input_values": short, "attention_mask": np.ones_like(short, np.int64)})[0]).all()
    with pytest.raises(Exception):
        hf(torch.from_numpy(speech_like(n - 400, 150, 3)[None]))  # well under it, transformers cannot run either


@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_build_and_parity(tmp_path, ckpts, combo):
    model_type, task, norm = combo
    out = tmp_path / "out"
    r = build("wav2vec2", str(out), checkpoint=ckpts[combo], quantize_modes=("fp16", "q8"))
    assert r.verify.passed, r.verify.to_table()
    name = "embeddings" if task == "xvector" else "last_hidden_state"
    m = onnx.load(str(out / "onnx" / "model.onnx"))
    assert [o.name for o in m.graph.output] == [name]
    assert len(m.graph.output[0].type.tensor_type.shape.dim) == (2 if task == "xvector" else 3)
    layer = norm == "layer"
    assert [i.name for i in m.graph.input] == (["input_values", "attention_mask"] if layer else ["input_values"])
    assert any(c.startswith("padded batch") for c in r.verify.cases) is layer
    files = {f.file: f for f in r.verify.files}
    fp32 = files["model.onnx"]
    assert fp32.min_cosine >= parity("wav2vec2", "fp32").min_cosine and fp32.max_pair_delta <= 1e-4
    assert fp32.embedding_rows >= len(r.verify.cases)  # every row (and every frame) was compared
    for f in ("model_fp16.onnx", "model_quantized.onnx"):
        assert files[f].min_cosine >= 0.995 and files[f].max_pair_delta <= 0.02
    cfg = json.loads((out / "config.json").read_text())
    head = {"xvector": "ForXVector", "frames": "Model"}[task]
    assert cfg["architectures"][0].endswith(head) and cfg["model_type"] == model_type
    card = (out / "README.md").read_text()
    assert "AutoModel.from_pretrained" in card and f").{name}" in card
    assert ("mean(1)" in card) is (task == "frames")
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["voxport.task"] == "feature-extraction"
    # the shortest clip is recorded (an x-vector head needs its TDNN context too): `voxport run` says so on a shorter one
    from voxport.infer.folder import ModelFolder

    n_min = get_arch("wav2vec2").min_samples(get_arch("wav2vec2").load(checkpoint=ckpts[combo]))
    mf = ModelFolder(str(out))
    assert mf.min_samples(mf.open("fp32")) == n_min


def test_frames_are_compared_frame_by_frame(ckpts):
    """One wrong frame among thousands fails the cosine bar; frames a padded row does not have (NaN in the reference)
    are not compared."""
    ref = np.random.default_rng(0).standard_normal((2, 50, 16)).astype(np.float32)
    ref[1, 30:] = np.nan  # row 1 has 30 frames alone
    out = np.where(np.isfinite(ref), ref, 123.0).astype(np.float32)
    tol = parity("wav2vec2", "q8")
    figures, reasons = compare_embeddings([Case("c", np.zeros((2, 10), np.float32))], [ref], [out], tol)
    assert reasons == [] and figures["embedding_rows"] == 80 and figures["min_cosine"] > 0.9999999
    bad = out.copy()
    bad[0, 7] = -bad[0, 7]
    figures, reasons = compare_embeddings([Case("c", np.zeros((2, 10), np.float32))], [ref], [bad], tol)
    assert figures["min_cosine"] < -0.99 and "frame 7" in reasons[0]


@pytest.mark.js
def test_folder_in_transformers_js_node(tmp_path, ckpts, monkeypatch):
    """AutoFeatureExtractor + AutoModel in Node give onnxruntime-python's embeddings, and verify --runtime node checks
    them against PyTorch."""
    import voxport.verify.speech as speech
    from voxport.verify.check import verify_folder
    from voxport.verify.jsrun import run_outputs

    monkeypatch.setattr(speech, "speech_clips", lambda sr=16000: [])
    ckpt = ckpts[("wav2vec2", "xvector", "layer")]
    out = str(tmp_path / "out")
    build("wav2vec2", out, checkpoint=ckpt, quantize_modes=("q8",))
    clips = [speech_like(16000, 120, 1), speech_like(23000, 200, 2)]
    got = run_outputs(out, ["fp32", "q8"], clips)
    for dtype, name in (("fp32", "model.onnx"), ("q8", "model_quantized.onnx")):
        assert got[dtype]["error"] is None, got[dtype]["error"]
        sess = ort.InferenceSession(os.path.join(out, "onnx", name), providers=["CPUExecutionProvider"])
        for row, wav in zip(got[dtype]["rows"], clips):
            x = ((wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)).astype(np.float32)[None]  # the feature extractor
            want = sess.run(None, {"input_values": x, "attention_mask": np.ones_like(x, np.int64)})[0]
            assert np.abs(row["embeddings"] - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
    rep = verify_folder(out, runtime="node", loaded=get_arch("wav2vec2").load(checkpoint=ckpt))
    assert rep.passed, rep.to_table()
    assert {f.file for f in rep.files} == {"model.onnx", "model_quantized.onnx"} and all(f.runtime == "node" for f in rep.files)


def test_embeddings_flag_adds_frames_to_a_ctc_graph(tmp_path, ckpts):
    """`--embeddings` on a CTC checkpoint: logits as without it (same transcripts), plus last_hidden_state checked per
    frame; an x-vector checkpoint already outputs its embeddings, so the flag is refused there."""
    from click.testing import CliRunner

    from voxport.cli import main

    ckpt = make_checkpoint(str(tmp_path / "ctc"), "wav2vec2", "ctc", "layer", seed=2, spread=True)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["build", "--arch", "wav2vec2", "--checkpoint", ckpt, "--embeddings", "--quantize", "q8",
                                  "--output-dir", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rep = {f["file"]: f for f in json.loads(r.stdout)["verify"]["files"]}
    assert rep["model.onnx"]["max_abs_logit"] <= 1e-4 and rep["model.onnx"]["min_cosine"] >= 0.99999
    t = rep["model.onnx"]["extra"]["transcripts_equal"].split("/")
    assert t[0] == t[1]
    m = onnx.load(str(out / "onnx" / "model.onnx"))
    assert [o.name for o in m.graph.output] == ["logits", "last_hidden_state"]
    src = json.loads((out / "voxport.json").read_text())["source"]
    assert src["embeddings"] is True
    # the logits are the plain CTC graph's
    plain = tmp_path / "plain.onnx"
    export_model("wav2vec2", str(plain), checkpoint=ckpt)
    x = speech_like(20000, 150, 4)[None]
    feed = {"input_values": x, "attention_mask": np.ones_like(x, np.int64)}
    a = ort.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)
    b = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.abs(a[0] - b).max() <= 1e-5 and a[1].shape[:2] == a[0].shape[:2]
    r = CliRunner().invoke(main, ["build", "--arch", "wav2vec2", "--checkpoint", ckpts[("wavlm", "xvector", "group")],
                                  "--embeddings", "--output-dir", str(tmp_path / "x")])
    assert r.exit_code == 2 and "already outputs embeddings" in r.output
