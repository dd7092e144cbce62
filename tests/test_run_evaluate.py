"""`voxport run` (onnxruntime only, per-file status, windows with EMA, CTC chunks as transformers' pipeline, embeddings)
and `voxport evaluate` (metrics against independent computations, the --max-drop gate, Ray = local)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from voxport.cli import main
from voxport.archs.suite import speech_like

SR = 16000


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ort_probs(model_path, x, normalize=False):
    import onnxruntime as ort

    s = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    if normalize:
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    feed = {"input_values": x[None].astype(np.float32)}
    if "attention_mask" in [i.name for i in s.get_inputs()]:
        feed["attention_mask"] = np.ones_like(feed["input_values"], dtype=np.int64)
    z = s.run(None, feed)[0][0].astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    sf.write(d / "low.wav", speech_like(int(1.2 * SR), 105, seed=1), SR)
    # stereo at 44.1 kHz: averaged and resampled
    x = speech_like(int(1.5 * 44100), 215, seed=2, sr=44100)
    sf.write(d / "high_stereo_44k.wav", np.stack([x, 0.5 * x], 1), 44100)
    (d / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really")
    sf.write(d / "short.wav", speech_like(100, 150, seed=3), SR)
    return d


def test_run_json_per_file_status_without_torch(ecapa_folder, clips):
    """A subprocess runs the CLI: PyTorch is never imported; the corrupt and too-short files fail, the rest
    get onnxruntime's labels, exit 1."""
    code = ("import sys, json\nfrom voxport.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH', code, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code, "run", ecapa_folder, str(clips), "--json", "--dtype", "q8"],
                       capture_output=True, text=True, timeout=120)
    assert "NO_TORCH 1" in r.stderr, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    by = {os.path.basename(x["path"]): x for x in doc["results"]}
    assert set(by) == {"low.wav", "high_stereo_44k.wav", "corrupt.wav", "short.wav"}
    assert by["corrupt.wav"]["status"] == "error" and "soundfile" in by["corrupt.wav"]["error"]
    assert by["short.wav"]["status"] == "error" and "too short" in by["short.wav"]["error"]
    q8 = os.path.join(ecapa_folder, "onnx", "model_quantized.onnx")
    import soxr

    for name in ("low.wav", "high_stereo_44k.wav"):
        x, rate = sf.read(clips / name, dtype="float32", always_2d=True)
        x = soxr.resample(x.mean(1), rate, SR, quality="HQ") if rate != SR else x.mean(1)
        p = ort_probs(q8, x)
        got = by[name]
        assert got["status"] == "ok" and got["error"] is None and abs(got["duration_s"] - len(x) / SR) < 1e-6
        assert [lab["label"] for lab in got["labels"]] == [["male", "female"][i] for i in np.argsort(-p)]
        assert abs(got["labels"][0]["score"] - p.max()) < 1e-5
    assert by["low.wav"]["labels"][0]["label"] == "male" and by["high_stereo_44k.wav"]["labels"][0]["label"] == "female"


