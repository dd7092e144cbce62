"""SpeechBrain ECAPA-TDNN folders: SpeechBrain's own EncoderClassifier is the reference of every figure here."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("speechbrain")  # an optional extra; .ci/run installs it, so CI runs these tests

from voxport.archs import get_arch  # noqa: E402
from voxport.archs.speechbrain import make_folder  # noqa: E402
from voxport.cli import main  # noqa: E402
from voxport.errors import CheckpointError  # noqa: E402
from voxport.export import export_model  # noqa: E402
from voxport.verify.check import cosine_rows, pairwise_scores  # noqa: E402
from voxport.verify.speech import speech_clips  # noqa: E402
from voxport.archs.suite import speech_like  # noqa: E402

from .test_cli import assert_one_line_error  # noqa: E402

# the bars for fp32 files against SpeechBrain
FP32_COSINE, FP32_PAIR, FP32_SCORE = 0.99999, 1e-4, 1e-4


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two random folders in the published layouts: speaker verification (ECAPA cosine classifier + mean_var_norm_emb,
    80 mels, the default kernels) and language ID (x-vector classifier, no embedding norm, 24 mels, four blocks with
    other kernel sizes and dilations)."""
    root = tmp_path_factory.mktemp("sb")
    spk = make_folder(str(root / "spkrec-ecapa-voxceleb"), n_mels=80, classifier="ecapa", emb_norm=True, seed=1)
    lid = make_folder(str(root / "lang-id-voxlingua107-ecapa"), channels=(32, 32, 32, 96), kernel_sizes=(3, 3, 5, 1),
                      dilations=(1, 3, 2, 1), lin_neurons=24, n_mels=24, classifier="xvector", emb_norm=False,
                      labels=["en: English", "pt: Portuguese", "de: German"], seed=2,
                      pretrained_path="speechbrain/lang-id-voxlingua107-ecapa")
    return {"spk": spk, "lid": lid}


@pytest.fixture(scope="module")
def loaded(folders):
    spec = get_arch("speechbrain")
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # `pretrained_path` names the hub repo: loading must not need it
    try:
        return {k: spec.load(checkpoint=v) for k, v in folders.items()}
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def clips():
    """Speech (espeak-ng when installed, else speech-like signals), whole clips of different lengths."""
    got = [c.audio[: 3 * 16000] for c in speech_clips(16000)[:4]]
    return got or [speech_like(n, f0, s) for n, f0, s in [(24000, 110, 1), (16000, 210, 2), (30000, 150, 3), (12000, 95, 4)]]


def sb_reference(ld, wavs, lens=None):
    """SpeechBrain directly: encode_batch (normalize=True when built with --normalized-embeddings), classify_batch."""
    clf = ld.extra["clf"]
    x = torch.from_numpy(np.ascontiguousarray(wavs, dtype=np.float32))
    lens = None if lens is None else torch.from_numpy(np.asarray(lens, dtype=np.float32))
    with torch.inference_mode():
        emb = clf.encode_batch(x, lens, normalize=ld.config["normalized_embeddings"]).squeeze(1).numpy()
        scores = clf.classify_batch(x, lens)[0].numpy() if ld.config["has_classifier"] else None
    return emb, scores


def onnx_run(path, wavs, mask=None):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    mask = np.ones(wavs.shape, np.int64) if mask is None else mask
    return sess.run(None, {"input_values": wavs.astype(np.float32), "attention_mask": mask})


def test_published_layout_loads_offline(loaded):
    spk, lid = loaded["spk"], loaded["lid"]
    assert spk.config["has_classifier"] and spk.config["has_embedding_norm"]
    assert spk.config["kernel_sizes"] == [5, 3, 3, 3, 1] and spk.config["dilations"] == [1, 2, 3, 4, 1]
    assert lid.config["kernel_sizes"] == [3, 3, 5, 1] and lid.config["dilations"] == [1, 3, 2, 1]
    assert lid.config["labels"] == {0: "en: English", 1: "pt: Portuguese", 2: "de: German"}
    assert not lid.config["has_embedding_norm"] and lid.config["embedding_dim"] == 24
    src = spk.source
    assert src["local"] and src["checkpoint"] == "spkrec-ecapa-voxceleb"
    assert set(src["weights"]) == {"hyperparams.yaml", "embedding_model.ckpt", "mean_var_norm_emb.ckpt", "classifier.ckpt",
                                   "label_encoder.txt"}
    assert "/" not in json.dumps(src["weights"])


