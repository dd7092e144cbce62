"""Audio for verification: the reader `voxport run` uses (soundfile, channels averaged, soxr to the model's rate),
so verify judges a file on the samples run feeds; errors are the one-line AudioError of bad input."""
from __future__ import annotations

import numpy as np

from ..errors import AudioError
from ..infer.audio import ClipError, read_audio


def load_audio(path: str, sr: int = 16000, min_samples: int = 1) -> np.ndarray:
    try:
        audio, _ = read_audio(path, sr)
    except ClipError as e:
        why = str(e)
        if why == "file not found":
            raise AudioError(f"audio file not found: {path}") from None
        if why == "no samples":
            raise AudioError(f"{path} holds no samples; pass a clip with sound in it") from None
        raise AudioError(f"{path} is not an audio file soundfile can read; pass a WAV, FLAC or OGG file") from None
    if not np.isfinite(audio).all():
        raise AudioError(f"{path} holds NaN or infinite samples; pass a clean clip")
    if len(audio) < min_samples:
        raise AudioError(
            f"{path} is too short: {len(audio)} samples at {sr} Hz; the minimum is {min_samples} samples ({min_samples / sr * 1000:.1f} ms)"
        )
    return np.ascontiguousarray(audio, dtype=np.float32)
