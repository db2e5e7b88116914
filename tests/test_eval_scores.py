"""The eval's scorers on given inputs: the judge's rubric parser, the prosody rule against the
model's own neutral voice, and the SER slot's strict loading."""

from __future__ import annotations

import json

import pytest
from eval_fixtures import build_ser_dir
from opens2s.evaluation.emotion import (
    PREFIX,
    SpeechEmotionRecognizer,
    expected_tone,
    neutral_baseline,
    prosody_score,
)
from opens2s.evaluation.judge import JudgementFormatError, parse_judgement

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "answer, expected",
    [
        ('{"empathy": 4, "relevance": 5, "reason": "warm"}', (4, 5)),
        ('Sure!\n```json\n{"empathy": "3", "relevance": 2.0, "reason": "ok"}\n```', (3, 2)),
        ('{"empathy": 1, "relevance": 1, "reason": "x"} and then {"empathy": 5}', (1, 1)),
    ],
)
def test_rubric_answers_parse(answer: str, expected: tuple[int, int]) -> None:
    got = parse_judgement(answer)
    assert (got["empathy"], got["relevance"]) == expected


@pytest.mark.parametrize(
    "answer, problem",
    [
        ("I think it was kind.", "no '{'"),
        ('{"empathy": 4, "relevance": ', "not JSON"),
        ('{"empathy": 7, "relevance": 3, "reason": ""}', "'empathy' must be an integer 1-5"),
        ('{"empathy": 4, "reason": ""}', "'relevance' must be an integer 1-5, got None"),
        ('{"empathy": true, "relevance": 3}', "'empathy'"),
        ("[1, 2]", "no '{'"),
    ],
)
def test_unusable_rubric_answers_say_why(answer: str, problem: str) -> None:
    with pytest.raises(JudgementFormatError, match=problem.replace("(", r"\(")):
        parse_judgement(answer)


def _row(emotion: str, f0_hz: float, range_st: float, rate: float, energy: float) -> dict:
    cues = {
        "seconds": 3.0,
        "active_seconds": 2.5,
        "voiced_fraction": 0.6,
        "f0_median_hz": f0_hz,
        "f0_range_st": range_st,
        "energy_db": energy,
        "syllable_rate": rate,
    }
    return {"emotion": emotion, "status": "scored", **{PREFIX + k: v for k, v in cues.items()}}


def test_prosody_rule_asks_joy_for_joy_softness_for_sadness_and_calm_for_anger() -> None:
    assert [expected_tone(e) for e in ("happy", "sad", "angry", "neutral")] == [
        "happy",
        "sad",
        "neutral",
        "neutral",
    ]
    neutral = [_row("neutral", 120.0, 4.0, 4.0, -20.0), _row("neutral", 122.0, 4.2, 4.1, -20.5)]
    lively = (150.0, 7.0, 5.0, -16.0)  # higher, wider, faster, louder than the model's neutral
    soft = (100.0, 2.0, 3.2, -25.0)
    rows = [
        *neutral,
        _row("happy", *lively),
        _row("sad", *lively),
        _row("sad", *soft),
        _row("angry", *lively),
        _row("angry", 121.0, 4.1, 4.05, -20.2),
    ]
    base, source = neutral_baseline(rows)
    assert source == "median of 2 replies to neutral users" and base.f0_median_hz == 121.0
    verdicts = [prosody_score(r, base) for r in rows[2:]]
    assert [v["prosody_match"] for v in verdicts] == [True, False, True, False, True]
    assert verdicts[0]["prosody_score"] == 1.0 and verdicts[1]["prosody_score"] == 0.0
    assert json.loads(verdicts[1]["prosody_cues"])["f0_level"] == "contradicts"
    assert "neutral target" in verdicts[3]["prosody_reason"]
    assert prosody_score({"status": "scored"}, base)["prosody_status"].startswith("no user")


def test_without_neutral_replies_the_baseline_is_every_reply() -> None:
    rows = [_row("sad", 100.0, 2.0, 3.0, -25.0), _row("happy", 140.0, 6.0, 5.0, -15.0)]
    base, source = neutral_baseline(rows)
    assert (
        source == "median of all 2 replies (none to a neutral user)" and base.f0_median_hz == 120.0
    )


def test_ser_loads_a_random_tiny_classifier_and_predicts_a_known_emotion(tmp_path) -> None:
    import numpy as np

    ser = SpeechEmotionRecognizer(build_ser_dir(tmp_path / "ser"))
    assert ser.labels == {0: "neutral", 1: "happy", 2: "sad", 3: "angry"}
    t = np.arange(16000) / 16000
    label, p = ser.predict((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000)
    assert label in ser.labels.values() and 0.0 < p <= 1.0


def test_ser_refuses_weights_that_do_not_match_and_labels_it_cannot_map(tmp_path) -> None:
    path = build_ser_dir(tmp_path / "ser")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "classifier_proj_size": 24}))
    with pytest.raises(ValueError, match=f"{path}: weights do not match"):
        SpeechEmotionRecognizer(path)
    other = build_ser_dir(tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    labels = {"0": "calmness?", "1": "b", "2": "c", "3": "d"}
    (other / "config.json").write_text(json.dumps({**config, "id2label": labels}))
    with pytest.raises(ValueError, match="none of its labels"):
        SpeechEmotionRecognizer(other)
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
        (other / "preprocessor_config.json").unlink()
        SpeechEmotionRecognizer(other)
