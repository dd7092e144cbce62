"""Audio for inference without PyTorch: soundfile to read, soxr to resample, channels averaged."""
from __future__ import annotations

import os

import numpy as np


class ClipError(Exception):
    """One file cannot be used (unreadable, empty, too short); the run goes on with the others."""


def read_audio(path: str, sr: int) -> tuple[np.ndarray, int]:
    """(mono float32 at `sr`, the file's own rate). Channels are averaged; any rate is resampled with soxr."""
    import soundfile as sf

    if not os.path.isfile(path):
        raise ClipError("file not found")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own LibsndfileError, RuntimeError, or TypeError on odd headers
        raise ClipError(f"not an audio file soundfile can read ({str(e).splitlines()[0][:160]})") from None
    if data.shape[0] == 0:
        raise ClipError("no samples")
    audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(audio, rate, sr), int(rate)


def resample(audio: np.ndarray, rate: int, sr: int) -> np.ndarray:
    if rate != sr:
        import soxr

        audio = soxr.resample(audio, rate, sr, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")


def expand_paths(paths) -> list:
    """Files as given; folders walked (sorted) for audio files by extension. Missing paths are kept (they error per file)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(AUDIO_EXTENSIONS)]
        else:
            out.append(p)
    return out
