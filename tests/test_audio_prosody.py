"""The prosody verifier: its measurements on signals of known F0 and level, and its rule on real
espeak-ng renders (a rendering agrees with the emotion it was rendered with, and a swapped label
is caught with a reason naming the cue)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from opens2s.audio.io import AudioError, resample
from opens2s.audio.prosody import (
    EXPECTED,
    measure_prosody,
    prosody_changes,
    thread_budget,
    verify_emotion,
)
from opens2s.audio.tts import EMOTIONS, EspeakTTS

SR = 16000
TEXT = (
    "I got the results back from the office today. They said we should talk about it next "
    "week, and then we will know what comes after that."
)


def harmonic(f0: float, seconds: float = 1.0, amp: float = 0.2) -> np.ndarray:
    """A voiced-like tone: 8 harmonics of ``f0`` with a gentle 4 Hz amplitude wobble."""
    t = np.arange(int(SR * seconds)) / SR
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 9))
    wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (amp * wave / np.abs(wave).max()).astype(np.float32)


def test_f0_and_energy_of_known_signals():
    low, high = measure_prosody(harmonic(110), SR), measure_prosody(harmonic(220), SR)
    assert low.f0_median_hz == pytest.approx(110, rel=0.02)
    assert high.f0_median_hz == pytest.approx(220, rel=0.02)
    assert low.f0_range_st < 0.5  # a steady tone has no range
    loud = measure_prosody(harmonic(110, amp=0.4), SR)
    assert loud.energy_db - low.energy_db == pytest.approx(20 * np.log10(2), abs=0.1)
    changes = prosody_changes(high, low)
    assert changes["f0_level"] == pytest.approx(12.0, abs=0.3)  # one octave


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to narrow from")
def test_pitch_tracking_keeps_to_one_core_when_given_one_thread(monkeypatch):
    """Praat would split a pitch track over every core; a worker given one thread gets one."""
    before = os.sched_getaffinity(0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with thread_budget():
        inside = os.sched_getaffinity(0)
        features = measure_prosody(harmonic(150), SR)  # measuring inside is allowed (no nesting)
    assert len(inside) == 1 and inside <= before
    assert os.sched_getaffinity(0) == before
    assert abs(features.f0_median_hz - 150) < 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with thread_budget():
        assert os.sched_getaffinity(0) == before


def test_bad_input_is_refused_naming_it():
    with pytest.raises(AudioError, match="prosody input"):
        measure_prosody(np.zeros(SR, np.float32), SR)
    with pytest.raises(AudioError, match="too short"):
        measure_prosody(np.ones(10, np.float32) * 0.1, SR)
    with pytest.raises(ValueError, match="no prosody rule"):
        f = measure_prosody(harmonic(110), SR)
        verify_emotion(f, f, "bored")


@pytest.fixture(scope="module")
def renders() -> dict[tuple[str, str, float], object]:
    tts = EspeakTTS()
    out = {}
    for speaker in ("us-m1", "gb-f3", "scot-m7"):
        for emotion in EMOTIONS:
            for intensity in (0.5, 1.0):
                wave, sr = tts.synthesize(TEXT, speaker, emotion, intensity)
                out[speaker, emotion, intensity] = measure_prosody(resample(wave, sr, SR), SR)
    return out


def test_each_render_agrees_with_the_emotion_it_was_rendered_with(renders):
    for (speaker, emotion, intensity), features in renders.items():
        neutral = renders[speaker, "neutral", 1.0]
        verdict = verify_emotion(features, neutral, emotion)
        assert verdict.agrees, (speaker, emotion, intensity, verdict.reason)


def test_a_swapped_label_is_caught_with_the_cue_that_contradicts(renders):
    neutral = renders["us-m1", "neutral", 1.0]
    verdict = verify_emotion(renders["us-m1", "sad", 1.0], neutral, "happy")
    assert not verdict.agrees
    assert "lower F0" in verdict.reason and "expected higher F0" in verdict.reason
    assert verdict.cues["f0_level"] == "contradicts"
    assert verdict.best_match == "sad"
    # neutral claimed for an angry render: the cues that moved are named
    verdict = verify_emotion(
        renders["gb-f3", "angry", 1.0], renders["gb-f3", "neutral", 1.0], "neutral"
    )
    assert not verdict.agrees and "louder" in verdict.reason


def test_every_non_neutral_emotion_is_told_from_its_opposite(renders):
    """sad and disgusted renders never pass as happy/angry/surprised, nor the other way round."""
    low, high = ("sad", "disgusted"), ("happy", "angry", "surprised", "fearful")
    for (speaker, emotion, _), features in renders.items():
        neutral = renders[speaker, "neutral", 1.0]
        others = high if emotion in low else low if emotion in high else ()
        for other in others:
            assert EXPECTED[other]
            assert not verify_emotion(features, neutral, other).agrees, (speaker, emotion, other)
