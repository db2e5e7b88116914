"""Prosody measurement and a rule that checks whether a rendering carries its intended emotion.

``measure_prosody(wave, sr)`` gives the acoustic cues the emotion literature compares: F0 level
(median, Hz) and range (5th-95th percentile, semitones) from Praat's autocorrelation pitch tracker
(Boersma 1993, through ``parselmouth``), energy (mean power of the active frames, dBFS), tempo
(seconds, active seconds) and a syllable-nucleus rate (intensity peaks in voiced stretches, after
de Jong & Wempe 2009).

``verify_emotion(features, neutral, target)`` compares a rendering with the *same speaker's neutral
rendering* (of the same text when ``same_text``) and checks each cue against the direction the
literature gives for the target emotion (``EXPECTED``):

- **Juslin & Laukka (2003)**, "Communication of emotions in vocal expression and music
  performance: different channels, same code?", Psychological Bulletin 129(5), Table 7 (the
  cross-study summary of vocal cues): anger — fast rate, high intensity, high F0 level, high F0
  variability; happiness — fast rate, medium-high intensity, high F0 level, high F0 variability;
  sadness — slow rate, low intensity, low F0 level, low F0 variability; fear — fast rate, high F0
  level (intensity and F0 variability low except in panic fear, so both are left free here).
- **Banse & Scherer (1996)**, "Acoustic profiles in vocal emotion expression", JPSP 70(3): the
  same directions for hot anger, elation and sadness measured on actors (mean F0, F0 range,
  mean energy, duration).
- Surprise and disgust are not in those two summaries; their directions follow the rule systems
  the TTS profiles use (Cahn 1990: surprise higher and wider pitch; Murray & Arnott 1993,
  Table 1: disgust very much lower pitch, very much slower, lower intensity).

A cue *agrees* when it moved past its dead band (``DEADBANDS``) in the expected direction,
*contradicts* when it moved past it the other way, and is *flat* otherwise. A rendering agrees
with its target when no cue contradicts and at least two cues agree (all of them when the target
names fewer). Neutral agrees when no cue moved past twice its dead band. docs/corpus.md states the
rule and its sources.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

from opens2s.audio.io import AudioError, mono_wave

FRAME_SECONDS = 0.02
ACTIVE_DB_BELOW_PEAK = 35.0
"""A 20 ms frame is active (speech) when its level is within this many dB of the loudest frame."""
PITCH_FLOOR_HZ = 60.0
PITCH_CEILING_HZ = 500.0
MIN_VOICED_FRAMES = 5
NUCLEUS_DIP_DB = 2.0
"""An intensity peak counts as a new syllable nucleus after a dip of at least this much (de Jong
& Wempe 2009 use 2 dB)."""

CUES = ("f0_level", "f0_range", "rate", "energy")
# Units: f0_level semitones, f0_range semitones, rate natural-log ratio (+ = faster), energy dB.
DEADBANDS: dict[str, float] = {"f0_level": 0.5, "f0_range": 0.3, "rate": 0.03, "energy": 0.5}
# +1: the cue rises against neutral, -1: it falls; a cue left out is free (the sources disagree).
EXPECTED: dict[str, dict[str, int]] = {
    "happy": {"f0_level": 1, "f0_range": 1, "rate": 1, "energy": 1},
    "angry": {"f0_level": 1, "f0_range": 1, "rate": 1, "energy": 1},
    "sad": {"f0_level": -1, "f0_range": -1, "rate": -1, "energy": -1},
    "fearful": {"f0_level": 1, "rate": 1},
    "surprised": {"f0_level": 1, "f0_range": 1},
    "disgusted": {"f0_level": -1, "rate": -1, "energy": -1},
    "neutral": {},
}
_WORDS = {
    "f0_level": ("higher F0", "lower F0"),
    "f0_range": ("a wider F0 range", "a narrower F0 range"),
    "rate": ("faster", "slower"),
    "energy": ("louder", "softer"),
}
_UNITS = {"f0_level": "st", "f0_range": "st", "rate": "log-ratio", "energy": "dB"}


@dataclass(frozen=True)
class ProsodyFeatures:
    """Acoustic cues of one utterance (None where the utterance has too little voicing)."""

    seconds: float
    active_seconds: float
    voiced_fraction: float
    f0_median_hz: float | None
    f0_range_st: float | None
    energy_db: float
    syllable_rate: float

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready)."""
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """Whether a rendering's prosody carries ``target``, cue by cue, against a neutral reference."""

    target: str
    agrees: bool
    changes: dict[str, float]
    """Cue -> change against neutral (units: ``_UNITS``)."""
    cues: dict[str, str]
    """Cue -> agrees | contradicts | flat | free."""
    best_match: str
    """The emotion whose expected pattern fits the changes best (happy and angry look alike)."""
    reason: str | None
    """Why it does not agree (None when it does)."""


