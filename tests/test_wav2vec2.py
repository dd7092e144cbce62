"""The wav2vec2 family: every model type, classification and CTC, masks, tokenizer, external data."""
import json
import os

import numpy as np
import onnx
import pytest
import torch

from voxport.archs import get_arch
from voxport.archs.wav2vec2 import MODEL_TYPES, ctc_tokenizer_files, make_checkpoint
from voxport.build import build
from voxport.errors import CheckpointError

# (model type, task, feature-encoder norm); the coverage test checks every registered type appears here
COMBOS = [
    ("wav2vec2", "cls", "layer"),
    ("wav2vec2", "ctc", "group"),
    ("hubert", "ctc", "layer"),
    ("wavlm", "cls", "group"),
    ("data2vec-audio", "ctc", "layer"),
    ("unispeech", "cls", "layer"),
    ("unispeech-sat", "ctc", "group"),
]
PT_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("abcdeilmnorstuvãáçéêíóõú")


def test_every_model_type_has_a_tiny_test_model():
    assert sorted({m for m, _, _ in COMBOS}) == sorted(MODEL_TYPES)
    assert {t for _, t, _ in COMBOS} == {"cls", "ctc"} and {n for _, _, n in COMBOS} == {"layer", "group"}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("w2v")
    return {c: make_checkpoint(str(root / "-".join(c)), *c, seed=1, vocab=PT_VOCAB) for c in COMBOS}


@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_build_and_parity(tmp_path, ckpts, combo):
    model_type, task, norm = combo
    out = tmp_path / "out"
    r = build("wav2vec2", str(out), checkpoint=ckpts[combo], quantize_modes=("q8",))
    assert r.verify.passed, r.verify.to_table()
    m = onnx.load(str(out / "onnx" / "model.onnx"))
    names = [i.name for i in m.graph.input]
    layer = norm == "layer" or model_type == "data2vec-audio"
    assert names == (["input_values", "attention_mask"] if layer else ["input_values"])
    if layer:
        assert m.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert any(c.startswith("padded batch") for c in r.verify.cases)
    assert [o.name for o in m.graph.output] == ["logits"]
    out_dims = m.graph.output[0].type.tensor_type.shape.dim
    assert len(out_dims) == (3 if task == "ctc" else 2)
    fp32 = r.verify.files[0]
    assert fp32.file == "model.onnx" and fp32.max_abs_logit <= 1e-4
    cfg = json.loads((out / "config.json").read_text())
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["return_attention_mask"] is layer and pre["do_normalize"] is True
    if task == "ctc":
        assert fp32.extra["transcripts_equal"].split("/")[0] == fp32.extra["transcripts_equal"].split("/")[1]
        assert (out / "tokenizer.json").exists() and (out / "tokenizer_config.json").exists()
        assert cfg["architectures"][0].endswith("ForCTC")
    else:
        assert cfg["architectures"][0].endswith("ForSequenceClassification") and cfg["id2label"]
    if not layer:
        assert fp32.extra["padding_drift"] > 0  # group norm: padding changes the output, reported
    if model_type == "data2vec-audio":
        assert cfg["model_type"] == "wav2vec2" and cfg["voxport_model_type"] == "data2vec-audio"
    # the q8 file leaves every Conv (feature encoder, positional conv) in float
    q = onnx.load(str(out / "onnx" / "model_quantized.onnx"))
    inits = {i.name: i.data_type for i in q.graph.initializer}
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert convs and all(inits.get(n.input[1]) == onnx.TensorProto.FLOAT for n in convs)


def test_padded_batch_matches_each_clip_alone(ckpts):
    """The graph with attention_mask vs transformers' model on each clip alone (layer-norm CTC)."""
    import onnxruntime as ort

    from voxport.export import export_model

    spec = get_arch("wav2vec2")
    loaded = spec.load(checkpoint=ckpts[("hubert", "ctc", "layer")])
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.onnx")
        export_model("wav2vec2", p, loaded=loaded, opset=17)
        assert onnx.load(p).opset_import[0].version == 17
        sess = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        lens = [20000, 9000, 4000]
        x = np.zeros((3, 20000), np.float32)
        mask = np.zeros((3, 20000), np.int64)
        for i, n in enumerate(lens):
            x[i, :n] = rng.standard_normal(n)
            mask[i, :n] = 1
        got = sess.run(None, {"input_values": x, "attention_mask": mask})[0]
        hf = loaded.model.model
        for i, n in enumerate(lens):
            with torch.no_grad():
                alone = hf(torch.from_numpy(x[i:i + 1, :n])).logits[0].numpy()
            assert np.abs(got[i, : alone.shape[0]] - alone).max() <= 1e-4


