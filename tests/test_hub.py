"""Hub checkpoints, offline: huggingface_hub.snapshot_download is replaced by a fake that serves local folders
the way the hub cache does (.../snapshots/<commit>/, only the files matching allow_patterns)."""
import fnmatch
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from .conftest import other_weights


COMMITS = {None: "a" * 40, "main": "a" * 40, "v1": "b" * 40}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub

    repos, calls = {}, []
    cache = tmp_path / "cache"

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.append({"repo": repo_id, "revision": revision, "allow_patterns": list(allow_patterns or [])})
        if repo_id not in repos:
            raise FileNotFoundError(repo_id)
        commit = revision if revision and len(revision) == 40 else COMMITS[revision]
        dest = cache / repo_id.replace("/", "--") / "snapshots" / commit
        dest.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(repos[repo_id]):
            if allow_patterns is None or any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                shutil.copy(os.path.join(repos[repo_id], name), dest / name)
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return repos, calls


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_ecapa_from_the_hub_safetensors_first_with_revision(tmp_path, hub, ecapa_ckpt):
    import torch

    from voxport.archs import get_arch

    repos, calls = hub
    repo = str(shutil.copytree(ecapa_ckpt, tmp_path / "repo"))
    from safetensors.torch import load_file

    torch.save(load_file(os.path.join(repo, "model.safetensors")), os.path.join(repo, "pytorch_model.bin"))
    with open(os.path.join(repo, "LICENSE"), "w") as f:
        f.write("Apache License 2.0\n")
    repos["someone/ecapa"] = repo
    spec = get_arch("ecapa")
    loaded = spec.load(checkpoint="someone/ecapa", revision="v1")
    assert len(calls) == 1 and calls[0]["revision"] == "v1"
    assert "*.safetensors" in calls[0]["allow_patterns"] and not any(p.endswith(".bin") for p in calls[0]["allow_patterns"])
    assert loaded.source == {"arch": "ecapa", "checkpoint": "someone/ecapa", "revision": "b" * 40,
                             "weights": {"model.safetensors": sha(os.path.join(repo, "model.safetensors"))},
                             "random_init": False, "seed": None, "C": 64}
    card = spec.card(loaded)
    assert card["base_model"] == "someone/ecapa" and card["license"] == "other"
    assert spec.extra_files(loaded)["LICENSE"] == b"Apache License 2.0\n"

    # the folder's record rebuilds the same reference at the recorded commit; other weights there are refused
    from voxport.archs.source import load_source
    from voxport.errors import CheckpointError

    again = load_source(json.loads(json.dumps(loaded.source)))
    assert calls[-1]["revision"] == "b" * 40
    x = torch.zeros(1, 4000)
    assert torch.equal(again.model(x), loaded.model(x))
    other = other_weights(ecapa_ckpt, tmp_path / "other")
    repos["someone/ecapa"] = other
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(CheckpointError, match="differ from the ones"):
        load_source(loaded.source)


def test_wav2vec2_repo_with_only_pytorch_model_bin(tmp_path, hub):
    import torch
    from safetensors.torch import load_file

    from voxport.archs import get_arch
    from voxport.archs.wav2vec2 import make_checkpoint

    repos, calls = hub
    good = make_checkpoint(str(tmp_path / "st"), "wav2vec2", "ctc", "layer", seed=3)
    repo = shutil.copytree(good, tmp_path / "repo")
    torch.save(load_file(str(repo / "model.safetensors")), str(repo / "pytorch_model.bin"))
    os.remove(repo / "model.safetensors")
    repos["someone/w2v-ctc"] = str(repo)
    spec = get_arch("wav2vec2")
    loaded = spec.load(checkpoint="someone/w2v-ctc")
    assert [c["revision"] for c in calls] == [None, "a" * 40]  # the second call pins the commit of the first
    assert any("*.safetensors" in p for p in calls[0]["allow_patterns"])
    assert "pytorch_model*.bin" in calls[1]["allow_patterns"]
    assert loaded.source["weights"] == {"pytorch_model.bin": sha(repo / "pytorch_model.bin")}
    assert loaded.source["revision"] == "a" * 40 and "local" not in loaded.source
    ref = spec.load(checkpoint=good)
    x = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32)
    with torch.no_grad():
        assert torch.allclose(loaded.model(torch.from_numpy(x)), ref.model(torch.from_numpy(x)))


def test_revision_option_is_recorded(tmp_path, hub, ecapa_ckpt):
    import onnx
    from click.testing import CliRunner

    from voxport.cli import main
    from voxport.onnxutil import read_metadata

    repos, calls = hub
    repos["someone/ecapa"] = ecapa_ckpt
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["export-model", "--arch", "ecapa", "--checkpoint", "someone/ecapa", "--revision", "v1", "--opset", "17",
                                  "--output", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert calls[0]["revision"] == "v1"
    src = json.loads(read_metadata(onnx.load(str(out)))["voxport.source"])
    assert src["checkpoint"] == "someone/ecapa" and src["revision"] == "b" * 40
    assert str(tmp_path) not in json.dumps(src)  # not even the hub cache path
