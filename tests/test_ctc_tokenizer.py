"""CTC tokenizers in every saved form vs transformers' Wav2Vec2CTCTokenizer, on ids that include added tokens."""
import json

import numpy as np
import pytest

from voxport.archs.ctc_tokenizer import ctc_tokenizer_files, greedy_decode, read_ctc_tokenizer
from voxport.errors import CheckpointError

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("abcdeilmnorstuãçé")


def added_token(content):
    return {"content": content, "__type": "AddedToken", "lstrip": False, "rstrip": False, "normalized": True, "single_word": False}


def _write(folder, vocab, tcfg, added=None):
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(tcfg, ensure_ascii=False), encoding="utf-8")
    if added is not None:
        (folder / "added_tokens.json").write_text(json.dumps(added), encoding="utf-8")
    return folder


def _forms(tmp_path):
    vocab = {t: i for i, t in enumerate(VOCAB)}
    n = len(vocab)
    plain = {"tokenizer_class": "Wav2Vec2CTCTokenizer", "pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>",
             "eos_token": "</s>", "word_delimiter_token": "|"}
    dicts = {**plain, **{k: added_token(plain[k]) for k in ("pad_token", "unk_token", "bos_token", "eos_token")}}
    decoder = {**plain, "added_tokens_decoder": {
        str(n): {"content": "<laugh>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": False},
        str(n + 1): {"content": "<noise>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": False}}}
    no_bos = {t: i for i, t in enumerate([t for t in VOCAB if t not in ("<s>", "</s>")])}
    return {
        "plain strings": (_write(tmp_path / "plain", vocab, plain), 0),
        "AddedToken dicts + added_tokens.json": (_write(tmp_path / "dicts", vocab, dicts, {"<laugh>": n, "<noise>": n + 1}), 2),
        "added_tokens_decoder": (_write(tmp_path / "decoder", vocab, decoder), 2),
        "special tokens missing from vocab.json": (_write(tmp_path / "nobos", no_bos, dicts), 0),
    }


def _rows(vocab, added_ids, seed=0):
    """Greedy frame rows: mostly blanks and letters, some word delimiters, <unk>, <s>, </s> and added tokens (a
    letter on both sides of <unk> stays twice in transformers' pipeline; two delimiters around a blank give two
    spaces)."""
    letters = [i for t, i in vocab.items() if len(t) == 1 and t != "|"]
    specials = [vocab[t] for t in ("<unk>", "<s>", "</s>") if t in vocab]
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(150):
        row = []
        for _ in range(40):
            r = rng.random()
            row.append(vocab["<pad>"] if r < 0.3 else vocab["|"] if r < 0.38 else
                       int(rng.choice(added_ids)) if added_ids and r < 0.45 else
                       int(rng.choice(specials)) if r < 0.5 else int(rng.choice(letters)))
        rows.append(row)
    return rows


def test_every_saved_form_decodes_like_transformers(tmp_path):
    from tokenizers import Tokenizer
    from transformers import Wav2Vec2CTCTokenizer

    for name, (folder, n_added) in _forms(tmp_path).items():
        hf = Wav2Vec2CTCTokenizer.from_pretrained(str(folder))
        tok = read_ctc_tokenizer(str(folder))
        assert tok.vocab == hf.get_vocab(), name
        added_ids = [tok.vocab[t] for t in ("<laugh>", "<noise>") if t in tok.vocab]
        assert len(added_ids) == n_added and all(i >= len(VOCAB) for i in added_ids), name
        tok_json, cfg = ctc_tokenizer_files(tok)
        assert all(isinstance(cfg[k], str) for k in ("pad_token", "unk_token", "bos_token", "eos_token")), name
        fast = Tokenizer.from_str(tok_json)
        rows = _rows(tok.vocab, added_ids)
        want = hf.batch_decode(rows)  # skip_special_tokens=False, as the ASR pipeline decodes CTC
        assert sum("<unk>" in w for w in want) > 20 and sum("  " in w for w in want) > 5, name
        assert [greedy_decode(tok, r) for r in rows] == want, name
        # tokenizer.json decoded as Transformers.js decodes (skip_special_tokens: true): the same text
        assert [fast.decode(r, skip_special_tokens=True).strip() for r in rows] == want, name
        if added_ids:
            assert sum("<laugh>" in w for w in want) > 20  # the added ids were exercised, not decoded as ""


def test_folder_saved_by_transformers(tmp_path):
    """The layout transformers writes itself (added_tokens.json and added_tokens_decoder), read back."""
    from transformers import Wav2Vec2CTCTokenizer

    src = _write(tmp_path / "src", {t: i for i, t in enumerate(VOCAB)},
                 {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "word_delimiter_token": "|"})
    hf = Wav2Vec2CTCTokenizer.from_pretrained(str(src))
    hf.add_tokens(["<laugh>"])
    hf.save_pretrained(str(tmp_path / "saved"))
    tok = read_ctc_tokenizer(str(tmp_path / "saved"))
    laugh = tok.vocab["<laugh>"]
    assert laugh == len(VOCAB)
    ids = [tok.vocab[c] for c in "ola"] + [tok.vocab["|"], laugh, laugh, 0, tok.vocab["e"]]
    assert greedy_decode(tok, ids) == hf.decode(ids) == "ola <laugh>e"


def test_unreadable_tokenizer_files(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vocab.json").write_text("{")
    with pytest.raises(CheckpointError, match="vocab.json in the checkpoint is not valid JSON"):
        read_ctc_tokenizer(str(bad))
    multi = _write(tmp_path / "multi", {"por": {"a": 0}, "eng": {"b": 0}}, {})
    with pytest.raises(CheckpointError, match="target_lang"):
        read_ctc_tokenizer(str(multi))
    (multi / "tokenizer_config.json").write_text(json.dumps({"target_lang": "por"}))
    assert read_ctc_tokenizer(str(multi)).vocab["a"] == 0
    ids = _write(tmp_path / "ids", {"a": "zero"}, {})
    with pytest.raises(CheckpointError, match="integer id"):
        read_ctc_tokenizer(str(ids))
