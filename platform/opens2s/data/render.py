"""Stage 4, rendering: speak every turn of a script.

User turns get the scenario's speaker, emotion and intensity; assistant turns the assistant voice
(``audio.assistant_speaker``) in a tone matched to the user's emotion (``ASSISTANT_TONE``). Waves
are resampled to ``audio.sample_rate`` and travel with the sample; the output stage writes them
once, after the filters. Text the TTS rejects quarantines the sample with the TTS's reason.

With ``neutral_references`` (``data.filters.verify_prosody``), each emotional user turn is also
rendered neutral by the same speaker; that reference travels as wave ``reference_key(i)`` for the
filters stage (prosody and speaker checks), which removes it.
"""

from __future__ import annotations

import numpy as np

from opens2s.config.audio import AudioSection
from opens2s.data.sample import Sample

STAGE = "render"

# An empathetic voice mirrors joy, softens for sadness and stays calm against anger or fear.
ASSISTANT_TONE: dict[str, tuple[str, float]] = {
    "happy": ("happy", 0.6),
    "surprised": ("happy", 0.4),
    "sad": ("sad", 0.3),
}
_CALM = ("neutral", 1.0)


def reference_key(turn: int) -> int:
    """The waves key of turn ``turn``'s neutral reference rendering (negative: not a turn)."""
    return -(turn + 1)


def assistant_tone(user_emotion: str) -> tuple[str, float]:
    """(emotion, intensity) of the assistant's voice answering a user with ``user_emotion``."""
    return ASSISTANT_TONE.get(user_emotion, _CALM)


class TurnRenderer:
    """Speaks the turns of samples with the TTS the audio section names (one engine per worker)."""

    def __init__(self, audio: AudioSection, neutral_references: bool = False) -> None:
        from opens2s.audio.tts import build_tts

        self.audio = audio
        self.tts = build_tts(audio)
        self.neutral_references = neutral_references

    def render_turn(self, text: str, speaker: str, emotion: str, intensity: float) -> np.ndarray:
        """One turn as float32 at ``audio.sample_rate``."""
        from opens2s.audio.io import resample

        wave, sr = self.tts.synthesize(text, speaker, emotion, intensity)
        wave = resample(np.asarray(wave, dtype=np.float32), sr, self.audio.sample_rate)
        # The resampler rings a little past full scale around peaks of loud voices; cut that
        # overshoot here (as a 16-bit file would), so the clipping filter measures real clipping.
        return np.clip(wave, -1.0, 1.0)

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        """Render every live sample; a TTS failure quarantines that sample only."""
        for s in samples:
            if not s.ok:
                continue
            sc = s.scenario
            try:
                for i, turn in enumerate(s.turns):
                    if turn.role == "user":
                        voice = (sc.speaker, sc.emotion, sc.intensity)
                    else:
                        voice = (self.audio.assistant_speaker, *assistant_tone(sc.emotion))
                    wave = self.render_turn(turn.text, *voice)
                    s.waves[i] = wave
                    if self.neutral_references and turn.role == "user" and sc.emotion != "neutral":
                        s.waves[reference_key(i)] = self.render_turn(
                            turn.text, sc.speaker, "neutral", 1.0
                        )
                    turn.seconds = round(len(wave) / self.audio.sample_rate, 3)
                s.sample_rate = self.audio.sample_rate
            except Exception as e:  # TTSError and anything else the engine raises
                s.drop(STAGE, f"TTS rejected turn {i} ({turn.role}): {e}")
        return samples