@pytest.mark.parametrize("which,opset", [("spk", 17), ("lid", 18)])
def test_fp32_matches_speechbrain_on_speech(tmp_path, loaded, which, opset):
    ld = loaded[which]
    path = str(tmp_path / "model.onnx")
    export_model("speechbrain", path, loaded=ld, opset=opset)
    m = onnx.load(path)
    assert [i.name for i in m.graph.input] == ["input_values", "attention_mask"]
    assert [o.name for o in m.graph.output] == ["embeddings", "logits"]
    embs, refs = [], []
    for wav in clips():
        emb, scores = onnx_run(path, wav[None])
        ref_emb, ref_scores = sb_reference(ld, wav[None])
        assert cosine_rows(emb.astype(np.float64), ref_emb.astype(np.float64)).min() >= FP32_COSINE
        assert np.abs(scores - ref_scores).max() <= FP32_SCORE
        assert scores.argmax() == ref_scores.argmax()
        embs.append(emb[0])
        refs.append(ref_emb[0])
    pair = np.abs(pairwise_scores(np.array(embs, np.float64)) - pairwise_scores(np.array(refs, np.float64)))
    assert pair.max() <= FP32_PAIR
    # by default `embeddings` is what encode_batch(wavs) returns, the vector verify_batch scores
    raw = ld.extra["clf"].encode_batch(torch.from_numpy(clips()[0][None])).squeeze(1).numpy()
    assert cosine_rows(embs[0][None].astype(np.float64), raw.astype(np.float64)).min() >= FP32_COSINE


def test_normalized_embeddings_on_request(tmp_path, folders):
    """--normalized-embeddings: `embeddings` is encode_batch(wavs, normalize=True), recorded in the source (the reference
    rebuilt from it normalizes too) and in config.json; a folder without mean_var_norm_emb refuses the flag."""
    from voxport.archs.source import load_source

    spec = get_arch("speechbrain")
    ld = spec.load(checkpoint=folders["spk"], normalize_embeddings=True)
    assert ld.config["normalized_embeddings"] and ld.source["normalize_embeddings"] is True
    path = str(tmp_path / "model.onnx")
    export_model("speechbrain", path, loaded=ld, opset=17)
    wav = clips()[0][None]
    emb, _ = onnx_run(path, wav)
    clf = ld.extra["clf"]
    with torch.inference_mode():
        want = clf.encode_batch(torch.from_numpy(wav), normalize=True).squeeze(1).numpy()
        raw = clf.encode_batch(torch.from_numpy(wav)).squeeze(1).numpy()
    assert cosine_rows(emb.astype(np.float64), want.astype(np.float64)).min() >= FP32_COSINE
    assert np.abs(raw - np.array(ld.extra["info"]["emb_mean"]) - emb).max() < 1e-4
    assert cosine_rows(raw.astype(np.float64), want.astype(np.float64)).min() < 0.999  # the two vectors do differ
    again = load_source(ld.source, checkpoint=folders["spk"])
    assert again.config["normalized_embeddings"]
    assert spec.hf_config(ld)["speechbrain"]["normalized_embeddings"] is True
    with pytest.raises(CheckpointError, match="mean_var_norm_emb"):
        spec.load(checkpoint=folders["lid"], normalize_embeddings=True)


