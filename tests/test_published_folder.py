"""What a built folder publishes: nothing private, cards that say what the weights are, strict JSON,
atomic replacement, and a reference that can be rebuilt (with the same weights only)."""
import json
import math
import os
import shutil

import pytest
from click.testing import CliRunner

from voxport.cli import main

from .conftest import other_weights



def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def strict_json(text):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


PRIVATE = ("home-alice-secret", "projects-private")
LICENSE = "MIT License\n\nCopyright (c) 2025 Alice Example\n\nPermission is hereby granted ...\n"


@pytest.fixture(scope="module")
def private_build(tmp_path_factory, ecapa_ckpt):
    root = tmp_path_factory.mktemp("priv")
    ck = str(shutil.copytree(ecapa_ckpt, root / PRIVATE[0] / PRIVATE[1] / "my-voice-ckpt"))
    with open(os.path.join(ck, "LICENSE"), "w") as f:
        f.write(LICENSE)
    out = root / "published" / "voice-gender-onnx"
    # fp16 only: no keep-float search, a short build
    r = run("build", "--arch", "ecapa", "--checkpoint", ck, "--output-dir", out, "--opset", "17", "--quantize", "fp16", "--json")
    assert r.exit_code == 0, r.output
    return root, ck, out, r


def test_build_json_is_strict(private_build):
    *_, r = private_build
    report = strict_json(r.stdout)
    assert report["verify"]["status"] == "passed"


def test_no_private_path_anywhere(private_build):
    root, ck, out, _ = private_build
    needles = [os.path.abspath(ck), os.path.dirname(os.path.abspath(ck)), str(root), *PRIVATE]
    files = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
    assert any(f.endswith(".onnx") for f in files) and len(files) >= 7
    for path in files:
        data = open(path, "rb").read()  # ONNX metadata included
        for n in needles:
            assert n.encode() not in data, f"{n} found in {os.path.relpath(path, out)}"
    import onnx

    from voxport.onnxutil import read_metadata

    src = json.loads(read_metadata(onnx.load(str(out / "onnx" / "model.onnx")))["voxport.source"])
    want = {"arch": "ecapa", "checkpoint": "my-voice-ckpt", "local": True, "random_init": False, "seed": None, "C": 64}
    assert {k: v for k, v in src.items() if k != "weights"} == want
    import hashlib

    assert src["weights"] == {"model.safetensors": hashlib.sha256(open(os.path.join(ck, "model.safetensors"), "rb").read()).hexdigest()}
    assert strict_json((out / "voxport.json").read_text())["source"] == src


def test_card_tells_the_truth(private_build):
    _, ck, out, _ = private_build
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "license: mit" in front and "base_model" not in front  # a local folder names no hub model
    assert (out / "LICENSE").read_text() == LICENSE  # the checkpoint's own licence, not the upstream one
    assert 'pipeline("audio-classification", "voice-gender-onnx"' in card
    assert "wav2vec2 audio-classification wrapper runs any graph" in card
    assert "`my-voice-ckpt`" in card


def test_verify_needs_the_same_weights(private_build, tmp_path):
    _, ck, out, _ = private_build
    r = run("verify", out)
    assert r.exit_code == 2 and "pass --checkpoint" in r.stderr and "Traceback" not in r.output
    other = other_weights(ck, tmp_path / "other")
    r = run("verify", out, "--checkpoint", other)
    assert r.exit_code == 2 and "differ from the ones" in r.stderr and "model.safetensors" in r.stderr
    # the same weights anywhere else (hashes, not paths, decide)
    same = shutil.copytree(ck, tmp_path / "moved-copy")
    r = run("verify", out, "--checkpoint", same, "--json")
    assert r.exit_code == 0, r.output
    assert strict_json(r.stdout)["status"] == "passed"


def test_bench_and_quantize_json(private_build, tmp_path):
    _, ck, out, _ = private_build
    r = run("bench", out, "--checkpoint", ck, "--runs", "1", "--seconds", "0.75", "--json")
    assert r.exit_code == 0, r.output
    assert {row["name"] for row in strict_json(r.stdout)["rows"]} >= {"pytorch eager", "model.onnx"}
    q = tmp_path / "q.onnx"
    r = run("quantize", out / "onnx" / "model.onnx", "--output", q, "--json")
    assert r.exit_code == 0, r.output
    d = strict_json(r.stdout)
    assert d["path"] == str(q) and d["mode"] == "q8" and os.path.isfile(q)


