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
