"""The emotion checks of the filters stage on real espeak-ng renders: the render stage's neutral
references, the prosody verifier keeping renders that carry their emotion and dropping a
mislabelled one with its reason, the speaker-similarity check, and the summary's per-emotion
agreement and drops per filter."""

from __future__ import annotations

import dataclasses

from opens2s.config.audio import AudioSection
from opens2s.config.data import FilterSettings, ScenarioSettings
from opens2s.data.filters import AudioFilter
from opens2s.data.render import TurnRenderer, reference_key
from opens2s.data.sample import Sample, Scenario, Turn
from opens2s.data.summary import paralinguistic_summary

AUDIO = AudioSection()
USER = "So, the letter from the school came this morning. Also, they want to meet us on Friday."
REPLY = "Thank you for telling me. What would help you most right now?"


def sample(i: int, emotion: str, speaker: str = "gb-f3") -> Sample:
    sc = Scenario(emotion, 1.0, "school", "parent", speaker, 1, lexically_neutral=True, pair=0)
    return Sample(f"d{i}", i, 0, sc, [Turn("user", USER), Turn("assistant", REPLY)])


def test_renders_carry_their_emotion_and_a_mislabelled_one_is_dropped_with_the_cue():
    samples = [sample(0, "happy"), sample(1, "sad"), sample(2, "neutral"), sample(3, "angry")]
    TurnRenderer(AUDIO, neutral_references=True)(samples)
    assert reference_key(0) in samples[0].waves and reference_key(0) not in samples[2].waves
    # sample 3 was rendered angry; relabel it sad: the verifier must hear the difference
    samples[3].scenario = dataclasses.replace(samples[3].scenario, emotion="sad")
    out = AudioFilter(FilterSettings(min_speaker_similarity=0.75), AUDIO)(samples)
    assert [s.ok for s in out] == [True, True, True, False]
    assert out[3].dropped_reason.startswith("prosody: turn 0 (user) sad against neutral")
    assert "higher F0" in out[3].dropped_reason
    happy, sad = out[0].checks, out[1].checks
    assert happy["prosody_agrees"] == sad["prosody_agrees"] == 1.0
    assert happy["prosody_f0_level"] > 0 > sad["prosody_f0_level"]
    assert 0.75 < happy["speaker_similarity_min"] <= 1.0
    assert "prosody_agrees" not in out[2].checks  # neutral: nothing to verify against
    assert all(k >= 0 for s in out for k in s.waves)  # references do not travel on

    # a render far from its speaker's neutral rendering is dropped by the speaker check
    strict = AudioFilter(FilterSettings(min_speaker_similarity=0.999), AUDIO)
    (far,) = strict(TurnRenderer(AUDIO, neutral_references=True)([sample(4, "happy")]))
    assert far.dropped_reason.startswith("speaker_similarity: turn 0 (user)")

    rows = [
        {"emotion": s.scenario.emotion, "lexically_neutral": True, "pair": 0, **s.checks}
        for s in out
        if s.ok
    ]
    quarantine = [
        {"stage": s.dropped_stage, "reason": s.dropped_reason, "emotion": s.scenario.emotion}
        for s in (*out, far)
        if not s.ok
    ]
    summary = paralinguistic_summary(rows, quarantine)
    assert summary["lexically_neutral_share"] == 1.0 and summary["minimal_pairs_complete"] == 1
    assert summary["prosody_agreement"]["sad"] == {"checked": 2, "agreed": 1, "agreement": 0.5}
    assert summary["prosody_agreement"]["happy"]["agreement"] == 1.0
    assert summary["drops_per_filter"] == {"prosody": 1, "speaker_similarity": 1}


def test_prosody_check_off_renders_no_references():
    (s,) = TurnRenderer(AUDIO, neutral_references=False)([sample(0, "happy")])
    assert set(s.waves) == {0, 1}
    (s,) = AudioFilter(FilterSettings(verify_prosody=False), AUDIO)([s])
    assert s.ok and "prosody_agrees" not in s.checks
    assert ScenarioSettings().neutral_share >= 0.3