def test_nan_in_a_report_is_null_in_json(monkeypatch, tmp_path):
    """Transformers.js rows carry NaN logits figures: --json prints null, never a bare NaN."""
    import voxport.verify.check as check
    from voxport.results import FileReport, Status, VerifyReport

    nan = float("nan")
    rep = VerifyReport(status=Status.PASSED, cases=["a"], reference="x", files=[
        FileReport("model.onnx", "fp32", "node", Status.PASSED, 1, nan, nan, 1e-7, math.inf, 0, 0, 1, 1, {"max_abs_logit": None})])
    folder = tmp_path / "f"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(b"")
    (folder / "voxport.json").write_text(json.dumps({"source": {"arch": "ecapa", "random_init": True, "seed": 0, "C": 8}}))
    monkeypatch.setattr(check, "verify_folder", lambda *a, **k: rep)
    monkeypatch.setattr("voxport.cli._load_folder_source", lambda *a, **k: None)
    r = run("verify", folder, "--json")
    assert r.exit_code == 0, r.output
    f = strict_json(r.stdout)["files"][0]
    assert f["max_abs_logit"] is None and f["mean_abs_prob"] is None and f["max_abs_prob"] == 1e-7
    assert "NaN" not in r.stdout and "Infinity" not in r.stdout


# --- atomic replacement -----------------------------------------------------------------------------------

def _folder(path, text):
    os.makedirs(path)
    with open(os.path.join(path, "f.txt"), "w") as f:
        f.write(text)
    return str(path)


@pytest.mark.parametrize("swap", [True, False], ids=["exchange", "rename-aside"])
def test_publish_replaces_atomically(tmp_path, monkeypatch, swap):
    import voxport.files as pkg

    if not swap:
        monkeypatch.setattr(pkg, "_exchange", lambda a, b: False)
    dest = _folder(tmp_path / "out", "old")
    tmp = _folder(tmp_path / ".voxport-build-1", "new")
    with pytest.raises(pkg.PackageError, match="already exists"):
        pkg.publish(tmp, dest, force=False)
    pkg.publish(tmp, dest, force=True)
    assert open(os.path.join(dest, "f.txt")).read() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_failed_second_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    import voxport.files as pkg

    monkeypatch.setattr(pkg, "_exchange", lambda a, b: False)
    dest = _folder(tmp_path / "out", "old")
    tmp = _folder(tmp_path / ".voxport-build-1", "new")
    real = os.replace

    def replace(a, b):
        if str(a) == tmp:
            raise OSError(5, "Input/output error")
        return real(a, b)

    monkeypatch.setattr(pkg.os, "replace", replace)
    with pytest.raises(OSError):
        pkg.publish(tmp, dest, force=True)
    assert open(os.path.join(dest, "f.txt")).read() == "old" and not os.path.exists(dest + ".old-voxport")


def test_interrupted_replacement_is_undone_on_the_next_run(tmp_path):
    from voxport.files import check_output_dir, recover_interrupted

    dest = str(tmp_path / "out")
    _folder(dest + ".old-voxport", "old")  # killed between the two renames: neither name holds the new folder
    recover_interrupted(dest)
    assert open(os.path.join(dest, "f.txt")).read() == "old" and not os.path.exists(dest + ".old-voxport")
    _folder(dest + ".old-voxport", "older")  # killed after the new folder was in place: the old one goes
    with pytest.raises(Exception, match="already exists"):
        check_output_dir(dest, force=False)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_wav2vec2_random_init_leaves_no_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    from voxport.archs import get_arch

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    spec = get_arch("wav2vec2")
    for task in ("cls", "ctc"):
        loaded = spec.load(random_init=True, seed=1, task=task)
        assert [p for p in os.listdir(scratch) if p.startswith("voxport")] == []
        # everything packaging needs was read while loading
        assert spec.hf_config(loaded)["model_type"] == "wav2vec2"
        assert spec.preprocessor_config(loaded)["sampling_rate"] == 16000
        files = spec.extra_files(loaded)
        assert "LICENSE" not in files and (("tokenizer.json" in files) == (task == "ctc"))
        card = spec.card(loaded)
        assert card["base_model"] is None and any("seeded random" in n for n in card["notes"])