def test_padded_batch_matches_encode_batch_with_wav_lens(tmp_path, loaded):
    ld = loaded["spk"]
    path = str(tmp_path / "model.onnx")
    export_model("speechbrain", path, loaded=ld, opset=17)
    rows = clips()[:3]
    lengths = [len(rows[0]), len(rows[1]) * 2 // 3, 7001]
    total = max(lengths)
    x = np.zeros((3, total), np.float32)
    mask = np.zeros((3, total), np.int64)
    for i, (r, n) in enumerate(zip(rows, lengths)):
        x[i, :n] = r[:n]
        mask[i, :n] = 1
    lens = np.array(lengths, np.float32) / np.float32(total)  # SpeechBrain's relative lengths
    emb, scores = onnx_run(path, x, mask)
    ref_emb, ref_scores = sb_reference(ld, x, lens)
    assert cosine_rows(emb.astype(np.float64), ref_emb.astype(np.float64)).min() >= FP32_COSINE
    assert np.abs(scores - ref_scores).max() <= FP32_SCORE
    # the reference verify uses is these same SpeechBrain calls
    from voxport.archs.base import Case

    ref = get_arch("speechbrain").reference(ld, Case("padded", x, mask, lengths))
    assert np.abs(ref["embeddings"] - ref_emb).max() <= 1e-6 and np.abs(ref["logits"] - ref_scores).max() <= 1e-6
    # the mask is what makes this match: without it the short rows drift
    unmasked, _ = onnx_run(path, x)
    assert cosine_rows(unmasked[2:].astype(np.float64), ref_emb[2:].astype(np.float64)).min() < 0.999


@pytest.fixture(scope="module")
def built(tmp_path_factory, folders):
    """`voxport build` from the command line, on the synthetic suite only (speech is tested above, and costs time)."""
    import voxport.verify.speech as speech

    out = tmp_path_factory.mktemp("built") / "spk-ecapa"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speech, "speech_clips", lambda sr=16000: [])
        r = run("build", "--arch", "speechbrain", "--checkpoint", folders["spk"], "--quantize", "fp16,q8,uint8", "--output-dir", out,
                "--json")
    return out, r


def test_build_cli_end_to_end(built):
    out, r = built
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    names = sorted(os.listdir(out / "onnx"))
    assert names == ["model.onnx", "model_fp16.onnx", "model_quantized.onnx", "model_uint8.onnx"]
    files = {f["file"]: f for f in result["verify"]["files"]}
    assert files["model.onnx"]["min_cosine"] >= FP32_COSINE and files["model.onnx"]["max_pair_delta"] <= FP32_PAIR
    assert files["model.onnx"]["max_abs_logit"] <= FP32_SCORE
    for name in ("model_fp16.onnx", "model_quantized.onnx", "model_uint8.onnx"):
        assert files[name]["min_cosine"] >= 0.995 and files[name]["max_pair_delta"] <= 0.02
        assert files[name]["argmax_agree"] >= 0.9 * files[name]["argmax_total"]
    assert files["model_quantized.onnx"]["min_cosine"] < 0.99999  # it is quantized: the figures are measured, not copied
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "wav2vec2" and config["id2label"]["0"] == "id10000"
    assert len(config["speechbrain"]["embedding_mean"]) == 16
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["do_normalize"] is False and pre["feature_extractor_type"] == "Wav2Vec2FeatureExtractor"
    card = (out / "README.md").read_text()
    assert "AutoModel.from_pretrained" in card and "min cosine" in card
    # the keep-float search judges embeddings by cosine: fully quantized, this uint8 file misses 0.995 (measured
    # 0.990); the search keeps nodes float until every criterion of the margin holds
    search = result["search"]["uint8"]
    assert search["metric"] == "1 - cosine" and search["max_abs_prob_all_quantized"] > 0.003
    assert search["kept_float"] and search["max_abs_prob"] <= 0.003
    q = json.loads((out / "quantize_config.json").read_text())
    assert q["files"]["model_uint8.onnx"]["search"]["kept_float"]


