"""Stage 6, filters: audio checks on every rendered turn; a failing sample is quarantined with the
check's name and what was measured. Measurements of passing samples go to the manifest.

Checks: duration bounds, NaN/clipping (``opens2s.audio.io.validate_audio``), silence ratio (share
of 20 ms frames below ``silence_db``), and optionally the ASR word error rate between the script
and what a recogniser hears. On user turns that carry an emotion, against the speaker's neutral
rendering of the same words (made by the render stage): ``prosody`` (the rule of
``opens2s.audio.prosody``: F0 level and range, tempo, energy move as the literature says the
emotion moves them) and ``speaker_similarity`` (resemblyzer cosine, ``min_speaker_similarity``);
and ``ser`` (a speech-emotion-recognition model from ``ser_model_path`` must hear the target).
Drop reasons start with the check's name, so summary.json counts drops per filter.
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
        self.speaker_encoder = None
        if settings.verify_prosody and settings.min_speaker_similarity is not None:
            from opens2s.audio.speaker import SpeakerEncoder

            self.speaker_encoder = SpeakerEncoder(audio.speaker_encoder)
        self.recognizer = None
        if settings.ser_model_path is not None:
            from opens2s.audio.ser import EmotionRecognizer

            self.recognizer = EmotionRecognizer(settings.ser_model_path)

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
        return self.emotion_problem(s)

    def emotion_problem(self, s: Sample) -> str | None:
        """Prosody, speaker and SER checks of the user turns (recording what they measured)."""
        from opens2s.audio.prosody import measure_prosody, verify_emotion
        from opens2s.audio.speaker import cosine_similarity
        from opens2s.data.render import reference_key

        emotion, sr = s.scenario.emotion, s.sample_rate
        for i, turn in enumerate(s.turns):
            if turn.role != "user":
                continue
            wave, reference = s.waves[i], s.waves.get(reference_key(i))
            if reference is not None:
                verdict = verify_emotion(
                    measure_prosody(wave, sr), measure_prosody(reference, sr), emotion
                )
                s.checks["prosody_agrees"] = min(
                    s.checks.get("prosody_agrees", 1.0), float(verdict.agrees)
                )
                if i == 0:
                    for cue, change in verdict.changes.items():
                        s.checks[f"prosody_{cue}"] = change
                if not verdict.agrees:
                    return f"prosody: turn {i} (user) {verdict.reason}"
                if self.speaker_encoder is not None:
                    sim = cosine_similarity(
                        self.speaker_encoder.embed(wave, sr),
                        self.speaker_encoder.embed(reference, sr),
                    )
                    low = min(s.checks.get("speaker_similarity_min", 1.0), sim)
                    s.checks["speaker_similarity_min"] = round(low, 4)
                    limit = self.settings.min_speaker_similarity
                    if limit is not None and sim < limit:
                        return (
                            f"speaker_similarity: turn {i} (user) is {sim:.3f} from "
                            f"{s.scenario.speaker}'s neutral rendering (at least {limit} needed)"
                        )
            if self.recognizer is not None:
                heard = self.recognizer.recognize(wave, sr)
                if heard.emotion is not None:
                    agrees = float(heard.emotion == emotion)
                    s.checks["ser_agrees"] = min(s.checks.get("ser_agrees", 1.0), agrees)
                    if not agrees:
                        return (
                            f"ser: turn {i} (user) sounds {heard.emotion} ({heard.label!r}, "
                            f"p={heard.probability:.2f}), its target is {emotion}"
                        )
        return None

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        """Check every live sample; quarantine those that fail."""
        for s in samples:
            if not s.ok:
                continue
            problem = self.problem_with(s)
            # The neutral references served their purpose: only the turns travel on.
            s.waves = {k: v for k, v in s.waves.items() if k >= 0}
            if problem:
                s.drop(STAGE, problem)
        return samples
