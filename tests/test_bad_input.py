"""Bad input through the command line: the right exit code, one `error:` line, no traceback, nothing left behind.

Exit codes: 0 ok, 1 verification failed, 2 the user's input is wrong, 3 voxport itself failed, 130 interrupted.
"""
import json
import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from voxport.cli import main

from .conftest import write_wav


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)


def assert_fails(result, code, *fragments, only_line=True):
    """Exit `code`; the last stderr line is the only `error:` line and holds every fragment; no traceback."""
    err = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in err if ln.startswith("error:")]
    assert len(errors) == 1 and err[-1] == errors[0], result.stderr
    if only_line:  # refused before any work: nothing else was printed
        assert len(err) == 1, result.stderr
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


def leftovers(*folders):
    """Temporary or half-written entries voxport could leave behind."""
    out = []
    for d in folders:
        if os.path.isdir(d):
            out += [p for p in os.listdir(d) if p.startswith(".voxport") or p.endswith(".old-voxport")]
    return out


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything asks the hub."""
    import huggingface_hub

    calls = []

    def fake(*a, **k):
        calls.append((a, k))
        raise RuntimeError("network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls


# --- output locations -------------------------------------------------------------------------------------

def test_output_under_a_regular_file(tmp_path):
    f = tmp_path / "some_file"
    f.write_text("x")
    r = run("build", "--arch", "ecapa", "--random-init", "--output-dir", f / "out")
    assert_fails(r, 2, "is a file, not a folder", "--output-dir")
    assert f.read_text() == "x" and not leftovers(tmp_path)
    r = run("export-model", "--arch", "ecapa", "--random-init", "--output", f / "m.onnx")
    assert_fails(r, 2, "is a file, not a folder", "--output")


def test_output_is_an_existing_file(tmp_path):
    f = tmp_path / "out"
    f.write_text("mine")
    assert_fails(run("build", "--arch", "ecapa", "--random-init", "--output-dir", f, "--force"), 2, "not a folder")
    assert f.read_text() == "mine"


def test_unwritable_output_place(tmp_path):
    # /proc takes no new folders, even for root
    assert_fails(run("build", "--arch", "ecapa", "--random-init", "--output-dir", "/proc/voxport-nope/out"), 2, "cannot write in /proc")
    if os.getuid() != 0:  # permissions do not stop root
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            assert_fails(run("build", "--arch", "ecapa", "--random-init", "--output-dir", ro / "out"), 2, "cannot write in")
        finally:
            ro.chmod(0o700)


# --- options ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["build", "--arch", "ecapa", "--random-init", "--no-such-flag"], "No such option"),
    (["--no-such-flag", "build"], "No such option"),
    (["build", "--arch", "nope", "--random-init"], "Invalid value for '--arch'"),
    (["build", "--arch", "ecapa", "--random-init", "--quantize", "q8,q7"], "unknown quantization mode 'q7'"),
    (["build", "--arch", "ecapa", "--random-init", "--q8-target", "2"], "--q8-target"),
    (["build", "--arch", "ecapa", "--random-init", "--runtime", "python,jvm"], "unknown runtime 'jvm'"),
    (["build", "--arch", "ecapa"], "exactly one of"),
    (["build", "--arch", "speechbrain", "--checkpoint", "x", "--embeddings"], "--embeddings: speechbrain"),
    (["verify"], "Missing argument"),
    (["no-such-command"], "No such command"),
    (["bench", "/nonexistent/folder"], "folder not found"),
])
def test_bad_options(tmp_path, args, fragment):
    r = run(*args, "--output-dir", tmp_path / "out") if args[0] == "build" and "--no-such-flag" not in args else run(*args)
    assert_fails(r, 2, fragment)
    assert not os.path.exists(tmp_path / "out") and not leftovers(tmp_path)


# --- audio ------------------------------------------------------------------------------------------------

def _audio_files(tmp_path):
    import soundfile as sf

    notes = tmp_path / "notes.txt"
    notes.write_text("not audio at all")
    good = write_wav(str(tmp_path / "good.wav"), seconds=0.5, sr=16000, channels=1)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(open(good, "rb").read()[:30])  # a header cut short
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    nan = tmp_path / "nan.wav"
    x = np.full(8000, 0.1, np.float32)
    x[100] = np.nan
    sf.write(str(nan), x, 16000, subtype="FLOAT")
    return {"not audio": (notes, "not an audio file"), "broken": (broken, "not an audio file"),
            "empty": (empty, "no samples"), "nan": (nan, "NaN"), "missing": (tmp_path / "absent.wav", "not found")}


def test_bad_audio_is_refused_before_any_work(tmp_path, no_hub):
    for name, (path, fragment) in _audio_files(tmp_path).items():
        r = run("build", "--arch", "ecapa", "--random-init", "--audio", path, "--output-dir", tmp_path / "out")
        assert_fails(r, 2, fragment)  # one line: no "loading checkpoint" before it
        assert not os.path.exists(tmp_path / "out") and not leftovers(tmp_path), name


def test_bad_audio_in_verify(tmp_path, ecapa_folder, ecapa_ckpt):
    for name, (path, fragment) in _audio_files(tmp_path).items():
        assert_fails(run("verify", ecapa_folder, "--checkpoint", ecapa_ckpt, "--audio", path), 2, fragment)


# --- checkpoints ------------------------------------------------------------------------------------------

def test_local_looking_paths_are_not_hub_ids(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpts").mkdir()
    for ck in ["ckpts/voice-gender", "./voice-gender", "~/no-such-voxport-ckpt", "a/b/c", "voice-gender", str(tmp_path / "x")]:
        r = run("build", "--arch", "ecapa", "--checkpoint", ck, "--output-dir", tmp_path / "out")
        assert_fails(r, 2, f"checkpoint folder not found: {ck}")
    assert not no_hub, "a local-looking path was looked up on the hub"
    # a well-formed hub id with no local folder of that owner does go to the hub (offline here: one line, exit 2)
    r = run("build", "--arch", "ecapa", "--checkpoint", "someone/voice-gender", "--output-dir", tmp_path / "out")
    assert_fails(r, 2, "cannot download 'someone/voice-gender'", only_line=False)
    assert len(no_hub) == 1
    assert not leftovers(tmp_path) and not os.path.exists(tmp_path / "out")


def test_revision_of_a_local_folder(tmp_path, ecapa_ckpt):
    r = run("build", "--arch", "ecapa", "--checkpoint", ecapa_ckpt, "--revision", "v1", "-o", tmp_path / "out")
    assert_fails(r, 2, "--revision is for hub checkpoints", only_line=False)
    assert os.listdir(tmp_path) == []


def test_checkpoint_that_is_a_file(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    assert_fails(run("build", "--arch", "ecapa", "--checkpoint", f, "-o", tmp_path / "out"), 2, "must be a folder")


class _Hostile:
    """Unpickling this runs code (makes a folder): weights_only loading must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _ecapa_variants(tmp_path, good):
    from safetensors.torch import save_file
    import torch

    out = {}
    raw = open(os.path.join(good, "model.safetensors"), "rb").read()
    for name, data in {"corrupt": os.urandom(4096), "truncated": raw[: len(raw) // 2]}.items():
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text('{"C": 64}')
        (d / "model.safetensors").write_bytes(data)
        out[name] = (d, "cannot read")
    d = tmp_path / "hostile"
    d.mkdir()
    (d / "config.json").write_text('{"C": 64}')
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"conv1.weight": _Hostile(str(tmp_path / "PWNED"))}, f)
    out["hostile"] = (d, "plain weights")
    d = tmp_path / "mismatch"
    d.mkdir()
    (d / "config.json").write_text('{"C": 128}')
    (d / "model.safetensors").write_bytes(raw)
    out["config/weights mismatch"] = (d, "config.json says C=128 but the weights have C=64")
    d = tmp_path / "badjson"
    d.mkdir()
    (d / "config.json").write_text('{"C": ')
    (d / "model.safetensors").write_bytes(raw)
    out["config not JSON"] = (d, "not valid JSON")
    d = tmp_path / "wrongkeys"
    d.mkdir()
    save_file({"encoder.weight": torch.zeros(3)}, str(d / "model.safetensors"))
    out["other model"] = (d, "weights do not match")
    d = tmp_path / "noweights"
    d.mkdir()
    (d / "config.json").write_text('{"C": 64}')
    out["no weights"] = (d, "no model.safetensors or pytorch_model.bin")
    return out