@pytest.mark.js
def test_folder_in_transformers_js_node(built, folders, monkeypatch):
    import voxport.verify.speech as speech
    from voxport.verify.jsrun import run_outputs

    monkeypatch.setattr(speech, "speech_clips", lambda sr=16000: [])
    out, r = built
    assert r.exit_code == 0, r.output
    out = str(out)
    rows = clips()[:2]
    got = run_outputs(out, ["fp32", "q8"], rows)
    for dtype, name in (("fp32", "model.onnx"), ("q8", "model_quantized.onnx")):
        assert got[dtype]["error"] is None, got[dtype]["error"]
        for row, wav in zip(got[dtype]["rows"], rows):
            emb, scores = onnx_run(os.path.join(out, "onnx", name), wav[None])
            assert np.abs(row["embeddings"] - emb).max() <= 1e-5
            assert np.abs(row["logits"] - scores).max() <= 1e-5
    # the audio-classification pipeline: softmax of the same scores, labels from label_encoder.txt
    from voxport.verify.check import softmax
    from voxport.verify.jsrun import run_job

    labels = json.loads(open(os.path.join(out, "config.json")).read())["id2label"]
    res = run_job(out, "audio-classification", ["fp32"], [(f"r{i}", [w]) for i, w in enumerate(rows)], labels)["results"]["fp32"]
    assert res["error"] is None, res["error"]
    for case, wav in zip(res["cases"], rows):
        _, scores = onnx_run(os.path.join(out, "onnx", "model.onnx"), wav[None])
        assert np.abs(np.array(case["rows"][0]) - softmax(scores.astype(np.float64))[0]).max() <= 1e-5
    # voxport verify in Node: the same outputs against SpeechBrain on the whole suite
    r = run("verify", out, "--checkpoint", folders["spk"], "--runtime", "node", "--json")
    assert r.exit_code == 0, r.output
    rep = {f["file"]: f for f in json.loads(r.stdout)["files"]}
    assert set(rep) == {"model.onnx", "model_fp16.onnx", "model_quantized.onnx", "model_uint8.onnx"}
    assert all(f["runtime"] == "node" for f in rep.values())
    assert rep["model.onnx"]["min_cosine"] >= FP32_COSINE and rep["model.onnx"]["extra"]["max_d_vs_onnxruntime_python"] <= 1e-5
    assert rep["model.onnx"]["argmax_agree"] == rep["model.onnx"]["argmax_total"] > 10


def test_other_encoders_and_foreign_code_are_refused(tmp_path, folders):
    xvec = make_folder(str(tmp_path / "spkrec-xvect-voxceleb"), encoder="speechbrain.lobes.models.Xvector.Xvector")
    r = run("build", "--arch", "speechbrain", "--checkpoint", xvec, "--output-dir", tmp_path / "out")
    assert_one_line_error(r, "ECAPA-TDNN", "speechbrain.lobes.models.Xvector.Xvector")
    bad = tmp_path / "bad"
    bad.mkdir()
    text = open(os.path.join(folders["spk"], "hyperparams.yaml")).read()
    (bad / "hyperparams.yaml").write_text(text + "\nside: !apply:os.system ['true']\n")
    for f in ("embedding_model.ckpt",):
        (bad / f).write_bytes(open(os.path.join(folders["spk"], f), "rb").read())
    r = run("build", "--arch", "speechbrain", "--checkpoint", bad, "--output-dir", tmp_path / "out")
    assert_one_line_error(r, "os.system")
    assert not (tmp_path / "out").exists()


def test_single_stages_and_a_drifting_file(tmp_path, folders, monkeypatch):
    import voxport.verify.speech as speech

    monkeypatch.setattr(speech, "speech_clips", lambda sr=16000: [])
    m, q, bad = tmp_path / "m.onnx", tmp_path / "q.onnx", tmp_path / "bad.onnx"
    r = run("export-model", "--arch", "speechbrain", "--checkpoint", folders["lid"], "--opset", "17", "--output", m)
    assert r.exit_code == 0, r.output
    r = run("quantize", m, "--output", q)
    assert r.exit_code == 0 and "not measured" in r.output  # a local source, not given again
    assert_one_line_error(run("quantize", m, "--explain"), "embeddings")
    # the embedding layer scaled by 1.02 on one channel: loads and runs, but drifts
    model = onnx.load(str(m))
    fc = next(n for n in model.graph.node if n.op_type == "Conv" and "fc" in n.name)
    w = next(i for i in model.graph.initializer if i.name == fc.input[1])
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[0] *= 1.02
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(model, str(bad))
    r = run("verify", m, q, bad, "--arch", "speechbrain", "--checkpoint", folders["lid"], "--json")
    assert r.exit_code == 1, r.output
    status = {f["file"]: (f["status"], " ".join(f["reasons"])) for f in json.loads(r.stdout)["files"]}
    assert status["m.onnx"][0] == status["q.onnx"][0] == "passed"
    assert status["bad.onnx"][0] == "failed" and "cosine" in status["bad.onnx"][1]


