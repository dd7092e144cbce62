"""Speech for verification: fixed sentences synthesized by Debian's espeak-ng, male and female voices,
English and Portuguese, 16 kHz, cached as WAV.

espeak-ng is deterministic for a given version, text, voice, speed and pitch; the cache key is a hash
of its version line and every parameter below, so a different espeak-ng writes a new cache folder.
Without espeak-ng, `speech_clips()` returns [] and callers fall back to the synthetic suite.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import numpy as np

SR = 16000
ESPEAK = "espeak-ng"
# bump when the processing below changes (trim, resampling, file format)
FORMAT = 1
TRIM_THRESHOLD = 1e-3  # |x| below this at either end is silence
TRIM_MARGIN_S = 0.05   # silence kept before the first and after the last sound


@dataclass(frozen=True)
class Voice:
    """One espeak-ng voice: language voice + variant, with fixed speed (-s, words/min) and pitch (-p, 0-99)."""

    language: str  # "en" or "pt"
    voice: str     # espeak-ng voice, e.g. "en-us+m3"
    gender: str    # "male" or "female"
    speed: int = 160
    pitch: int = 50


@dataclass(frozen=True)
class SpeechClip:
    name: str
    audio: np.ndarray = field(repr=False, compare=False)  # float32, 1-D, at the requested rate
    language: str
    voice: str
    gender: str
    text: str
    sr: int = SR

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sr


# The verification set: held out from anything used to make test checkpoints (scripts/ uses other voices
# and sentences). Eight speakers, four male and four female, in English (American, British) and
# Portuguese (Brazil, Portugal). Variants must follow a language voice that applies them ("en+f4"):
# espeak-ng ignores them after "en-gb", silently falling back to its male voice.
CLIPS: tuple[tuple[Voice, str], ...] = (
    (Voice("en", "en-us+m3", "male", 160, 45), "The quick brown fox jumps over the lazy dog."),
    (Voice("en", "en-us+f2", "female", 165, 55), "Please call Stella and ask her to bring these things."),
    (Voice("en", "en+m7", "male", 150, 40), "Every morning we walk along the river to the old bridge."),
    (Voice("en", "en+f4", "female", 155, 50), "She sells sea shells by the sea shore."),
    (Voice("pt", "pt-br+m1", "male", 155, 50), "O rato roeu a roupa do rei de Roma."),
    (Voice("pt", "pt-br+f5", "female", 160, 55), "Bom dia, como você está hoje?"),
    (Voice("pt", "pt+m5", "male", 150, 45), "A casa amarela fica perto da praia."),
    (Voice("pt", "pt+f1", "female", 155, 60), "Eu gosto de ler livros à noite."),
)


def speech_available() -> bool:
    """True when espeak-ng can be run."""
    return shutil.which(ESPEAK) is not None


def espeak_version() -> str:
    """espeak-ng's version line, without the data path (which varies by install location)."""
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return out.split("Data at:")[0].strip()


def synthesize(text: str, voice: Voice, sr: int = SR) -> np.ndarray:
    """One sentence with espeak-ng, resampled to `sr` with torchaudio, leading/trailing silence trimmed."""
    import soundfile as sf
    import torch
    import torchaudio

    with tempfile.TemporaryDirectory(prefix="voxport-espeak-") as tmp:
        path = os.path.join(tmp, "out.wav")
        cmd = [ESPEAK, "-b", "1", "-v", voice.voice, "-s", str(voice.speed), "-p", str(voice.pitch), "-w", path, text]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not os.path.isfile(path):
            raise RuntimeError(f"espeak-ng failed for voice {voice.voice}: {res.stderr.strip() or res.returncode}")
        audio, native = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if native != sr:
        audio = torchaudio.functional.resample(torch.from_numpy(audio), native, sr).numpy()
    loud = np.flatnonzero(np.abs(audio) > TRIM_THRESHOLD)
    if len(loud):
        margin = int(TRIM_MARGIN_S * sr)
        audio = audio[max(0, loud[0] - margin): loud[-1] + 1 + margin]
    return np.ascontiguousarray(audio, dtype=np.float32)


def clip_name(voice: Voice) -> str:
    return f"{voice.voice} {voice.gender}"


def _params(sr: int) -> dict:
    return {
        "format": FORMAT,
        "espeak": espeak_version(),
        "sr": sr,
        "trim": [TRIM_THRESHOLD, TRIM_MARGIN_S],
        "clips": [[v.language, v.voice, v.gender, v.speed, v.pitch, text] for v, text in CLIPS],
    }


def cache_dir(sr: int = SR) -> str:
    """$VOXPORT_CACHE/speech/<hash>, $VOXPORT_CACHE defaulting to ~/.cache/voxport."""
    base = os.environ.get("VOXPORT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "voxport")
    key = hashlib.sha256(json.dumps(_params(sr), sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(base, "speech", key)


def _write_cache(folder: str, clips: list[SpeechClip], sr: int) -> None:
    """All clips plus a manifest into a temporary folder, renamed into place; a failure leaves no cache."""
    import soundfile as sf

    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o755)
        for i, c in enumerate(clips):
            sf.write(os.path.join(tmp, f"{i:02d}.wav"), c.audio, sr, subtype="FLOAT")  # float32: bit-exact
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump({"params": _params(sr), "files": [f"{i:02d}.wav" for i in range(len(clips))]}, f, indent=1)
        try:
            os.rename(tmp, folder)
        except OSError:  # written meanwhile by another process: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_cache(folder: str, sr: int) -> list[np.ndarray] | None:
    import soundfile as sf

    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            files = json.load(f)["files"]
        if len(files) != len(CLIPS):
            return None
        out = []
        for name in files:
            audio, rate = sf.read(os.path.join(folder, name), dtype="float32")
            if rate != sr or audio.ndim != 1:
                return None
            out.append(audio)
        return out
    except (OSError, ValueError, KeyError, RuntimeError):
        return None


def speech_clips(sr: int = SR) -> list[SpeechClip]:
    """The verification clips (see CLIPS), synthesized once and cached; [] when espeak-ng is not installed."""
    if not speech_available():
        return []
    folder = cache_dir(sr)
    audios = _read_cache(folder, sr)
    fresh = audios is None
    if fresh:
        audios = [synthesize(text, v, sr) for v, text in CLIPS]
    clips = [
        SpeechClip(name=clip_name(v), audio=a, language=v.language, voice=v.voice, gender=v.gender, text=text, sr=sr)
        for (v, text), a in zip(CLIPS, audios)
    ]
    if fresh:
        try:
            _write_cache(folder, clips, sr)
        except OSError:
            pass  # a read-only home still gets the clips, just not cached
    return clips
