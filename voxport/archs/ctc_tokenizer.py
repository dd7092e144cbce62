"""CTC tokenizers of the wav2vec2 family: read every saved form, write tokenizer.json for Transformers.js.

A checkpoint saves its tokenizer as vocab.json (token -> id; several languages nest one dict per language),
added_tokens.json (token -> id past the vocabulary) and tokenizer_config.json, whose special tokens are
plain strings or AddedToken dicts ({"content": ..., "__type": "AddedToken"}) and which may list
`added_tokens_decoder` (id -> {"content", "special"}). Special tokens missing from the vocabulary get the next
ids, bos, eos, unk, pad in that order, as transformers' Wav2Vec2CTCTokenizer gives them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import CheckpointError

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
DEFAULTS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "word_delimiter_token": "|"}


@dataclass
class CtcTokenizer:
    vocab: dict  # token -> id, added tokens included
    config: dict  # tokenizer_config.json with special tokens as plain strings
    added: dict = field(default_factory=dict)  # added token -> special?

    def special_ids(self) -> set:
        """Tokens decode(skip_special_tokens=True) drops before merging: bos, eos, unk, special added tokens."""
        names = {self.config.get(k) for k in ("bos_token", "eos_token", "unk_token")} | {t for t, s in self.added.items() if s}
        names.discard(self.config.get("pad_token"))
        return {self.vocab[t] for t in names if t in self.vocab}


def token_text(value):
    """A special token as saved (plain string or AddedToken dict) -> its text."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def _read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{os.path.basename(path)} in the checkpoint is not valid JSON ({e}); {what}") from None


def normalize_config(tcfg: dict) -> dict:
    cfg = dict(tcfg or {})
    for key in (*SPECIAL_KEYS, "word_delimiter_token"):
        if key in cfg:
            cfg[key] = token_text(cfg[key])
        if cfg.get(key) is None:
            cfg[key] = DEFAULTS[key]
    return cfg


def build_tokenizer(vocab: dict, tcfg: dict | None = None, added: dict | None = None) -> CtcTokenizer:
    """vocab: token -> id (vocab.json); added: token -> id (added_tokens.json); tcfg: tokenizer_config.json."""
    cfg = normalize_config(tcfg)
    if cfg.get("target_lang") and isinstance(vocab.get(cfg["target_lang"]), dict):
        vocab = vocab[cfg["target_lang"]]
    if vocab and all(isinstance(v, dict) for v in vocab.values()):
        raise CheckpointError(f"vocab.json holds one vocabulary per language ({', '.join(list(vocab)[:4])} ...); "
                              "set target_lang in tokenizer_config.json to the one to export")
    if not vocab or not all(isinstance(t, str) and isinstance(i, int) and not isinstance(i, bool) for t, i in vocab.items()):
        raise CheckpointError("vocab.json must map each token to an integer id")
    merged = dict(vocab)
    flags = {}
    taken = set(merged.values())
    for tok, i in (added or {}).items():
        if not isinstance(i, int) or isinstance(i, bool):
            raise CheckpointError("added_tokens.json must map each token to an integer id")
        if tok not in merged and i not in taken:
            merged[tok] = i
            taken.add(i)
        flags.setdefault(tok, False)
    for i, entry in sorted(((int(k), v) for k, v in (cfg.get("added_tokens_decoder") or {}).items()), key=lambda x: x[0]):
        tok = token_text(entry)
        if tok is None:
            continue
        if tok not in merged and i not in taken:
            merged[tok] = i
            taken.add(i)
        if isinstance(entry, dict) and tok not in (cfg["pad_token"], cfg["word_delimiter_token"]):
            flags[tok] = bool(entry.get("special", False)) or flags.get(tok, False)
    for key in SPECIAL_KEYS:  # special tokens missing from the vocabulary get the next ids
        tok = cfg[key]
        if tok not in merged:
            merged[tok] = max(taken) + 1
            taken.add(merged[tok])
    for key in SPECIAL_KEYS:
        flags.pop(cfg[key], None)
    cfg.pop("added_tokens_decoder", None)
    return CtcTokenizer(vocab=merged, config=cfg, added=flags)


def read_ctc_tokenizer(folder: str) -> CtcTokenizer:
    vocab_path = os.path.join(folder, "vocab.json")
    if not os.path.isfile(vocab_path):
        raise CheckpointError("the checkpoint has no vocab.json; a CTC checkpoint needs its vocabulary")
    vocab = _read_json(vocab_path, "re-save the tokenizer")
    tcfg, added = {}, {}
    if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        tcfg = _read_json(os.path.join(folder, "tokenizer_config.json"), "re-save the tokenizer")
    if os.path.isfile(os.path.join(folder, "added_tokens.json")):
        added = _read_json(os.path.join(folder, "added_tokens.json"), "re-save the tokenizer")
    if not isinstance(vocab, dict) or not isinstance(tcfg, dict) or not isinstance(added, dict):
        raise CheckpointError("vocab.json, added_tokens.json and tokenizer_config.json must each hold a JSON object")
    return build_tokenizer(vocab, tcfg, added)


def greedy_decode(tok: CtcTokenizer, ids: list) -> str:
    """Greedy CTC on frame ids as transformers' ASR pipeline decodes them (voxport.ctc: every token kept)."""
    return ctc_vocab(tok).text(ids)


def ctc_vocab(tok: CtcTokenizer):
    from ..ctc import CtcVocab

    return CtcVocab.from_config(tok.vocab, tok.config, tok.special_ids())


def ctc_tokenizer_files(vocab, tcfg: dict | None = None, added: dict | None = None) -> tuple:
    """tokenizer.json (built with `tokenizers`) and tokenizer_config.json for CTC greedy decoding.

    vocab: a CtcTokenizer, or token -> id with tcfg/added as saved. The pad token is the CTC blank, dropped by the
    CTC decoder after repeats are merged; every other token decodes as its text (see voxport.ctc).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = vocab if isinstance(vocab, CtcTokenizer) else build_tokenizer(vocab, tcfg, added)
    cfg_in = tok.config
    pad, unk, delim = cfg_in["pad_token"], cfg_in["unk_token"], cfg_in["word_delimiter_token"]
    t = Tokenizer(models.WordLevel(vocab=dict(tok.vocab), unk_token=unk))
    t.normalizer = normalizers.Replace(" ", delim)
    t.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    t.decoder = decoders.CTC(pad_token=pad, word_delimiter_token=delim, cleanup=True)
    # no token is marked special: transformers' pipeline decodes CTC with skip_special_tokens=False, and Transformers.js
    # (skip_special_tokens: true) then keeps <s>, </s>, <unk> and added tokens in the text as the pipeline does
    named = [cfg_in["bos_token"], cfg_in["eos_token"], unk] + list(tok.added)
    t.add_tokens([AddedToken(name, special=False, normalized=False) for name in dict.fromkeys(named) if name in tok.vocab])
    cfg = {
        "tokenizer_class": "Wav2Vec2CTCTokenizer",
        "pad_token": pad, "unk_token": unk, "bos_token": cfg_in["bos_token"], "eos_token": cfg_in["eos_token"],
        "word_delimiter_token": delim, "do_lower_case": bool(cfg_in.get("do_lower_case", False)),
        # the checkpoint's own setting (transformers' default: off); Transformers.js would default it on
        "clean_up_tokenization_spaces": bool(cfg_in.get("clean_up_tokenization_spaces", False)),
        "model_max_length": 1000000000000000019884624838656,
    }
    return t.to_str(pretty=True), cfg
