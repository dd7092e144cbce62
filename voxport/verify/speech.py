"""Speech for verification: fixed sentences, male and female voices, English and Portuguese, shipped with
voxport as 16-bit FLAC files (voxport/verify/speech/), so that every machine judges a folder on the same
samples and no system binary is needed to reach a verdict.

The clips were synthesized once by Debian's espeak-ng (`scripts/make_speech_suite.py`, which keeps the
voices, sentences and the espeak-ng version in the folder's manifest.json); `synthesize()` stays here for
that script and for the scripts that make test checkpoints from other voices and sentences.
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
SUITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "speech")
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
    """True when espeak-ng can be run (for making clips; verification reads the shipped ones)."""
    return shutil.which(ESPEAK) is not None


def espeak_version() -> str:
    """espeak-ng's version line, without the data path (which varies by install location)."""
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return out.split("Data at:")[0].strip()


def synthesize(text: str, voice: Voice, sr: int = SR) -> np.ndarray:
    """One sentence with espeak-ng, resampled to `sr` (the resampler `voxport run` uses), leading/trailing silence trimmed."""
    import soundfile as sf

    from ..infer.audio import resample

    with tempfile.TemporaryDirectory(prefix="voxport-espeak-") as tmp:
        path = os.path.join(tmp, "out.wav")
        cmd = [ESPEAK, "-b", "1", "-v", voice.voice, "-s", str(voice.speed), "-p", str(voice.pitch), "-w", path, text]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not os.path.isfile(path):
            raise RuntimeError(f"espeak-ng failed for voice {voice.voice}: {res.stderr.strip() or res.returncode}")
        audio, native = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if native != sr:
        audio = resample(audio, native, sr)
    loud = np.flatnonzero(np.abs(audio) > TRIM_THRESHOLD)
    if len(loud):
        margin = int(TRIM_MARGIN_S * sr)
        audio = audio[max(0, loud[0] - margin): loud[-1] + 1 + margin]
    return np.ascontiguousarray(audio, dtype=np.float32)


def clip_name(voice: Voice) -> str:
    return f"{voice.voice} {voice.gender}"


def clip_file(i: int) -> str:
    return f"{i:02d}.flac"


def suite_params() -> list:
    """What each shipped clip was made from, in CLIPS order (kept in the manifest)."""
    return [[v.language, v.voice, v.gender, v.speed, v.pitch, text] for v, text in CLIPS]


def samples_sha256(audio: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def read_manifest(folder: str = SUITE_DIR) -> dict:
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def suite_id(folder: str = SUITE_DIR) -> str:
    """A short hash of the shipped clips' samples: a folder's card and voxport.json name the suite it was judged on."""
    man = read_manifest(folder)
    return hashlib.sha256("".join(c["sha256"] for c in man["clips"]).encode()).hexdigest()[:12]


def write_suite(folder: str, audios: list, espeak: str) -> None:
    """The clips as 16-bit FLAC plus manifest.json (parameters, espeak-ng version, sha256 of the decoded samples)."""
    import soundfile as sf

    os.makedirs(folder, exist_ok=True)
    entries = []
    for i, ((v, text), audio) in enumerate(zip(CLIPS, audios)):
        path = os.path.join(folder, clip_file(i))
        pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767).astype(np.int16)
        sf.write(path, pcm, SR, format="FLAC", subtype="PCM_16")
        decoded, _ = sf.read(path, dtype="float32")
        entries.append({"file": clip_file(i), "language": v.language, "voice": v.voice, "gender": v.gender, "speed": v.speed,
                        "pitch": v.pitch, "text": text, "samples": int(len(decoded)), "sha256": samples_sha256(decoded)})
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump({"sample_rate": SR, "espeak": espeak, "trim": [TRIM_THRESHOLD, TRIM_MARGIN_S], "clips": entries}, f,
                  indent=1, ensure_ascii=False)
        f.write("\n")


def speech_clips(sr: int = SR, folder: str = SUITE_DIR) -> list[SpeechClip]:
    """The verification clips (see CLIPS) as shipped, checked against the manifest's sha256 and resampled to `sr`
    with the one resampler that `voxport run` uses."""
    import soundfile as sf

    from ..infer.audio import resample

    man = read_manifest(folder)
    if [[c["language"], c["voice"], c["gender"], c["speed"], c["pitch"], c["text"]] for c in man["clips"]] != suite_params():
        raise RuntimeError(f"{folder}/manifest.json does not list the clips of voxport.verify.speech.CLIPS; "
                           "run scripts/make_speech_suite.py")
    clips = []
    for (v, text), entry in zip(CLIPS, man["clips"]):
        audio, rate = sf.read(os.path.join(folder, entry["file"]), dtype="float32")
        if rate != man["sample_rate"] or audio.ndim != 1 or samples_sha256(audio) != entry["sha256"]:
            raise RuntimeError(f"{entry['file']} in {folder} is not the clip its manifest names; reinstall voxport")
        if sr != rate:
            audio = resample(audio, rate, sr)
        clips.append(SpeechClip(name=clip_name(v), audio=np.ascontiguousarray(audio, dtype=np.float32), language=v.language,
                                voice=v.voice, gender=v.gender, text=text, sr=sr))
    return clips


def long_speech(clips: list, repeats: int = 3) -> np.ndarray:
    """The clips end to end, `repeats` times (the shipped ones: 60.3 s of male and female English and Portuguese
    speech), what the deployed pipelines (long-form CTC, rolling windows) are checked on."""
    return np.concatenate([c.audio for c in clips] * repeats).astype(np.float32)
