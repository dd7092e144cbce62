"""Greedy CTC text and word timestamps from frame ids, as transformers' automatic-speech-recognition pipeline
computes them for CTC models (Wav2Vec2CTCTokenizer.decode with skip_special_tokens=False):

every frame's token is kept (<s>, </s>, <unk> and added tokens included; an id outside the vocabulary reads as the
unk token), equal neighbours are merged, the blank (pad token) is dropped, the word delimiter becomes a space, the
text is joined and stripped (spaces inside are kept as they come: two delimiters around a blank give two spaces),
then lower-cased where do_lower_case and cleaned (" ." -> ".", " n't" -> "n't" ...) where
clean_up_tokenization_spaces. Word timestamps are transformers' char offsets grouped at spaces.

skip_special=True decodes as Transformers.js does (skip_special_tokens: true): the tokens its tokenizer.json marks
special are dropped before repeats are merged, so "w <unk> w" reads "w" there and "w<unk>w" here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby

CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"),
            (" 've", "'ve"), (" 're", "'re"))


@dataclass(frozen=True)
class CtcVocab:
    id2tok: dict  # id -> token text
    pad: str = "<pad>"  # the CTC blank
    delimiter: str = "|"
    unk: str = "<unk>"
    lower: bool = False  # do_lower_case
    cleanup: bool = False  # clean_up_tokenization_spaces (transformers' default when the config does not say)
    special: frozenset = field(default_factory=frozenset)  # ids skip_special=True drops

    @classmethod
    def from_config(cls, vocab: dict, cfg: dict, special_ids=()) -> "CtcVocab":
        """vocab: token -> id (added tokens included); cfg: tokenizer_config.json with plain-string special tokens."""
        return cls(id2tok={int(i): t for t, i in vocab.items()}, pad=cfg.get("pad_token") or "<pad>",
                   delimiter=cfg.get("word_delimiter_token") or "|", unk=cfg.get("unk_token") or "<unk>",
                   lower=bool(cfg.get("do_lower_case", False)), cleanup=bool(cfg.get("clean_up_tokenization_spaces", False)),
                   special=frozenset(int(i) for i in special_ids))

    def _chars(self, ids, skip_special: bool) -> list:
        """[(char, first frame, end frame)] after merging repeats and dropping the blank; the delimiter as " "."""
        toks = [(self.id2tok.get(int(i), self.unk), j) for j, i in enumerate(ids) if not (skip_special and int(i) in self.special)]
        out = []
        for tok, grp in groupby(toks, key=lambda x: x[0]):
            frames = [j for _, j in grp]
            if tok != self.pad:
                out.append((" " if tok == self.delimiter else tok, frames[0], frames[-1] + 1))
        return out

    def text(self, ids, skip_special: bool = False) -> str:
        text = "".join(c for c, _, _ in self._chars(ids, skip_special)).strip()
        if self.lower:
            text = text.lower()
        if self.cleanup:
            for a, b in CLEANUPS:
                text = text.replace(a, b)
        return text

    def words(self, ids, skip_special: bool = False) -> list:
        """[(word, start frame, end frame)]: runs of characters between spaces, as transformers' _get_word_offsets."""
        words, cur = [], None
        for c, s, e in self._chars(ids, skip_special):
            if c == " ":
                if cur:
                    words.append(tuple(cur))
                cur = None
            elif cur is None:
                cur = [c, s, e]
            else:
                cur[0] += c
                cur[2] = e
        if cur:
            words.append(tuple(cur))
        return words


def cer(refs: list, hyps: list) -> float:
    """Character error rate over all pairs: edit distance (jiwer) / reference characters; an empty reference
    counts its hypothesis' characters as insertions."""
    import jiwer

    total = sum(len(r) for r in refs)
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    edits = float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs])) * sum(len(r) for r, _ in pairs) if pairs else 0.0
    edits += sum(len(h) for r, h in zip(refs, hyps) if not r)
    return edits / total if total else float(edits > 0)
