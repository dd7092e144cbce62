"""Read any audio file soundfile knows as 16 kHz mono float32."""
from __future__ import annotations

import os

import numpy as np

from ..errors import AudioError


def load_audio(path: str, sr: int = 16000, min_samples: int = 1) -> np.ndarray:
    import soundfile as sf

    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception:
        raise AudioError(f"{path} is not an audio file soundfile can read; pass a WAV, FLAC or OGG file") from None
    if data.size == 0:
        raise AudioError(f"{path} holds no samples; pass a clip with sound in it")
    if not np.isfinite(data).all():
        raise AudioError(f"{path} holds NaN or infinite samples; pass a clean clip")
    audio = data.mean(axis=1)
    if rate != sr:
        import torch
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(audio), rate, sr).numpy()
    if len(audio) < min_samples:
        raise AudioError(
            f"{path} is too short: {len(audio)} samples at {sr} Hz; the minimum is {min_samples} samples ({min_samples / sr * 1000:.1f} ms)"
        )
    return np.ascontiguousarray(audio, dtype=np.float32)