def test_bad_ecapa_checkpoints(tmp_path, ecapa_ckpt):
    work = tmp_path / "ckpts"
    work.mkdir()
    for name, (ck, fragment) in _ecapa_variants(work, ecapa_ckpt).items():
        r = run("build", "--arch", "ecapa", "--checkpoint", ck, "--output-dir", tmp_path / "out")
        assert_fails(r, 2, fragment, only_line=False)
        assert not os.path.exists(tmp_path / "out") and not leftovers(tmp_path), name
    assert not (work / "PWNED").exists(), "a pickle ran code"


def test_bad_wav2vec2_checkpoints(tmp_path):
    from voxport.archs.wav2vec2 import make_checkpoint

    good = make_checkpoint(str(tmp_path / "good"), "wav2vec2", "ctc", "layer", seed=0)
    cases = {}
    d = tmp_path / "hostile"
    d.mkdir()
    for f in ("config.json", "preprocessor_config.json", "vocab.json", "tokenizer_config.json"):
        (d / f).write_bytes(open(os.path.join(good, f), "rb").read())
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Hostile(str(tmp_path / "PWNED"))}, f)
    cases["hostile"] = (d, "cannot load the weights")
    d = tmp_path / "mismatch"
    d.mkdir()
    for f in ("preprocessor_config.json", "vocab.json", "tokenizer_config.json", "model.safetensors"):
        (d / f).write_bytes(open(os.path.join(good, f), "rb").read())
    cfg = json.load(open(os.path.join(good, "config.json")))
    cfg["hidden_size"], cfg["intermediate_size"] = 48, 64
    (d / "config.json").write_text(json.dumps(cfg))
    cases["config/weights mismatch"] = (d, "cannot load the weights")
    d = tmp_path / "badvocab"
    d.mkdir()
    for f in ("config.json", "preprocessor_config.json", "tokenizer_config.json", "model.safetensors"):
        (d / f).write_bytes(open(os.path.join(good, f), "rb").read())
    (d / "vocab.json").write_text('{"a": 1, ')
    cases["vocab not JSON"] = (d, "vocab.json in the checkpoint is not valid JSON")
    d = tmp_path / "truncated"
    d.mkdir()
    for f in ("config.json", "preprocessor_config.json", "vocab.json", "tokenizer_config.json"):
        (d / f).write_bytes(open(os.path.join(good, f), "rb").read())
    raw = open(os.path.join(good, "model.safetensors"), "rb").read()
    (d / "model.safetensors").write_bytes(raw[: len(raw) // 3])
    cases["truncated"] = (d, "cannot load the weights")
    for name, (ck, fragment) in cases.items():
        r = run("build", "--arch", "wav2vec2", "--checkpoint", ck, "--output-dir", tmp_path / "out")
        assert_fails(r, 2, fragment, only_line=False)
        assert not os.path.exists(tmp_path / "out") and not leftovers(tmp_path), name
    assert not (tmp_path / "PWNED").exists(), "a pickle ran code"


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00garbage" * 100)
    assert_fails(run("quantize", bad, "--output", tmp_path / "q.onnx"), 2, "not a readable ONNX file")
    assert_fails(run("verify", bad, "--arch", "ecapa", "--random-init"), 2, "not a readable ONNX file")
    assert not (tmp_path / "q.onnx").exists() and not leftovers(tmp_path)


# --- voxport's own failures, interrupts, --debug ------------------------------------------------------------

def _boom(exc):
    def f(*a, **k):
        raise exc
    return f


@pytest.mark.parametrize("exc, code, fragment", [
    (RuntimeError("onnxruntime: [ONNXRuntimeError] : 1 : FAIL : Load model failed\nmore lines"), 3,
     "voxport failed: RuntimeError: onnxruntime: [ONNXRuntimeError] : 1 : FAIL : Load model failed; run with --debug for the traceback"),
    (ValueError("checker: Field 'type' of 'value_info' is required but missing."), 3, "run with --debug for the traceback"),
    (PermissionError(13, "Permission denied", "/srv/shared/out"), 2, "cannot use /srv/shared/out: Permission denied"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_unexpected_failures_keep_the_contract(tmp_path, monkeypatch, ecapa_ckpt, exc, code, fragment):
    import voxport.build as vb

    monkeypatch.delenv("VOXPORT_DEBUG", raising=False)
    monkeypatch.setattr(vb, "export_model", _boom(exc))
    out = tmp_path / "new" / "deeper" / "out"
    line = assert_fails(run("build", "--arch", "ecapa", "--checkpoint", ecapa_ckpt, "--output-dir", out), code, fragment, only_line=False)
    if code == 3:
        assert line.endswith("run with --debug for the traceback")
    assert os.listdir(tmp_path) == []  # not even the folders made for the output


def test_debug_shows_the_traceback(tmp_path, monkeypatch, ecapa_ckpt):
    import voxport.build as vb

    monkeypatch.setattr(vb, "export_model", _boom(RuntimeError("exporter exploded")))
    for args, env in [(["--debug"], None), ([], {"VOXPORT_DEBUG": "1"})]:
        r = run(*args, "build", "--arch", "ecapa", "--checkpoint", ecapa_ckpt, "--output-dir", tmp_path / "out", env=env)
        assert r.exit_code == 3
        assert "Traceback" in r.stderr and "exporter exploded" in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error: voxport failed: RuntimeError: exporter exploded")
    assert not leftovers(tmp_path)


def test_sigterm_leaves_nothing(tmp_path, ecapa_ckpt):
    """A build killed with SIGTERM mid-export: exit 143, no traceback, no output, no temporary folder."""
    import signal
    import subprocess
    import sys
    import time

    ck = ecapa_ckpt
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    p = subprocess.Popen([sys.executable, "-m", "voxport.cli", "build", "--arch", "ecapa", "--checkpoint", ck,
                          "--output-dir", str(tmp_path / "out")], stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    t0 = time.time()
    for line in p.stderr:
        seen.append(line)
        if "exporting" in line:
            break
        assert time.time() - t0 < 120
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    rest = p.stderr.read()
    assert p.wait(60) == 143, "".join(seen) + rest
    assert "Traceback" not in rest and rest.strip().splitlines()[-1] == "error: terminated; temporary files are removed"
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path) and not os.listdir(tmpdir)


def test_failed_export_leaves_nothing(tmp_path, monkeypatch, ecapa_ckpt):
    import voxport.export as ve

    monkeypatch.setattr(ve, "_torch_export", _boom(RuntimeError("exporter exploded")))
    r = run("export-model", "--arch", "ecapa", "--checkpoint", ecapa_ckpt, "--output", tmp_path / "new" / "dir" / "m.onnx")
    assert_fails(r, 3, "exporter exploded", only_line=False)
    assert os.listdir(tmp_path) == []
