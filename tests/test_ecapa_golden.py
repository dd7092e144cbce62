"""voxport's ECAPA module against logits of the upstream ECAPA_gender code (JaesungHuh/voice-gender-classifier,
model.py at the commit in the fixture), computed once on a seeded checkpoint and stored in
tests/fixtures/ecapa_upstream_golden.json. The weights are rebuilt here from the seed, so a change to
the front end, the block order or any layer's math shows up as a logit difference."""
import hashlib
import json
import os

import numpy as np
import pytest

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ecapa_upstream_golden.json")


def seeded_ecapa_state_dict(shapes: dict, seed: int = 0) -> dict:
    """Deterministic ECAPA_gender weights for every key of `shapes` (name -> shape), as numpy arrays.

    Keys are drawn in sorted order from np.random.default_rng(seed): Conv/Linear weights and biases
    ~ N(0, 1/sqrt(fan_in)); BatchNorm weight ~ U(0.8, 1.2), bias ~ N(0, 0.1), running_mean ~ N(0, 0.1),
    running_var ~ U(0.5, 1.5), num_batches_tracked 0."""
    rng = np.random.default_rng(seed)
    names = set(shapes)
    is_bn = lambda prefix: prefix + ".running_mean" in names  # noqa: E731
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        prefix, leaf = key.rsplit(".", 1)
        if leaf == "num_batches_tracked":
            out[key] = np.zeros(shape, np.int64)
        elif is_bn(prefix):
            if leaf == "weight":
                x = rng.uniform(0.8, 1.2, shape)
            elif leaf == "running_var":
                x = rng.uniform(0.5, 1.5, shape)
            else:  # bias, running_mean
                x = rng.normal(0.0, 0.1, shape)
            out[key] = x.astype(np.float32)
        else:
            w = shapes[prefix + ".weight"]
            fan_in = int(np.prod(w[1:]))
            out[key] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape).astype(np.float32)
    return out


def golden_inputs(spec: list) -> list:
    """The fixture's input batches: voxport.archs.suite.speech_like rows (length, f0, seed)."""
    from voxport.archs.suite import speech_like

    return [np.stack([speech_like(int(r["samples"]), float(r["f0"]), int(r["seed"])) for r in batch]) for batch in spec]


def input_digest(batches: list) -> str:
    h = hashlib.sha256()
    for b in batches:
        h.update(np.ascontiguousarray(b, np.float32).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def golden():
    with open(FIXTURE) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def golden_checkpoint(golden, tmp_path_factory):
    """The fixture's seeded weights in the upstream layout: config.json + model.safetensors."""
    import torch
    from safetensors.torch import save_file

    from voxport.archs.ecapa import build_model

    C, seed = golden["C"], golden["seed"]
    shapes = {k: tuple(v.shape) for k, v in build_model(C).state_dict().items()}
    assert len(shapes) == golden["keys"]
    sd = {k: torch.from_numpy(v) for k, v in seeded_ecapa_state_dict(shapes, seed).items()}
    folder = tmp_path_factory.mktemp("golden") / "ecapa-seeded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"C": C}))
    save_file(sd, str(folder / "model.safetensors"))
    return str(folder)


@pytest.fixture(scope="module")
def golden_batches(golden):
    batches = golden_inputs(golden["inputs"])
    # the inputs come from voxport's suite: if they changed, regenerate the fixture rather than chase the model
    assert input_digest(batches) == golden["input_sha256"], "speech_like changed: the golden inputs are not the fixture's"
    return batches


@pytest.mark.parametrize("front_end", ["stft", "dft"])
def test_ecapa_matches_upstream_logits(golden, golden_checkpoint, golden_batches, front_end):
    import torch

    from voxport.archs import get_arch

    loaded = get_arch("ecapa").load(checkpoint=golden_checkpoint, front_end=front_end)
    assert loaded.config["C"] == golden["C"] and not loaded.model.training
    for batch, want in zip(golden_batches, golden["logits"]):
        with torch.no_grad():
            got = loaded.model(torch.from_numpy(batch)).numpy()
        want = np.asarray(want, np.float32)
        assert got.shape == want.shape
        # the stored logits are far from zero and differ between rows: a silent no-op would not match
        assert np.abs(want).max() > 0.1
        assert np.abs(got - want).max() <= golden["tolerance"], (front_end, np.abs(got - want).max())


def test_exported_onnx_matches_upstream_logits(golden, golden_checkpoint, golden_batches, tmp_path):
    import onnxruntime as ort

    from voxport.export import export_model

    path = str(tmp_path / "model.onnx")
    export_model("ecapa", path, checkpoint=golden_checkpoint, opset=18)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for batch, want in zip(golden_batches, golden["logits"]):
        got = sess.run(None, {name: batch})[0]
        assert np.abs(got - np.asarray(want, np.float32)).max() <= golden["tolerance"]