def _current_cpu() -> int | None:
    """The core the calling thread runs on now (Linux), or None."""
    try:
        with open("/proc/thread-self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


@contextmanager
def thread_budget() -> Iterator[None]:
    """Keep Praat's pitch tracker to one core when the process was given one thread.

    Praat splits a pitch track over every core of the machine (parselmouth has no setting for
    it), so one measurement used two cores here while Ray had given the stage worker one: the
    worker took more CPU than it reserved, and a one-worker corpus build looked faster than it
    was. When ``OMP_NUM_THREADS`` is 1 (Ray sets it for workers from their ``num_cpus``; the
    benches set it), the calling thread is pinned to the core it runs on for the call; Praat's
    threads inherit that, then the old affinity is restored. Otherwise nothing changes.
    """
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if os.environ.get("OMP_NUM_THREADS") != "1" or len(allowed) <= 1:
        yield
        return
    cpu = _current_cpu()
    os.sched_setaffinity(0, {cpu if cpu in allowed else min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def measure_prosody(wave: np.ndarray, sample_rate: int) -> ProsodyFeatures:
    """F0 level and range, energy, tempo and syllable rate of a mono wave (any rate)."""
    import parselmouth

    arr = mono_wave(wave, "prosody input", finite=True).astype(np.float64)
    if sample_rate <= 0:
        raise AudioError("prosody input", f"sample rate {sample_rate} must be positive")
    frame = max(1, int(round(sample_rate * FRAME_SECONDS)))
    n = len(arr) // frame
    if n < 3:
        raise AudioError("prosody input", f"{len(arr) / sample_rate:.3f} s is too short to measure")
    rms = np.sqrt(np.mean(arr[: n * frame].reshape(n, frame) ** 2, axis=1))
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    if level.max() < -90:
        raise AudioError("prosody input", "silent audio: no speech to measure")
    active = level > level.max() - ACTIVE_DB_BELOW_PEAK
    energy_db = float(10 * np.log10(np.mean(rms[active] ** 2)))

    with thread_budget():
        pitch = parselmouth.Sound(arr, float(sample_rate)).to_pitch(
            time_step=FRAME_SECONDS, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ
        )
    f0 = pitch.selected_array["frequency"]
    voiced = f0[f0 > 0]
    f0_median = f0_range = None
    if voiced.size >= MIN_VOICED_FRAMES:
        f0_median = float(np.median(voiced))
        st = 12 * np.log2(voiced / f0_median)
        f0_range = float(np.percentile(st, 95) - np.percentile(st, 5))
    voiced_fraction = float(voiced.size / max(1, f0.size))

    # Syllable nuclei: peaks of the frame level in voiced, active frames, each after a dip.
    times = (np.arange(n) + 0.5) * FRAME_SECONDS
    voiced_at = np.interp(times, pitch.xs(), (f0 > 0).astype(np.float64)) >= 0.5
    speechy = active & voiced_at
    nuclei, low, peak = 0, math.inf, -math.inf
    for lv, ok in zip(level, speechy, strict=True):
        if not ok:
            low, peak = min(low, lv), -math.inf
            continue
        if peak == -math.inf and lv - low >= NUCLEUS_DIP_DB:
            nuclei += 1
            peak = lv
        elif peak != -math.inf:
            peak = max(peak, lv)
            if peak - lv >= NUCLEUS_DIP_DB:
                low, peak = lv, -math.inf
        low = min(low, lv)
    active_seconds = float(active.sum() * FRAME_SECONDS)
    return ProsodyFeatures(
        seconds=round(len(arr) / sample_rate, 4),
        active_seconds=round(active_seconds, 4),
        voiced_fraction=round(voiced_fraction, 4),
        f0_median_hz=None if f0_median is None else round(f0_median, 3),
        f0_range_st=None if f0_range is None else round(f0_range, 4),
        energy_db=round(energy_db, 3),
        syllable_rate=round(nuclei / max(active_seconds, FRAME_SECONDS), 4),
    )


def prosody_changes(
    features: ProsodyFeatures, neutral: ProsodyFeatures, *, same_text: bool = True
) -> dict[str, float]:
    """Cue changes against the neutral reference (``_UNITS``); a cue without F0 is left out.

    With ``same_text`` the rate change is the tempo ratio of the two renderings (neutral seconds
    over seconds, pauses included, as "speech rate" is in Juslin & Laukka 2003); otherwise the
    ratio of syllable-nucleus rates.
    """
    out: dict[str, float] = {}
    if features.f0_median_hz and neutral.f0_median_hz:
        out["f0_level"] = 12 * math.log2(features.f0_median_hz / neutral.f0_median_hz)
    if features.f0_range_st is not None and neutral.f0_range_st is not None:
        out["f0_range"] = features.f0_range_st - neutral.f0_range_st
    if same_text:
        out["rate"] = math.log(neutral.seconds / features.seconds)
    elif features.syllable_rate > 0 and neutral.syllable_rate > 0:
        out["rate"] = math.log(features.syllable_rate / neutral.syllable_rate)
    out["energy"] = features.energy_db - neutral.energy_db
    return {k: round(v, 4) for k, v in out.items()}


def _status(change: float | None, expected: int | None, band: float) -> str:
    if expected is None or expected == 0:
        return "free"
    if change is None or abs(change) <= band:
        return "flat"
    return "agrees" if (change > 0) == (expected > 0) else "contradicts"


def _fit(pattern: dict[str, int], changes: dict[str, float]) -> float:
    """How well changes fit a pattern: mean of sign x clipped change in dead bands, in [-3, 3]."""
    if not pattern:  # neutral: the less anything moved, the better
        return -float(np.mean([min(3.0, abs(v) / DEADBANDS[k]) for k, v in changes.items()]))
    scores = [
        sign * float(np.clip(changes[k] / DEADBANDS[k], -3, 3))
        for k, sign in pattern.items()
        if k in changes
    ]
    return float(np.mean(scores)) if scores else -math.inf


def verify_emotion(
    features: ProsodyFeatures,
    neutral: ProsodyFeatures,
    target: str,
    *,
    same_text: bool = True,
) -> Verdict:
    """Does ``features`` carry ``target`` against the same speaker's ``neutral`` rendering?

    The rule (module docstring): no cue contradicts the literature's direction for the target and
    at least two agree (all, if the target names fewer); neutral: nothing moved past twice its
    dead band. Raises ValueError for an emotion the rule does not know.
    """
    if target not in EXPECTED:
        raise ValueError(f"emotion {target!r} has no prosody rule; known: {', '.join(EXPECTED)}")
    changes = prosody_changes(features, neutral, same_text=same_text)
    pattern = EXPECTED[target]
    cues = {c: _status(changes.get(c), pattern.get(c), DEADBANDS[c]) for c in CUES}
    best = max(EXPECTED, key=lambda e: _fit(EXPECTED[e], changes))
    reason = None
    if not pattern:
        moved = [c for c, v in changes.items() if abs(v) > 2 * DEADBANDS[c]]
        if moved:
            reason = "neutral target but " + ", ".join(_describe(c, changes[c]) for c in moved)
    else:
        wrong = [c for c, s in cues.items() if s == "contradicts"]
        agreeing = sum(1 for s in cues.values() if s == "agrees")
        needed = min(2, len(pattern))
        if wrong:
            reason = ", ".join(
                f"{_describe(c, changes[c])} (expected {_WORDS[c][0 if pattern[c] > 0 else 1]})"
                for c in wrong
            )
        elif agreeing < needed:
            flat = [c for c, s in cues.items() if s == "flat"]
            reason = f"only {agreeing} of {len(pattern)} cues moved as expected (flat: {flat})"
    return Verdict(
        target=target,
        agrees=reason is None,
        changes=changes,
        cues=cues,
        best_match=best,
        reason=None if reason is None else f"{target} against neutral: {reason}",
    )


def _describe(cue: str, change: float) -> str:
    word = _WORDS[cue][0 if change > 0 else 1]
    return f"{word} ({change:+.2f} {_UNITS[cue]})"
