import os

import numpy as np
import pytest

from voxport.verify import speech

needs_espeak = pytest.mark.skipif(not speech.speech_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)")


def median_f0(audio, sr=16000):
    """Median pitch of the voiced 40 ms frames (autocorrelation, first peak within 85% of the best)."""
    n = int(0.04 * sr)
    lo, hi = sr // 400, sr // 60
    found = []
    for i in range(0, len(audio) - n, n // 2):
        w = audio[i:i + n].astype(np.float64)
        if np.sqrt(np.mean(w ** 2)) < 0.05:
            continue
        w = w - w.mean()
        ac = np.correlate(w, w, "full")[n - 1:]
        seg = ac[lo:hi]
        if seg.max() < 0.3 * ac[0]:
            continue
        for j in range(1, len(seg) - 1):
            if seg[j] >= 0.85 * seg.max() and seg[j] >= seg[j - 1] and seg[j] >= seg[j + 1]:
                found.append(sr / (lo + j))
                break
    return float(np.median(found))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXPORT_CACHE", str(tmp_path))
    return tmp_path


@needs_espeak
def test_clips_cover_both_genders_in_both_languages(cache):
    clips = speech.speech_clips()
    assert len(clips) == len(speech.CLIPS) >= 6
    assert {(c.language, c.gender) for c in clips} == {("en", "male"), ("en", "female"), ("pt", "male"), ("pt", "female")}
    assert len({c.voice for c in clips}) == len(clips)
    for c in clips:
        assert c.audio.dtype == np.float32 and c.audio.ndim == 1 and c.sr == 16000
        assert np.isfinite(c.audio).all()
        assert 1.5 <= c.seconds <= 4.0, (c.name, c.seconds)
        assert 0.2 < np.abs(c.audio).max() <= 1.0, c.name


@needs_espeak
def test_female_voices_are_higher_pitched(cache):
    # a voice name espeak-ng does not apply falls back to its default male voice: this catches it
    f0 = {c.name: median_f0(c.audio) for c in speech.speech_clips()}
    male = [v for k, v in f0.items() if k.endswith(" male")]
    female = [v for k, v in f0.items() if k.endswith(" female")]
    assert max(male) < 140 < 150 < min(female), f0


@needs_espeak
def test_bit_identical_and_cached(cache):
    first = speech.speech_clips()
    folder = speech.cache_dir()
    assert folder.startswith(str(cache)) and os.path.isfile(os.path.join(folder, "manifest.json"))
    assert len([f for f in os.listdir(folder) if f.endswith(".wav")]) == len(first)
    second = speech.speech_clips()  # from the cache
    for a, b in zip(first, second):
        assert a == b and np.array_equal(a.audio, b.audio)
    # espeak-ng itself is deterministic: synthesizing again gives the cached bits
    voice, text = speech.CLIPS[-1]
    again = speech.synthesize(text, voice)
    assert np.array_equal(again, second[-1].audio)


@needs_espeak
def test_broken_cache_is_rebuilt(cache):
    first = speech.speech_clips()
    with open(os.path.join(speech.cache_dir(), "manifest.json"), "w") as f:
        f.write("{not json")
    rebuilt = speech.speech_clips()
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(first, rebuilt))


def test_no_espeak_gives_no_clips(cache, monkeypatch):
    monkeypatch.setattr(speech, "ESPEAK", "espeak-ng-not-installed")
    assert not speech.speech_available()
    assert speech.speech_clips() == []