def test_tokenizer_round_trip_keeps_accents_and_double_letters():
    from tokenizers import Tokenizer
    from transformers import Wav2Vec2CTCTokenizer

    vocab = {t: i for i, t in enumerate(PT_VOCAB)}
    tcfg = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "word_delimiter_token": "|"}
    tok_json, cfg = ctc_tokenizer_files(vocab, tcfg)
    assert cfg["tokenizer_class"] == "Wav2Vec2CTCTokenizer"
    tok = Tokenizer.from_str(tok_json)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        vp = os.path.join(d, "vocab.json")
        with open(vp, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        hf = Wav2Vec2CTCTokenizer(vp, **tcfg)
    text = "não sei se vocês estão lá"
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text
    # CTC frames: repeats merge, a blank between two letters keeps both, `|` is a space
    pad, c, o, s, e, bar = (vocab[t] for t in ("<pad>", "c", "o", "s", "e", "|"))
    frames = [pad, c, c, o, pad, pad, s, pad, s, s, o, bar, bar, pad, e, vocab["é"], pad]
    assert hf.decode(frames) == tok.decode(frames) == "cosso eé"
    # <s> between two e's stays in the text, as transformers' pipeline (skip_special_tokens=False) and Transformers.js
    # (the folder's tokenizer.json marks no token special) decode it
    with_bos = frames[:-2] + [vocab["<s>"], e] + frames[-2:]
    assert hf.decode(with_bos) == tok.decode(with_bos, skip_special_tokens=True) == "cosso e<s>eé"
    from voxport.archs.wav2vec2 import Wav2Vec2Spec

    class L:
        extra = {"vocab": vocab, "tokenizer_config": tcfg}

    for f, want in ((frames, "cosso eé"), (with_bos, "cosso e<s>eé")):
        assert Wav2Vec2Spec().transcribe(L, np.eye(len(vocab))[f]) == want


def test_external_data_path(tmp_path, ckpts, monkeypatch):
    import voxport.onnxutil as ou

    monkeypatch.setattr(ou, "EXTERNAL_DATA_THRESHOLD", 10_000)
    out = tmp_path / "ext"
    r = build("wav2vec2", str(out), checkpoint=ckpts[("wav2vec2", "cls", "layer")], quantize_modes=("q8", "uint8"))
    assert r.verify.passed, r.verify.to_table()
    files = sorted(os.listdir(out / "onnx"))
    assert "model.onnx_data" in files and "model_quantized.onnx_data" in files
    assert os.path.getsize(out / "onnx" / "model.onnx") < 100_000 < os.path.getsize(out / "onnx" / "model.onnx_data")
    cfg = json.loads((out / "config.json").read_text())
    ext = cfg["transformers.js_config"]["use_external_data_format"]
    assert ext["model.onnx"] == 1 and ext["model_quantized.onnx"] == 1


def test_q4_and_fp16_on_a_matmul_heavy_model(tmp_path):
    import onnxruntime as ort

    ck = make_checkpoint(str(tmp_path / "small"), "wav2vec2", "ctc", "layer", preset="small", seed=4, vocab=PT_VOCAB)
    out = tmp_path / "out"
    r = build("wav2vec2", str(out), checkpoint=ck, quantize_modes=("fp16", "q4", "q4f16"))
    assert r.verify.passed, r.verify.to_table()
    assert not r.skipped
    q4 = onnx.load(str(out / "onnx" / "model_q4.onnx"))
    assert any(n.op_type == "MatMulNBits" for n in q4.graph.node)
    for name in ("model_fp16.onnx", "model_q4f16.onnx"):
        sess = ort.InferenceSession(str(out / "onnx" / name), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].type == "tensor(float)" and sess.get_outputs()[0].type == "tensor(float)"
    fp16 = next(f for f in r.verify.files if f.file == "model_fp16.onnx")
    assert fp16.max_abs_prob < 1e-3


def test_not_a_wav2vec2_checkpoint(tmp_path, ecapa_ckpt):
    with pytest.raises(CheckpointError, match="not in the wav2vec2 family|no readable config"):
        get_arch("wav2vec2").load(checkpoint=ecapa_ckpt)


def test_tokenizer_json_decodes_greedy_frames_like_transformers(tmp_path):
    """tokenizer.json read back with `tokenizers` vs transformers' Wav2Vec2CTCTokenizer on many greedy frame rows."""
    from tokenizers import Tokenizer
    from transformers import Wav2Vec2CTCTokenizer

    vocab = {t: i for i, t in enumerate(PT_VOCAB)}
    tcfg = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "word_delimiter_token": "|"}
    tok_json, cfg = ctc_tokenizer_files(vocab, tcfg)
    (tmp_path / "tokenizer.json").write_text(tok_json, encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    hf = Wav2Vec2CTCTokenizer.from_pretrained(str(tmp_path))
    # greedy CTC rows: mostly blanks and letters (accents included), some word delimiters
    p = np.full(len(vocab), 0.64 / (len(vocab) - 5))
    p[:5] = [0.3, 0, 0, 0, 0.06]
    rows = np.random.default_rng(0).choice(len(vocab), size=(200, 60), p=p / p.sum()).tolist()
    # transformers 5's skip_special_tokens=True drops the blank before merging repeats, so decode without it
    # (no other special tokens occur here); it also strips the ends, as the Transformers.js pipeline does
    want = hf.batch_decode(rows)
    got = [tok.decode(r, skip_special_tokens=True).strip() for r in rows]
    assert got == want
    assert any(c in "".join(got) for c in "ãçéõ") and sum(" " in g for g in got) > 100



@pytest.mark.js
def test_shipped_graph_holds_the_fusions_and_verifies(tmp_path):
    """SkipLayerNormalization and exact Gelu are written into the file (ops every Transformers.js runtime runs; no
    BiasGelu, no FastGelu, no Attention), the Linears stay MatMul + Add (quantized to MatMulInteger in q8), and both
    files verify against PyTorch in onnxruntime and in Node."""
    ck = make_checkpoint(str(tmp_path / "ck"), "wav2vec2", "cls", "group", preset="small", seed=5, spread=True)
    out = tmp_path / "out"
    r = build("wav2vec2", str(out), checkpoint=ck, quantize_modes=("q8",), runtimes=("python", "node"))
    assert r.verify.passed, r.verify.to_table()
    assert {f.runtime for f in r.verify.files} == {"python", "node"}
    m = onnx.load(str(out / "onnx" / "model.onnx"))
    count = lambda model, op: sum(n.op_type == op for n in model.graph.node)  # noqa: E731
    assert {n.op_type for n in m.graph.node if n.domain == "com.microsoft"} == {"SkipLayerNormalization", "Gelu"}
    assert count(m, "SkipLayerNormalization") >= 4  # two per layer, less the first LayerNorm after the positional conv
    assert count(m, "Gelu") == 6 and count(m, "Erf") == 0  # 3 feature-encoder convs, positional conv, 2 feed-forwards
    assert count(m, "Softmax") == 2 and count(m, "Gemm") <= 1  # the Linears stay MatMul + Add (only the head is Gemm)
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["voxport.fused"]) == {"SkipLayerNormalization": count(m, "SkipLayerNormalization"), "Gelu": 6}
    q = onnx.load(str(out / "onnx" / "model_quantized.onnx"))
    assert count(q, "MatMulInteger") >= 13 and count(q, "SkipLayerNormalization") == count(m, "SkipLayerNormalization")
    assert r.verify.files[0].max_abs_logit <= 1e-4


def test_masked_graph_is_fused_too(tmp_path):
    """A layer-norm (pre-LN, attention_mask) CTC graph gets the same fusions, and its fp16 file loads (the types of
    tensors after contrib ops come from onnxruntime's shape inference)."""
    import onnxruntime as ort

    ck = make_checkpoint(str(tmp_path / "ck"), "wav2vec2", "ctc", "layer", preset="small", seed=6, vocab=PT_VOCAB, spread=True)
    out = tmp_path / "out"
    r = build("wav2vec2", str(out), checkpoint=ck, quantize_modes=("fp16",))
    assert r.verify.passed, r.verify.to_table()
    ops = [n.op_type for n in onnx.load(str(out / "onnx" / "model.onnx")).graph.node]
    assert "Attention" not in ops and ops.count("Softmax") == 2
    assert "SkipLayerNormalization" in ops and "Gelu" in ops and "Erf" not in ops
    ort.InferenceSession(str(out / "onnx" / "model_fp16.onnx"), providers=["CPUExecutionProvider"])
