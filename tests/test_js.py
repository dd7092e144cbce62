"""Transformers.js in Node and in headless Chromium, on built folders, against onnxruntime-python and PyTorch."""
import json
import os
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from voxport.build import build
from voxport.cli import main
from voxport.tolerances import runtime as runtime_tolerance

pytestmark = pytest.mark.js  # Node and headless Chromium: `pytest -m "not js"` leaves them out


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def small_ecapa(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("js") / "ecapa")
    build("ecapa", out, random_init=True, seed=0, load_options={"C": 64}, quantize_modes=("q8",))
    return out


def tamper(folder):
    """Scale the last classifier weight of model.onnx: a file that loads fine but drifts."""
    p = os.path.join(folder, "onnx", "model.onnx")
    m = onnx.load(p)
    inits = {i.name: i for i in m.graph.initializer}
    made = {o: n for n in m.graph.node for o in n.output}
    node = made[m.graph.output[0].name]  # back from the logits to the first node with a 2-D weight: the classifier
    while not any(x in inits and len(inits[x].dims) == 2 for x in node.input):
        node = made[node.input[0]]
    w = next(inits[x] for x in node.input if x in inits and len(inits[x].dims) == 2)
    w.CopyFrom(onnx.numpy_helper.from_array((onnx.numpy_helper.to_array(w) * 1.5).astype(np.float32), w.name))
    onnx.save(m, p)


def test_ecapa_folder_in_transformers_js(tmp_path, small_ecapa):
    # both runtimes in one run: the PyTorch references are computed once
    r = run("verify", small_ecapa, "--runtime", "node,browser", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    files = {(f["file"], f["runtime"]): f for f in report["files"]}
    assert set(files) == {(n, rt) for n in ("model.onnx", "model_quantized.onnx") for rt in ("node", "browser")}
    for (name, rt), f in files.items():
        assert f["argmax_agree"] == f["argmax_total"] > 10
        assert f["extra"]["max_dp_vs_onnxruntime_python"] <= runtime_tolerance(rt, "float")
        assert f["tolerance"]["vs_onnxruntime_python"] == runtime_tolerance(rt, "float")
        assert f["extra"]["median_ms"] > 0
    assert files["model.onnx", "browser"]["extra"]["crossOriginIsolated"] is True
    assert files["model.onnx", "browser"]["extra"]["threads"] >= 1
    bad = tmp_path / "bad"
    shutil.copytree(small_ecapa, bad)
    tamper(bad)
    r = run("verify", bad, "--runtime", "node,browser", "--json")
    assert r.exit_code == 1
    status = {(f["file"], f["runtime"]): (f["status"], " ".join(f["reasons"])) for f in json.loads(r.output)["files"]}
    for rt in ("node", "browser"):
        assert status["model.onnx", rt][0] == "failed" and "vs PyTorch" in status["model.onnx", rt][1]
        assert status["model_quantized.onnx", rt][0] == "passed"


def test_wav2vec2_folders_in_node(tmp_path):
    from voxport.archs.wav2vec2 import make_checkpoint

    vocab = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("abcdeilmnorstuãçéõ")
    cls = make_checkpoint(str(tmp_path / "cls"), "wav2vec2", "cls", "layer", seed=2)
    ctc = make_checkpoint(str(tmp_path / "ctc"), "wav2vec2", "ctc", "layer", seed=3, vocab=vocab)
    for name, ck in [("cls", cls), ("ctc", ctc)]:
        out = tmp_path / f"out-{name}"
        result = build("wav2vec2", str(out), checkpoint=ck, quantize_modes=("q8",), runtimes=("python", "node"))
        assert {f.runtime for f in result.verify.files} == {"python", "node"}
        card = (out / "README.md").read_text()
        assert "| node |" in card.splitlines()[card.splitlines().index("## Files") + 2]
        r = run("verify", out, "--checkpoint", ck, "--runtime", "python,node", "--json")
        assert r.exit_code == 0, r.output
        files = [f for f in json.loads(r.output)["files"] if f["runtime"] == "node"]
        assert len(files) == 2
        if name == "ctc":
            for f in files:
                eq = f["extra"]["transcripts_equal_ort"]
                assert eq.split("/")[0] == eq.split("/")[1]
                # the frames behind the text came back and were judged against onnxruntime-python
                dec = f["extra"]["decisive_frames_equal_ort"].split("/")
                assert dec[0] == dec[1] and (int(dec[1]) > 0 or f["file"] != "model.onnx")  # q8's bar: none decisive here
                assert f["extra"]["max_dp_vs_onnxruntime_python"] <= (1e-5 if f["file"] == "model.onnx" else 2e-2)
            assert files[0]["extra"]["transcripts_equal_pytorch"].split("/")[0] == files[0]["extra"]["transcripts_equal_pytorch"].split("/")[1]


def test_frame_agreement_separates_near_ties_from_decisive_flips():
    import numpy as np

    from voxport.verify.check import frame_agreement

    want = np.log(np.array([[[0.90, 0.05, 0.05], [0.45, 0.44, 0.11], [0.10, 0.80, 0.10]]]))
    near = np.log(np.array([[[0.90, 0.05, 0.05], [0.44, 0.45, 0.11], [0.10, 0.80, 0.10]]]))  # a near tie flips
    r = frame_agreement(["a"], [near], [want], 2e-2)
    assert r["decisive_total"] == 2 and r["decisive_agree"] == 2 and abs(r["max_dp"] - 0.01) < 1e-9
    flip = np.log(np.array([[[0.05, 0.90, 0.05], [0.45, 0.44, 0.11], [0.10, 0.80, 0.10]]]))  # a decisive frame flips
    r = frame_agreement(["a"], [flip], [want], 2e-2)
    assert r["decisive_agree"] == 1 and r["max_dp"] > 0.8
    assert frame_agreement(["a"], [want[:, :2]], [want], 2e-2)["max_dp"] == float("inf")  # frames missing


def test_missing_transformers_js_is_a_one_line_error(monkeypatch, small_ecapa):
    import voxport.verify.jsrun as jr

    monkeypatch.setattr(jr, "JS_DIR", "/nonexistent")
    r = run("verify", small_ecapa, "--runtime", "node")
    assert r.exit_code == 2 and "npm ci" in r.output
