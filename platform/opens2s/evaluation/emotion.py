"""Does the reply's voice suit the user's emotion? A prosody rule, and a slot for a speech emotion
recognizer (SER) loaded from a local path.

**The rule.** The tone an empathetic reply should take is the corpus's own
(``opens2s.data.render.assistant_tone``): mirror joy (happy), soften for sadness (sad, gently),
stay calm (neutral) against anger, fear or disgust. Whether a reply carries that tone is
``opens2s.audio.prosody.verify_emotion``: its F0 level, F0 range, syllable rate and energy are
compared with a neutral reference, cue by cue, against the directions Juslin & Laukka (2003,
Table 7) and Banse & Scherer (1996) give for the tone (no cue contradicts and at least two agree;
calm: nothing moved past twice its dead band). The neutral reference is the same model's voice:
the median cues of its replies to neutral users (of all its replies when the set has none), so a
model's own voice is never held against it. ``prosody_score`` is the share of the tone's cues that
agree (calm: the share that stayed within twice their dead band). docs/eval.md states the sources.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

PREFIX = "prosody_"
"""Row columns of the measured cues: ``prosody_`` + each ``ProsodyFeatures`` field."""


def expected_tone(user_emotion: str) -> str:
    """The emotion an empathetic reply to ``user_emotion`` speaks in (the corpus's rule)."""
    from opens2s.data.render import assistant_tone

    return assistant_tone(user_emotion)[0]


def _features(row: dict[str, Any]):
    from opens2s.audio.prosody import ProsodyFeatures

    values = {f.name: row.get(PREFIX + f.name) for f in fields(ProsodyFeatures)}
    if values["seconds"] is None:
        return None
    return ProsodyFeatures(**values)


def neutral_baseline(rows: list[dict[str, Any]]) -> tuple[Any, str]:
    """The model's neutral voice: median cues of its replies to neutral users (else of all its
    replies), as ``ProsodyFeatures``, and which replies it came from."""
    from opens2s.audio.prosody import ProsodyFeatures

    measured = [r for r in rows if _features(r) is not None]
    neutral = [r for r in measured if r.get("emotion") == "neutral"]
    pool = neutral or measured
    source = (
        f"median of {len(pool)} replies to neutral users"
        if neutral
        else f"median of all {len(pool)} replies (none to a neutral user)"
    )
    if not pool:
        return None, "none (no reply measured)"
    med = {}
    for f in fields(ProsodyFeatures):
        vals = [float(r[PREFIX + f.name]) for r in pool if r.get(PREFIX + f.name) is not None]
        med[f.name] = statistics.median(vals) if vals else None
    return ProsodyFeatures(**med), source


def prosody_score(row: dict[str, Any], baseline: Any) -> dict[str, Any]:
    """The rule's verdict for one scored reply (``prosody_status`` says why when there is none)."""
    from opens2s.audio.prosody import DEADBANDS, EXPECTED, verify_emotion

    emotion = row.get("emotion")
    features = _features(row)
    if not emotion:
        return {"prosody_status": "no user emotion in the eval set"}
    if features is None or baseline is None:
        return {"prosody_status": row.get("prosody_error") or "prosody not measured"}
    tone = expected_tone(emotion)
    v = verify_emotion(features, baseline, tone, same_text=False)
    pattern = EXPECTED[tone]
    if pattern:
        score = sum(v.cues[c] == "agrees" for c in pattern) / len(pattern)
    else:
        score = float(np.mean([abs(x) <= 2 * DEADBANDS[c] for c, x in v.changes.items()]))
    return {
        "prosody_status": "scored",
        "expected_tone": tone,
        "prosody_match": v.agrees,
        "prosody_score": round(score, 4),
        "prosody_best_match": v.best_match,
        "prosody_cues": json.dumps(v.cues),
        "prosody_changes": json.dumps(v.changes),
        "prosody_reason": v.reason,
    }


# ---- speech emotion recognizer slot --------------------------------------------------------------


class SpeechEmotionRecognizer:
    """The eval's SER: ``opens2s.audio.ser.EmotionRecognizer`` (a transformers
    audio-classification directory or a FunASR emotion2vec one, loaded strictly), with errors
    naming ``eval.ser_model_path`` and labels given as our emotions where they name one."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from opens2s.audio.ser import EmotionRecognizer, corpus_emotion

        self.recognizer = EmotionRecognizer(path, device, setting="eval.ser_model_path")
        self.labels = {
            i: corpus_emotion(name) or name for i, name in self.recognizer.id2label.items()
        }

    def predict(self, wave: np.ndarray, sr: int) -> tuple[str, float]:
        """The most likely emotion of a mono wave (its label when it names none) and its
        probability."""
        r = self.recognizer.recognize(wave, sr)
        return r.emotion or r.label, r.probability