def test_run_windows_ema_trace(ecapa_folder, tmp_path):
    x = speech_like(3 * SR, 200, seed=5)
    sf.write(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    r = cli("run", ecapa_folder, tmp_path / "a.wav", "--window-s", 0.75, "--hop-s", 0.15, "--ema", 0.2, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)["results"][0]
    w, hop = 12000, 2400
    starts = list(range(0, len(x) - w + 1, hop))
    assert [round(t["start_s"] * SR) for t in res["windows"]] == starts
    fp32 = os.path.join(ecapa_folder, "onnx", "model.onnx")
    s = None
    for t, st in zip(res["windows"], starts):
        p = ort_probs(fp32, x[st:st + w])
        assert abs(t["scores"]["male"] - p[0]) < 1e-5
        s = p if s is None else 0.2 * p + 0.8 * s
        assert abs(t["smoothed"]["male"] - s[0]) < 1e-5
    top = res["labels"][0]
    assert top["label"] == ["male", "female"][int(s.argmax())] and abs(top["score"] - s.max()) < 1e-5


def emit_unk(ck):
    """The checkpoint lists <unk> among its added tokens (special), as many saved tokenizers do, and its head emits
    <unk> and the word delimiter often: the text has <unk> between letters and double spaces."""
    from safetensors.torch import load_file, save_file

    cfg_path = os.path.join(ck, "tokenizer_config.json")
    cfg = json.load(open(cfg_path))
    vocab = json.load(open(os.path.join(ck, "vocab.json")))
    cfg["added_tokens_decoder"] = {str(vocab[t]): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                                   "normalized": False, "single_word": False} for t in ("<pad>", "<s>", "</s>", "<unk>")}
    json.dump(cfg, open(cfg_path, "w"))
    path = os.path.join(ck, "model.safetensors")
    sd = load_file(path)
    bias = sd["lm_head.bias"].clone()  # the tiny model's logits spread ~0.11 (std over 40 s of frames)
    bias[vocab["<unk>"]] += 0.034
    bias[vocab["<pad>"]] += 0.11
    bias[vocab["|"]] += 0.09
    sd["lm_head.bias"] = bias
    save_file(sd, path, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def ctc(tmp_path_factory):
    from voxport.archs.wav2vec2 import make_checkpoint
    from voxport.build import build

    d = tmp_path_factory.mktemp("ctc")
    ck = make_checkpoint(str(d / "ckpt"), "wav2vec2", "ctc", "layer", preset="tiny", seed=3)
    emit_unk(ck)
    out = str(d / "ctc-onnx")
    build("wav2vec2", out, checkpoint=ck, quantize_modes=("q8",))
    x = np.concatenate([speech_like(5 * SR, f, seed=s) for s, f in enumerate([100, 200, 150, 120, 230, 90, 180, 140])])
    sf.write(d / "long.wav", x, SR, subtype="FLOAT")  # the pipeline gets the same float array
    return ck, out, d / "long.wav", x


def test_run_ctc_40s_equals_transformers_pipeline(ctc):
    """40 s: voxport run (onnxruntime) gives transformers' pipeline transcript and word timestamps on the PyTorch
    model, whole and with --chunk-length-s 10 --stride-length-s 2, <unk> between letters included."""
    from transformers import pipeline

    ck, folder, wav, x = ctc
    pipe = pipeline("automatic-speech-recognition", model=ck, device="cpu")
    for chunk in ({}, {"chunk_length_s": 10, "stride_length_s": 2}):
        want = pipe(x.copy(), return_timestamps="word", **chunk)
        plain = pipe(x.copy(), **chunk)["text"]
        args = [a for k, v in chunk.items() for a in (f"--{k.replace('_', '-')}", v)]
        r = cli("run", folder, wav, "--json", "--timestamps", "word", *args)
        assert r.exit_code == 0, r.output
        got = json.loads(r.output)["results"][0]
        assert len(want["text"]) > 1000 and got["text"] == want["text"] == plain, chunk
        assert want["text"].count("<unk>") > 10
        assert [c["text"] for c in got["chunks"]] == [c["text"] for c in want["chunks"]]
        assert np.allclose([c["timestamp"] for c in got["chunks"]], [c["timestamp"] for c in want["chunks"]], atol=1e-9)
    # the folder's tokenizer.json marks no token special: decoded as Transformers.js decodes (skip_special_tokens), the same
    r = cli("run", folder, wav, "--json", "--chunk-length-s", 10, "--stride-length-s", 2, "--skip-special-tokens")
    assert json.loads(r.output)["results"][0]["text"] == want["text"]


def test_ctc_chunks_follow_transformers_chunk_iter():
    """Chunk boundaries and strides in samples against transformers' own chunk_iter."""
    from transformers import Wav2Vec2FeatureExtractor
    from transformers.pipelines.automatic_speech_recognition import chunk_iter

    from voxport.infer.predict import ctc_chunks

    fe = Wav2Vec2FeatureExtractor()
    for n, chunk_s, stride_s, align in [(640000, 10, 2, 64), (123457, 3, 0.5, 320), (50000, 4, None, 320), (7000, 10, 2, 320)]:
        stride = stride_s if stride_s is not None else chunk_s / 6
        cl = int(round(chunk_s * SR / align) * align)
        st = int(round(stride * SR / align) * align)
        want = [tuple(int(v) for v in item["stride"]) for item in chunk_iter(np.zeros(n, np.float32), fe, cl, st, st)]
        got = [(b - a, left, right) for a, b, left, right in ctc_chunks(n, SR, align, chunk_s, stride_s)]
        assert got == want


def test_run_embeddings_output_npy_and_json(tmp_path):
    """A graph with `logits` and `embeddings` outputs: vectors in JSON, or .npy files with --npy-dir."""
    import onnx
    from onnx import TensorProto, helper

    d = tmp_path / "emb"
    (d / "onnx").mkdir(parents=True)
    W = np.arange(12, dtype=np.float32).reshape(1, 12) / 10
    nodes = [helper.make_node("ReduceMean", ["input_values"], ["m"], axes=[1], keepdims=1),
             helper.make_node("MatMul", ["m", "W"], ["embeddings"]),
             helper.make_node("Slice", ["embeddings", "s0", "s2", "ax"], ["logits"])]
    graph = helper.make_graph(
        nodes, "emb", [helper.make_tensor_value_info("input_values", TensorProto.FLOAT, ["b", "n"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2]),
         helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["b", 12])],
        [helper.make_tensor("W", TensorProto.FLOAT, [1, 12], W.ravel()), helper.make_tensor("s0", TensorProto.INT64, [1], [0]),
         helper.make_tensor("s2", TensorProto.INT64, [1], [2]), helper.make_tensor("ax", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d / "onnx" / "model.onnx")
    (d / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "architectures": ["Wav2Vec2ForSequenceClassification"],
                                               "id2label": {"0": "a", "1": "b"}}))
    (d / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000, "do_normalize": False}))
    x = speech_like(8000, 150, seed=1) + 0.25
    sf.write(tmp_path / "x.wav", x, SR, subtype="FLOAT")
    want = x.mean(dtype=np.float32) * W[0]
    r = cli("run", d, tmp_path / "x.wav", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)["results"][0]
    assert np.allclose(got["embeddings"], want, atol=1e-6) and got["labels"][0]["label"] == "b"
    r = cli("run", d, tmp_path / "x.wav", "--json", "--npy-dir", tmp_path / "vec")
    got = json.loads(r.output)["results"][0]["embeddings"]
    assert got["shape"] == [12] and np.allclose(np.load(got["npy"]), want, atol=1e-6)


