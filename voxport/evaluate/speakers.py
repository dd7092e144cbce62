"""Speaker verification on labelled audio: every pair of clips is a trial (same speaker or not), scored by the cosine
of the two clips' embeddings; each model gets its equal error rate, and each file how far its scores and decisions
move from the reference's."""
from __future__ import annotations

import numpy as np

EMBEDDING_OUTPUTS = ("embeddings", "last_hidden_state")  # the first a result has is the clip's embedding


def clip_embedding(result: dict) -> np.ndarray | None:
    """One vector per clip from a model's result: `embeddings` [1, dim], or frame embeddings averaged over frames."""
    for name in EMBEDDING_OUTPUTS:
        if name in result:
            x = np.asarray(result[name], dtype=np.float64)
            x = x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x[None]
            return x.mean(0)
    return None


def trial_scores(embeddings: np.ndarray) -> np.ndarray:
    """The cosine of every pair (i < j) of rows."""
    n = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-30)
    return (n @ n.T)[np.triu_indices(len(n), 1)]


def same_speaker(speakers: list) -> np.ndarray:
    s = np.asarray(speakers)
    return (s[:, None] == s[None, :])[np.triu_indices(len(s), 1)]


def eer(scores: np.ndarray, same: np.ndarray) -> tuple:
    """(equal error rate, the score threshold where it holds): accept a trial when its score >= the threshold.
    The rate is the mean of the miss and false-accept rates at the threshold where they are closest."""
    same = np.asarray(same, bool)
    if not same.any() or same.all():
        return None, None
    order = np.argsort(-scores, kind="stable")
    s, sc = same[order], scores[order]
    accept_true = np.cumsum(s) / s.sum()  # accepting the k+1 highest scores
    accept_false = np.cumsum(~s) / (~s).sum()
    miss = 1 - accept_true
    k = int(np.argmin(np.abs(miss - accept_false)))
    # midway to the next score: no trial sits on the threshold, so a file's tiny score changes do not flip ties
    thr = (sc[k] + sc[k + 1]) / 2 if k + 1 < len(sc) else sc[k]
    return float((miss[k] + accept_false[k]) / 2), float(thr)


def verification_rows(models: list, embeddings: dict, speakers: list, reference: str | None) -> list:
    """One row per model: trials, same-speaker trials, EER and its threshold; against the reference model, the largest
    change of a trial's score and the share of trials decided the same way at the reference's EER threshold."""
    same = same_speaker(speakers)
    scores = {m: trial_scores(np.stack(embeddings[m])) for m in models}
    rows = []
    ref_thr = eer(scores[reference], same)[1] if reference in scores else None
    for m in models:
        e, thr = eer(scores[m], same)
        row = {"model": m, "trials": int(len(same)), "same_speaker_trials": int(same.sum()), "eer": e, "threshold": thr,
               "max_score_change": None, "agreement_with_pytorch": None}
        if reference in scores and m != reference and len(same):
            row["max_score_change"] = float(np.abs(scores[m] - scores[reference]).max())
            if ref_thr is not None:
                row["agreement_with_pytorch"] = float(np.mean((scores[m] >= ref_thr) == (scores[reference] >= ref_thr)))
        rows.append(row)
    return rows
