"""voxport-web (js/voxport-web, an npm package on Transformers.js) in Node, on 60 s of speech, against the Python
reference: long-form CTC and its word timestamps = `voxport run --chunk-length-s --stride-length-s --timestamps word`
(itself = transformers' pipeline); a 16 kHz stream pushed in AudioWorklet-sized frames ends with the long-form
result; rolling windows with EMA = `voxport run --window-s --hop-s --ema`; the speaker score = the cosine of the
embeddings onnxruntime-python gives."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from voxport.cli import main
from voxport.verify.jsrun import JS_DIR
from voxport.verify.speech import speech_clips

pytestmark = pytest.mark.js
needs_node = pytest.mark.skipif(shutil.which("node") is None or not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@huggingface")),
                                reason="Node.js and js/node_modules are needed (bash .ci/run installs them)")
SR = 16000


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def speech_60s() -> np.ndarray:
    """The shipped clips, end to end, three times: 60.3 s of male and female English and Portuguese speech."""
    from voxport.verify.speech import long_speech

    return long_speech(speech_clips())


def write_audio(folder, name, x, sr=SR):
    """The same samples as WAV (for voxport run) and raw float32 (for Node)."""
    sf.write(folder / f"{name}.wav", x, sr, subtype="FLOAT")
    np.asarray(x, "<f4").tofile(folder / f"{name}.f32")
    return folder / f"{name}.wav", folder / f"{name}.f32"


def pipelines(tmp_path, folder, runs, dtype="fp32"):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": str(folder), "dtypes": [dtype], "threads": 2, "runs": runs}))
    r = subprocess.run(["node", os.path.join(JS_DIR, "pipelines-node.mjs"), str(job)], cwd=JS_DIR, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)["results"][dtype]
    assert out["error"] is None, out["error"]
    return out["results"]


@needs_node
def test_the_package_own_tests():
    r = subprocess.run(["node", "--test", "test/"], cwd=os.path.join(JS_DIR, "voxport-web"), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "# fail 0" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


@pytest.fixture(scope="module")
def ctc_folder(tmp_path_factory):
    from voxport.archs.wav2vec2 import make_checkpoint
    from voxport.build import build

    from .test_run_evaluate import emit_unk

    d = tmp_path_factory.mktemp("web-ctc")
    ck = make_checkpoint(str(d / "ckpt"), "wav2vec2", "ctc", "layer", preset="tiny", seed=3)
    emit_unk(ck)
    out = d / "ctc-onnx"
    build("wav2vec2", str(out), checkpoint=ck, quantize_modes=("q8",))
    return out


@needs_node
def test_long_form_and_streaming_ctc_equal_the_reference(tmp_path, ctc_folder):
    x = speech_60s()
    wav, raw = write_audio(tmp_path, "speech", x)
    chunked = {"chunk_length_s": 10, "stride_length_s": 2}
    res = pipelines(tmp_path, ctc_folder, [
        {"kind": "longform", "audio": str(raw), "options": {**chunked, "return_timestamps": "word"}},
        {"kind": "longform", "audio": str(raw), "options": {"return_timestamps": "word"}},
        {"kind": "stream", "audio": str(raw), "sr": SR, "frame": 128, "options": chunked},
    ])
    for got, args in ((res[0], ["--chunk-length-s", 10, "--stride-length-s", 2]), (res[1], [])):
        r = cli("run", ctc_folder, wav, "--dtype", "fp32", "--timestamps", "word", "--json", *args)
        assert r.exit_code == 0, r.output
        want = json.loads(r.output)["results"][0]
        assert len(want["text"]) > 1000 and want["text"].count("<unk>") > 10
        assert got["text"] == want["text"], args
        assert [c["text"] for c in got["chunks"]] == [c["text"] for c in want["chunks"]]
        assert np.allclose([c["timestamp"] for c in got["chunks"]], [c["timestamp"] for c in want["chunks"]], atol=1e-9)
    card = (ctc_folder / "README.md").read_text()
    assert 'LongFormCTC.from_pretrained("ctc-onnx"' in card and "StreamingCTC" in card
    stream, long_form = res[2], res[0]
    assert stream["text"] == long_form["text"] and stream["chunks"] == long_form["chunks"]
    # final words arrive as the stream goes, in order, each once; partial hypotheses every second
    sent = [w for f in stream["finals"] for w in f["words"]]
    assert sent == long_form["chunks"]
    first = stream["finals"][0]
    assert 10.0 <= first["at_s"] <= 10.1 and len(stream["finals"]) >= 8  # the first chunk is final once the next begins
    assert len(stream["partials"]) >= 55 and all(p["text"] for p in stream["partials"][2:])
    # memory bounded by the chunk: the buffer never held the 60 s
    assert stream["peak_buffer"] < 20 * SR


@needs_node
def test_stream_at_another_rate_is_resampled(tmp_path, ctc_folder):
    """48 kHz microphone frames: resampled in the stream; the words keep their times (same count of seconds)."""
    import soxr

    x = speech_60s()[: 20 * SR]
    hi = soxr.resample(x, SR, 48000, quality="HQ").astype(np.float32)
    _, raw = write_audio(tmp_path, "hi", hi, 48000)
    (got,) = pipelines(tmp_path, ctc_folder, [{"kind": "stream", "audio": str(raw), "sr": 48000, "frame": 480,
                                               "options": {"chunk_length_s": 10, "stride_length_s": 2}}])
    assert got["text"] and got["chunks"]
    ends = [c["timestamp"][1] for c in got["chunks"]]
    assert ends == sorted(ends) and 19.0 <= ends[-1] <= 20.01


@needs_node
def test_rolling_windows_equal_voxport_run(tmp_path, ecapa_folder):
    x = speech_60s()
    wav, raw = write_audio(tmp_path, "speech", x)
    opts = {"window_s": 0.75, "hop_s": 0.15, "ema": 0.2}
    (got,) = pipelines(tmp_path, ecapa_folder, [{"kind": "windows", "audio": str(raw), "options": opts}])
    r = cli("run", ecapa_folder, wav, "--dtype", "fp32", "--window-s", 0.75, "--hop-s", 0.15, "--ema", 0.2, "--json")
    assert r.exit_code == 0, r.output
    want = json.loads(r.output)["results"][0]
    assert len(got["windows"]) == len(want["windows"]) > 390
    for a, b in zip(got["windows"], want["windows"]):
        assert abs(a["start_s"] - b["start_s"]) < 1e-9 and a["label"] == b["label"]
        for k in b["scores"]:
            assert abs(a["scores"][k] - b["scores"][k]) < 1e-5 and abs(a["smoothed"][k] - b["smoothed"][k]) < 1e-5
    assert [x["label"] for x in got["labels"]] == [x["label"] for x in want["labels"]]
    assert abs(got["labels"][0]["score"] - want["labels"][0]["score"]) < 1e-5


@needs_node
def test_speaker_score_equals_onnxruntime(tmp_path, ecapa_ckpt):
    import onnxruntime as ort

    from voxport.build import build

    out = tmp_path / "spk"
    build("ecapa", str(out), checkpoint=ecapa_ckpt, load_options={"embeddings": True}, quantize_modes=("q8",))
    clips = speech_clips()
    _, a = write_audio(tmp_path, "a", clips[0].audio)
    _, b = write_audio(tmp_path, "b", clips[1].audio)
    (got,) = pipelines(tmp_path, out, [{"kind": "verify", "audio": str(a), "b": str(b)}], dtype="q8")
    sess = ort.InferenceSession(str(out / "onnx" / "model_quantized.onnx"), providers=["CPUExecutionProvider"])
    embs = [sess.run(["embeddings"], {"input_values": c.audio[None]})[0][0].astype(np.float64) for c in clips[:2]]
    want = float(embs[0] @ embs[1] / np.linalg.norm(embs[0]) / np.linalg.norm(embs[1]))
    assert abs(got["score"] - want) < 1e-5
    assert np.allclose(got["embeddings"][0], embs[0], atol=1e-4)


@needs_node
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is needed (bash .ci/run installs it)")
def test_live_microphone_in_chromium(tmp_path, ctc_folder):
    """The live path in headless Chromium: getUserMedia (the fake capture device plays 15 s of the shipped speech) ->
    AudioWorklet -> StreamingCTC.push(frames, audioContext.sampleRate). Final words arrive while the audio plays, and
    the stream's result equals LongFormCTC on exactly the samples it received."""
    x = np.concatenate([c.audio for c in speech_clips()])[: 20 * SR]
    sf.write(tmp_path / "mic.wav", x, SR, subtype="PCM_16")
    job = tmp_path / "job" / "mic.json"
    job.parent.mkdir()
    job.write_text(json.dumps({"model": str(ctc_folder), "wav": str(tmp_path / "mic.wav"), "seconds": 15, "dtype": "fp32",
                               "chunk_length_s": 5, "stride_length_s": 1, "threads": 2}))
    r = subprocess.run(["node", os.path.join(JS_DIR, "mic-browser.mjs"), str(job), shutil.which("chromium")], cwd=JS_DIR,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert "error" not in got, got.get("error")
    assert abs(got["captured_s"] - 15) < 0.05 and abs(got["received_s"] - 15) < 0.05
    assert got["text"] == got["long_form"]["text"] and got["chunks"] == got["long_form"]["chunks"]
    assert [w for f in got["finals"] for w in f["words"]] == got["chunks"]
    # words became final as the audio played: within a second of the audio that made their chunk final
    live = [f for f in got["finals"] if f["audio_s"] < 14.9]
    assert len(live) >= 2 and all(f["wall_s"] - f["audio_s"] < 1.0 for f in live), got["finals"]
    assert len(got["partials"]) >= 12
    # the microphone carried the file: its loudness envelope (100 ms) follows the file's, at some small delay
    env = np.array(got["envelope"])
    ref = np.array([np.sqrt(np.mean(x[i * 1600:(i + 1) * 1600] ** 2)) for i in range(len(x) // 1600)])
    best = max(np.corrcoef(env[: len(env) - 5], ref[lag: lag + len(env) - 5])[0, 1] for lag in range(0, 5))
    assert best > 0.9, best


@needs_node
def test_verify_runs_the_deployed_pipelines(ctc_folder, monkeypatch):
    """`voxport verify --runtime node` runs long-form CTC on a minute of speech in Transformers.js: the float file gives
    voxport run's transcript and word times; a pipeline that disagrees fails the file."""
    from voxport.archs import get_arch
    from voxport.verify import pipelines
    from voxport.verify.check import verify_folder

    loaded = get_arch("wav2vec2").load(checkpoint=str(ctc_folder.parent / "ckpt"))
    rep = verify_folder(str(ctc_folder), runtime="node", loaded=loaded)
    assert rep.passed, rep.to_table()
    fp32 = next(f for f in rep.files if f.file == "model.onnx")
    long_form = fp32.extra["pipelines"]["longform"]
    assert long_form["same_text"] and long_form["same_words_and_times"] and long_form["chars"] > 1000
    honest = pipelines.python_run

    def other(*args, **kw):
        out = honest(*args, **kw)
        return {**out, "text": out["text"][::-1]}

    monkeypatch.setattr(pipelines, "python_run", other)
    rep = verify_folder(str(ctc_folder), runtime="node", loaded=loaded)
    fp32 = next(f for f in rep.files if f.file == "model.onnx")
    assert not rep.passed and any("long-form CTC" in r for r in fp32.reasons)


@needs_node
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is needed (bash .ci/run installs it)")
@pytest.mark.parametrize("which", ["ctc", "windows"])
def test_demo_page_with_the_fake_microphone(tmp_path, which, ctc_folder, ecapa_folder):
    """The demo page (js/voxport-web/demo) opened on a folder, the fake capture device speaking: the live transcript
    (CTC) or the rolling label trace with its EMA (classifier) appears, and the page is what a screenshot shows."""
    x = np.concatenate([c.audio for c in speech_clips()])[: 12 * SR]
    sf.write(tmp_path / "mic.wav", x, SR, subtype="PCM_16")
    shot = tmp_path / "demo.png"
    job = tmp_path / "job" / "demo.json"
    job.parent.mkdir()
    job.write_text(json.dumps({"model": str(ctc_folder if which == "ctc" else ecapa_folder), "wav": str(tmp_path / "mic.wav"),
                               "seconds": 8, "dtype": "q8", "screenshot": str(shot)}))
    r = subprocess.run(["node", os.path.join(JS_DIR, "demo-browser.mjs"), str(job), shutil.which("chromium")], cwd=JS_DIR,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert got["done"] and not got["console"], got
    if which == "ctc":
        assert len(got["text"]) > 100 and got["events"] >= 8
    else:
        assert 45 <= got["windows"] <= 54  # 8 s: a window every 150 ms once the first 0.75 s are in
    assert shot.stat().st_size > 10000
