"""Stage 6, filters: audio checks on every rendered turn; a failing sample is quarantined with the
check's name and what was measured. Measurements of passing samples go to the manifest.

Checks: duration bounds, NaN/clipping (``opens2s.audio.io.validate_audio``), silence ratio (share
of 20 ms frames below ``silence_db``), and optionally the ASR word error rate between the script
and what a recogniser hears.
"""

from __future__ import annotations

import numpy as np

from opens2s.config.audio import AudioSection
from opens2s.config.data import FilterSettings
from opens2s.data.sample import Sample

STAGE = "filters"
_FRAME_SECONDS = 0.02


def silence_ratio(wave: np.ndarray, sr: int, silence_db: float) -> float:
    """Share of 20 ms frames whose RMS level is below ``silence_db`` dBFS."""
    frame = max(1, int(sr * _FRAME_SECONDS))
    n = len(wave) // frame
    if n == 0:
        return 1.0
    frames = np.asarray(wave[: n * frame], dtype=np.float64).reshape(n, frame)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    level_db = 20 * np.log10(np.maximum(rms, 1e-10))
    return float(np.mean(level_db < silence_db))


def clipped_fraction(wave: np.ndarray) -> float:
    """Share of samples at full scale."""
    return float(np.mean(np.abs(wave) >= 0.999)) if len(wave) else 0.0


class AudioFilter:
    """Runs the checks; holds an ASR model when ``settings.max_wer`` is set (one per worker)."""

    def __init__(self, settings: FilterSettings, audio: AudioSection) -> None:
        self.settings = settings
        self.audio = audio
        self.transcriber = None
        if settings.max_wer is not None:
            from opens2s.audio.asr import Transcriber

            self.transcriber = Transcriber()

    def problem_with(self, s: Sample) -> str | None:
        """The first failed check of a rendered sample (recording measurements), or None."""
        from opens2s.audio.io import AudioError, validate_audio

        cfg = self.settings
        worst_silence = worst_clip = worst_wer = 0.0
        for i, turn in enumerate(s.turns):
            wave = s.waves.get(i)
            if wave is None:
                return f"turn {i} has no audio"
            try:
                validate_audio(
                    wave,
                    s.sample_rate,
                    name=f"turn {i} ({turn.role})",
                    min_seconds=cfg.min_turn_seconds,
                    max_seconds=cfg.max_turn_seconds,
                    max_clipped_fraction=self.audio.max_clipped_fraction,
                )
            except AudioError as e:
                kind = "duration" if "too " in e.problem else "clipping/invalid"
                return f"{kind}: {e}"
            ratio = silence_ratio(wave, s.sample_rate, cfg.silence_db)
            worst_silence = max(worst_silence, ratio)
            worst_clip = max(worst_clip, clipped_fraction(wave))
            if ratio > cfg.max_silence_ratio:
                return (
                    f"silence: turn {i} ({turn.role}) is {ratio:.0%} silent "
                    f"(at most {cfg.max_silence_ratio:.0%} allowed)"
                )
            if self.transcriber is not None and cfg.max_wer is not None:
                from opens2s.audio.asr import word_error_rate

                heard = self.transcriber.transcribe(wave, s.sample_rate)
                wer = word_error_rate(turn.text, heard)
                worst_wer = max(worst_wer, wer)
                if wer > cfg.max_wer:
                    return (
                        f"asr_wer: turn {i} ({turn.role}) WER {wer:.2f} > {cfg.max_wer:.2f}; "
                        f"heard {heard[:80]!r}"
                    )
        s.checks["silence_ratio_max"] = round(worst_silence, 4)
        s.checks["clipped_fraction_max"] = round(worst_clip, 6)
        if self.transcriber is not None:
            s.checks["wer_max"] = round(worst_wer, 4)
        return None

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        """Check every live sample; quarantine those that fail."""
        for s in samples:
            if not s.ok:
                continue
            problem = self.problem_with(s)
            if problem:
                s.drop(STAGE, problem)
        return samples
