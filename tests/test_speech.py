
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


def test_clips_cover_both_genders_in_both_languages():
    clips = speech.speech_clips()
    assert len(clips) == len(speech.CLIPS) >= 6
    assert {(c.language, c.gender) for c in clips} == {("en", "male"), ("en", "female"), ("pt", "male"), ("pt", "female")}
    assert len({c.voice for c in clips}) == len(clips)
    for c in clips:
        assert c.audio.dtype == np.float32 and c.audio.ndim == 1 and c.sr == 16000
        assert np.isfinite(c.audio).all()
        assert 1.5 <= c.seconds <= 4.0, (c.name, c.seconds)
        assert 0.2 < np.abs(c.audio).max() <= 1.0, c.name


def test_female_voices_are_higher_pitched():
    # a voice name espeak-ng does not apply falls back to its default male voice: this catches it
    f0 = {c.name: median_f0(c.audio) for c in speech.speech_clips()}
    male = [v for k, v in f0.items() if k.endswith(" male")]
    female = [v for k, v in f0.items() if k.endswith(" female")]
    assert max(male) < 140 < 150 < min(female), f0


def test_the_suite_needs_no_espeak(monkeypatch, tmp_path):
    """The clips come from the package, the same bits whether espeak-ng is on PATH or not."""
    with_espeak = speech.speech_clips()
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: no espeak-ng, no sox
    assert not speech.speech_available()
    without = speech.speech_clips()
    assert [c.name for c in without] == [c.name for c in with_espeak]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(with_espeak, without))


def test_a_changed_clip_is_refused(tmp_path):
    import shutil

    import soundfile as sf

    folder = tmp_path / "speech"
    shutil.copytree(speech.SUITE_DIR, folder)
    assert speech.suite_id(str(folder)) == speech.suite_id()
    audio, sr = sf.read(folder / "03.flac", dtype="int16")
    audio[100] += 1  # one sample, one step
    sf.write(folder / "03.flac", audio, sr, format="FLAC", subtype="PCM_16")
    with pytest.raises(RuntimeError, match="03.flac"):
        speech.speech_clips(folder=str(folder))


def test_other_rates_use_the_run_resampler():
    from voxport.infer.audio import resample

    a = speech.speech_clips()[0]
    b = speech.speech_clips(8000)[0]
    assert b.sr == 8000 and np.array_equal(b.audio, resample(a.audio, 16000, 8000))


@pytest.mark.skipif(not speech.speech_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_the_script_remakes_the_shipped_clips(tmp_path):
    """espeak-ng is deterministic for one version: the same version remakes the shipped bits."""
    shipped = speech.read_manifest()
    if speech.espeak_version() != shipped["espeak"]:
        pytest.skip(f"espeak-ng here is '{speech.espeak_version()}', the clips were made with '{shipped['espeak']}'")
    speech.write_suite(str(tmp_path), [speech.synthesize(t, v) for v, t in speech.CLIPS], speech.espeak_version())
    assert speech.read_manifest(str(tmp_path))["clips"] == shipped["clips"]