@pytest.mark.js
def test_folder_in_chromium(tmp_path, folders, monkeypatch):
    """AutoFeatureExtractor + AutoModel in headless Chromium (WASM): the language-ID folder's embeddings and scores
    against onnxruntime-python and SpeechBrain, from the build itself."""
    import voxport.verify.speech as speech

    monkeypatch.setattr(speech, "speech_clips", lambda sr=16000: [])
    out = tmp_path / "lid"
    r = run("build", "--arch", "speechbrain", "--checkpoint", folders["lid"], "--quantize", "q8", "--runtime", "python,browser",
            "--output-dir", out, "--json")
    assert r.exit_code == 0, r.output
    rep = [f for f in json.loads(r.stdout)["verify"]["files"] if f["runtime"] == "browser"]
    assert {f["file"] for f in rep} == {"model.onnx", "model_quantized.onnx"}
    fp32 = next(f for f in rep if f["file"] == "model.onnx")
    assert fp32["min_cosine"] >= FP32_COSINE and fp32["extra"]["max_d_vs_onnxruntime_python"] <= 5e-5
    assert fp32["extra"]["crossOriginIsolated"] is True and fp32["argmax_agree"] == fp32["argmax_total"] > 10


def test_evaluate_speaker_verification(tmp_path, built, folders, ecapa_folder):
    """`voxport evaluate --labels path,speaker`: every pair of clips is a trial; EER per model, and each file's score
    changes and decisions against SpeechBrain's. A classifier without embeddings is refused."""
    import soundfile as sf

    from voxport.evaluate.speakers import eer

    # EER itself: separable scores give 0, reversed ones 1, the threshold between the two groups
    same = np.array([True, True, False, False, False])
    assert eer(np.array([0.9, 0.8, 0.3, 0.2, 0.1]), same) == (0.0, pytest.approx(0.55))
    assert eer(np.array([0.1, 0.2, 0.7, 0.8, 0.9]), same)[0] == 1.0
    out, r = built
    assert r.exit_code == 0, r.output
    rows = ["path,speaker"]
    for spk in range(3):
        for u in range(3):
            name = f"s{spk}_{u}.wav"
            sf.write(str(tmp_path / name), speech_like(12000 + 3000 * u, 95 + 60 * spk, 10 * spk + u), 16000)
            rows.append(f"{name},speaker {spk}")
    (tmp_path / "speakers.csv").write_text("\n".join(rows) + "\n")
    r = run("evaluate", out, "--labels", tmp_path / "speakers.csv", "--checkpoint", folders["spk"], "--dtype", "fp32,q8",
            "--max-drop", "5", "--json", "--plots", tmp_path / "plots")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    by = {row["model"]: row for row in rep["rows"]}
    assert list(by) == ["pytorch", "fp32", "q8"] and all(row["trials"] == 36 and row["same_speaker_trials"] == 9 for row in by.values())
    assert by["fp32"]["max_score_change"] <= 1e-4 and by["fp32"]["agreement_with_pytorch"] == 1.0
    assert by["fp32"]["eer"] == by["pytorch"]["eer"] and by["q8"]["max_score_change"] <= 0.02
    assert rep["gate_failures"] == [] and by["q8"]["eer_change_points"] <= 5  # the gate counts EER gains only
    assert sorted(os.listdir(tmp_path / "plots")) == ["comparison.png"]  # no confusion matrix for trials
    # a gender classifier has no embeddings: refused with one line
    r = run("evaluate", ecapa_folder, "--labels", tmp_path / "speakers.csv")
    assert_one_line_error(r, "no embeddings output")