def test_run_bad_arguments_exit_2(ecapa_folder, ctc, tmp_path):
    assert cli("run", tmp_path / "nope", tmp_path).exit_code == 2
    assert cli("run", ecapa_folder, tmp_path).exit_code == 2  # no audio files in it
    sf.write(tmp_path / "a.wav", speech_like(SR, 120), SR)
    assert cli("run", ecapa_folder, tmp_path / "a.wav", "--dtype", "fp16").exit_code == 2  # not built
    assert cli("run", ecapa_folder, tmp_path / "a.wav", "--dtype", "all").exit_code == 2
    assert cli("run", ecapa_folder, tmp_path / "a.wav", "--chunk-length-s", 10).exit_code == 2  # CTC only
    assert cli("run", ctc[1], tmp_path / "a.wav", "--window-s", 1).exit_code == 2  # classifiers only
    assert cli("run", ctc[1], tmp_path / "a.wav", "--chunk-length-s", 2, "--stride-length-s", 1).exit_code == 2
    r = cli("run", ecapa_folder, tmp_path / "a.wav", "--csv")
    assert r.exit_code == 0 and r.output.splitlines()[0] == "path,status,error,duration_s,label,score"


# ---------------------------------------------------------------- evaluate

MALE_F0, FEMALE_F0 = (90, 105, 120, 140), (180, 200, 225, 250)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Synthetic speech labelled by pitch (male f0 85-150 Hz, female 175-260 Hz), plus one corrupt file."""
    d = tmp_path_factory.mktemp("labelled")
    rows = []
    for k, (f0, lab) in enumerate([(f, "male") for f in MALE_F0] + [(f, "female") for f in FEMALE_F0]):
        name = f"clips/{lab}_{f0}.wav"
        (d / "clips").mkdir(exist_ok=True)
        sf.write(d / name, speech_like(int((1 + 0.25 * k) * SR), f0, seed=20 + k), SR, subtype="FLOAT")
        rows.append((name, lab))
    (d / "clips" / "broken.wav").write_bytes(b"not audio")
    with open(d / "labels.csv", "w") as f:
        f.write("path,label\n" + "".join(f"{p},{lab.upper() if i == 0 else lab}\n" for i, (p, lab) in enumerate(rows)))
        f.write("clips/broken.wav,male\n")
    return d, rows


def test_evaluate_classifier_against_independent_pytorch_and_ort(ecapa_folder, ecapa_ckpt, labelled, tmp_path):
    import torch

    from voxport.archs import get_arch

    d, rows = labelled
    r = cli("evaluate", ecapa_folder, "--labels", d / "labels.csv", "--checkpoint", ecapa_ckpt, "--json",
            "--plots", tmp_path / "plots", "--max-drop", 100)
    assert r.exit_code == 1, r.output  # the corrupt file fails; everything else is evaluated
    doc = json.loads(r.output)
    assert [x["model"] for x in doc["rows"]] == ["pytorch", "fp32", "q8"] and doc["reference"] == "pytorch"
    assert doc["n_failed"] == 1 and doc["files"][-1]["status"] == "error" and not doc["gate_failures"]
    loaded = get_arch("ecapa").load(checkpoint=ecapa_ckpt)
    truth = [lab for _, lab in rows]
    preds = {"pytorch": [], "fp32": []}
    for name, _ in rows:
        x, _ = sf.read(d / name, dtype="float32")
        with torch.inference_mode():
            preds["pytorch"].append(["male", "female"][int(loaded.model(torch.from_numpy(x)[None])[0].argmax())])
        preds["fp32"].append(["male", "female"][int(ort_probs(os.path.join(ecapa_folder, "onnx", "model.onnx"), x).argmax())])
    for row in doc["rows"][:2]:
        p = preds[row["model"]]
        assert row["accuracy"] == pytest.approx(np.mean([a == b for a, b in zip(p, truth)]))
        cm = [[sum(t == a and q == b for t, q in zip(truth, p)) for b in ("male", "female")] for a in ("male", "female")]
        assert row["confusion"] == {"labels": ["male", "female"], "matrix": cm}
        for i, c in enumerate(("male", "female")):
            tp = cm[i][i]
            prec = tp / max(1, cm[0][i] + cm[1][i])
            rec = tp / max(1, sum(cm[i]))
            assert row["per_class"][c]["support"] == 4 and row["per_class"][c]["recall"] == pytest.approx(rec)
            assert row["per_class"][c]["precision"] == pytest.approx(prec)
    assert doc["rows"][1]["agreement_with_pytorch"] == pytest.approx(np.mean([a == b for a, b in zip(preds["fp32"], preds["pytorch"])]))
    assert 0.5 < doc["rows"][0]["mean_confidence"] <= 1
    assert sorted(os.listdir(tmp_path / "plots")) == ["comparison.png", "confusion_fp32.png", "confusion_pytorch.png", "confusion_q8.png"]


def test_evaluate_without_checkpoint_skips_pytorch_and_bad_input(ecapa_folder, labelled, tmp_path):
    d, _ = labelled
    r = cli("evaluate", ecapa_folder, "--labels", d / "labels.csv", "--dtype", "fp32,q8", "--max-drop", 100)
    assert r.exit_code == 1 and "PyTorch row skipped" in r.output and "against fp32: passed" in r.output
    assert cli("evaluate", ecapa_folder, "--labels", d / "labels.csv", "--checkpoint", tmp_path / "nope").exit_code == 2
    (tmp_path / "bad.csv").write_text("file,label\na.wav,male\n")
    assert cli("evaluate", ecapa_folder, "--labels", tmp_path / "bad.csv").exit_code == 2
    (tmp_path / "other.csv").write_text("path,label\na.wav,child\n")
    r = cli("evaluate", ecapa_folder, "--labels", tmp_path / "other.csv")
    assert r.exit_code == 2 and "child" in r.output


def test_max_drop_gate_and_metrics():
    from voxport.evaluate import compare_rows
    from voxport.evaluate.metrics import classification

    ref, q8 = {"model": "pytorch", "accuracy": 0.90}, {"model": "q8", "accuracy": 0.88}
    assert compare_rows([ref, q8], ref, "label", 3.0) == [] and q8["accuracy_change_points"] == pytest.approx(-2.0)
    assert len(compare_rows([ref, q8], ref, "label", 1.0)) == 1
    ref, q8 = {"model": "fp32", "wer": 0.10, "cer": 0.05}, {"model": "q8", "wer": 0.125, "cer": 0.05}
    assert len(compare_rows([ref, q8], ref, "text", 2.0)) == 1 and compare_rows([ref, q8], ref, "text", 3.0) == []
    m = classification(["a", "a", "b", "c"], ["a", "b", "b", "b"], [0.9, 0.6, 0.8, 0.7], ["a", "b", "c"])
    assert m["accuracy"] == 0.5 and m["confusion"]["matrix"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert m["per_class"]["b"]["precision"] == pytest.approx(1 / 3) and m["per_class"]["c"]["f1"] == 0.0
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.5 + 0) / 3) and m["mean_confidence"] == pytest.approx(0.75)


def _wer(refs, hyps):
    edits = words = 0
    for r, h in zip(refs, hyps):
        r, h = r.split(), h.split()
        prev = list(range(len(h) + 1))
        for i, a in enumerate(r, 1):
            cur = [i] + [0] * len(h)
            for j, b in enumerate(h, 1):
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b))
            prev = cur
        edits, words = edits + prev[-1], words + len(r)
    return edits / words


def test_evaluate_ctc_wer_matches_independent_count(ctc, tmp_path):
    ck, folder, _, _ = ctc
    texts = ["O gato bebe leite.", "a casa é azul", "Hoje chove, amanhã não"]
    with open(tmp_path / "t.csv", "w") as f:
        f.write("path,text\n")
        for k, t in enumerate(texts):
            sf.write(tmp_path / f"{k}.wav", speech_like(2 * SR, 120 + 40 * k, seed=k), SR, subtype="FLOAT")
            f.write(f"{k}.wav,\"{t}\"\n")
    r = cli("evaluate", folder, "--labels", tmp_path / "t.csv", "--checkpoint", ck, "--json", "--max-drop", 1000)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    from transformers import pipeline

    from voxport.evaluate.metrics import normalize_text

    refs = ["o gato bebe leite", "a casa é azul", "hoje chove amanhã não"]
    for row in doc["rows"]:
        hyps = [normalize_text(f["predictions"][row["model"]]) for f in doc["files"]]
        assert row["wer"] == pytest.approx(_wer(refs, hyps), abs=1e-12)
    # the PyTorch row's WER is the WER of transformers' pipeline transcripts (normalized as evaluate normalizes)
    pipe = pipeline("automatic-speech-recognition", model=ck, device="cpu")
    said = [pipe(sf.read(tmp_path / f"{k}.wav", dtype="float32")[0])["text"] for k in range(len(texts))]
    assert any("<unk>" in t for t in said)
    assert doc["rows"][0]["model"] == "pytorch"
    assert doc["rows"][0]["wer"] == pytest.approx(_wer(refs, [normalize_text(t) for t in said]), abs=1e-12)
    assert doc["rows"][1]["model"] == "fp32" and doc["rows"][1]["agreement_with_pytorch"] == 1.0
    assert doc["rows"][1]["wer_change_points"] == pytest.approx(0.0)


def test_ray_engine_same_as_local(ecapa_folder, ecapa_ckpt, labelled):
    pytest.importorskip("ray.data")
    d, _ = labelled
    args = ["evaluate", ecapa_folder, "--labels", d / "labels.csv", "--checkpoint", ecapa_ckpt, "--json", "--threads", 1,
            "--batch-size", 3]
    local = json.loads(cli(*args).output)
    ray_doc = json.loads(cli(*args, "--engine", "ray", "--workers", 2).output)
    assert ray_doc["engine"] == "ray" and ray_doc["rows"] == local["rows"] and ray_doc["files"] == local["files"]
