"""A deterministic verify suite: speech-like signals, silence, clipping, extreme lengths, batches."""
from __future__ import annotations

import numpy as np

from .base import Case

SR = 16000


def speech_like(n: int, f0: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A voiced signal with pitch contour, moving formants and syllable rhythm, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0_t = f0 * (1 + 0.06 * np.sin(2 * np.pi * 2.3 * t + rng.uniform(0, 6)) + 0.04 * np.sin(2 * np.pi * 0.6 * t))
    phase = 2 * np.pi * np.cumsum(f0_t) / sr
    f1 = 500 + 200 * np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6))
    f2 = 1500 + 500 * np.sin(2 * np.pi * 2.2 * t + rng.uniform(0, 6))
    x = np.zeros(n)
    for k in range(1, 41):
        fk = k * f0_t
        gain = np.exp(-((fk - f1) / 150) ** 2) + 0.6 * np.exp(-((fk - f2) / 250) ** 2) + 0.2 * np.exp(-((fk - 2700) / 300) ** 2)
        x += gain / k**0.5 * np.sin(k * phase)
    syll = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6))) ** 1.5
    x = x * syll + 0.01 * rng.standard_normal(n)
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def windows(audio: np.ndarray, seconds: float = 0.75, sr: int = SR) -> np.ndarray:
    """Non-overlapping windows of a clip, as a batch [W, n]."""
    n = int(seconds * sr)
    k = len(audio) // n
    return audio[: k * n].reshape(k, n) if k else audio[None, :]


def ecapa_cases(min_samples: int) -> list:
    """Cases for a model without attention mask: rows of a batch share one length."""
    male = lambda n, s: speech_like(n, 110, s)  # noqa: E731
    female = lambda n, s: speech_like(n, 210, s)  # noqa: E731
    w = int(0.75 * SR)
    cases = [
        Case("male 0.75 s", male(w, 1)[None]),
        Case("female 0.75 s", female(w, 2)[None]),
        Case("male 3 s", male(3 * SR, 3)[None]),
        Case("female 3 s", female(3 * SR, 4)[None]),
        Case("silence 0.75 s", np.zeros((1, w), np.float32)),
        Case("clipped 1 s", np.clip(female(SR, 5) * 8, -1, 1)[None]),
        Case("noise 1 s", (0.05 * np.random.default_rng(6).standard_normal((1, SR))).astype(np.float32)),
        Case(f"minimum {min_samples} samples", male(min_samples, 7)[None]),
        Case("male 30 s", male(30 * SR, 8)[None]),
        Case("batch 3 x 0.75 s", np.stack([male(w, 9), female(w, 10), speech_like(w, 160, 11)])),
        Case("batch 3 x 2 s", np.stack([female(2 * SR, 12), male(2 * SR, 13), speech_like(2 * SR, 95, 14)])),
    ]
    return cases


def audio_cases(name: str, audio: np.ndarray, window_s: float = 0.75, prepare=None) -> list:
    """A real clip: whole, and cut into 0.75 s windows run as one batch. `prepare` is what the deployed
    pipeline does to each clip it is given (e.g. wav2vec2's per-clip normalisation), applied per row."""
    prep = prepare or (lambda x: x)
    cases = [Case(f"{name} (whole)", prep(audio)[None])]
    if len(audio) >= 2 * int(window_s * SR):
        cases.append(Case(f"{name} ({window_s} s windows)", np.stack([prep(w) for w in windows(audio, window_s)])))
    return cases
