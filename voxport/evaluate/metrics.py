"""Metrics on labelled data: classification (numpy only) and CTC (WER/CER with jiwer)."""
from __future__ import annotations

import re
import unicodedata

import numpy as np


def classification(y_true: list, y_pred: list, conf: list, classes: list) -> dict:
    """accuracy, F1-macro (over the classes that occur in y_true or y_pred, as scikit-learn averages),
    per-class precision/recall/F1/support (0 where undefined), confusion matrix (rows true, columns predicted)."""
    idx = {c: i for i, c in enumerate(classes)}
    n = len(classes)
    cm = np.zeros((n, n), np.int64)
    for t, p in zip(y_true, y_pred):
        cm[idx[t], idx[p]] += 1
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    present = (support > 0) | (predicted > 0)
    total = int(cm.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else None,
        "f1_macro": float(f1[present].mean()) if present.any() else None,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion": {"labels": list(classes), "matrix": cm.tolist()},
        "mean_confidence": float(np.mean(conf)) if len(conf) else None,
    }


_KEEP = re.compile(r"[^\w\s']", re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower case, punctuation other than apostrophes removed, spaces collapsed (NFC)."""
    text = unicodedata.normalize("NFC", text).lower()
    return " ".join(_KEEP.sub(" ", text).replace("_", " ").split())


def ctc(refs: list, hyps: list) -> dict:
    """Corpus WER and CER (edit distances from jiwer) over all pairs."""
    import jiwer

    if not refs:
        return {"wer": None, "cer": None}
    # jiwer refuses empty references; a reference of only spaces has no words and no characters to get wrong
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not pairs:
        return {"wer": None, "cer": None}
    r, h = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"wer": float(jiwer.wer(r, h)), "cer": float(jiwer.cer(r, h))}
