"""One realtime session's user side: incoming PCM, end of turn by VAD, and the conversation.

Explicit state, no I/O: the WebSocket route feeds frames in and sends the events it gets back, so a
test can drive a session frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opens2s.serving.protocol import SessionOptions, event


@dataclass
class Turn:
    """A finished user turn: its audio and why it ended (``vad``, ``commit``, ``max_turn``)."""

    audio: np.ndarray
    reason: str


@dataclass
class RealtimeSession:
    """User audio since the last turn, the VAD's view of it, and the conversation so far.

    ``vad`` is an end-of-turn detector (``push(pcm) -> events`` with ``kind`` and ``t`` seconds
    since its last reset; ``reset()``).
    """

    vad: Any
    max_turn_seconds: float
    sample_rate: int = 16000
    preroll_seconds: float = 0.3
    options: SessionOptions = field(default_factory=SessionOptions)
    history: list[dict[str, Any]] = field(default_factory=list)
    _chunks: list[np.ndarray] = field(default_factory=list)
    _buf_start: int = 0  # absolute index (since the VAD's reset) of the first buffered sample
    _total: int = 0  # samples pushed since the VAD's reset
    _speech_start: int | None = None

    @property
    def in_speech(self) -> bool:
        """Whether the user is speaking now (VAD said started, not yet stopped)."""
        return self._speech_start is not None

    def push(self, pcm: np.ndarray) -> tuple[list[dict[str, Any]], Turn | None]:
        """Feed samples; return the events to send and the finished turn, if one ended."""
        out: list[dict[str, Any]] = []
        if pcm.size == 0:
            return out, None
        self._chunks.append(pcm)
        self._total += pcm.size
        for ev in self.vad.push(pcm):
            at = int(round(ev.t * self.sample_rate))
            if ev.kind == "speech_started" and self._speech_start is None:
                self._speech_start = min(at, self._total)
                out.append(event("input.speech_started", audio_start_ms=round(ev.t * 1000)))
            elif ev.kind == "speech_stopped" and self._speech_start is not None:
                turn = self._cut(min(max(at, self._speech_start + 1), self._total), "vad")
                out.append(self._stopped_event(turn))
                return out, turn
        if self._speech_start is not None:
            if self._total - self._speech_start > self.max_turn_seconds * self.sample_rate:
                turn = self._cut(self._total, "max_turn")
                out.append(self._stopped_event(turn))
                return out, turn
        else:
            self._trim()
        return out, None

    def commit(self) -> tuple[list[dict[str, Any]], Turn | None]:
        """End the turn now (client's ``input.commit``); None when no audio is buffered."""
        if self._total == self._buf_start:
            return [], None
        turn = self._cut(self._total, "commit")
        return [self._stopped_event(turn)], turn

    def add_exchange(self, user_text: str, assistant_text: str) -> None:
        """Remember a finished exchange so the next turn sees it.

        The decoder takes earlier turns as text (chat messages): the user's words as transcribed
        (empty when the server runs no ASR) and the assistant's answer.
        """
        self.history.append({"role": "user", "content": user_text})
        self.history.append({"role": "assistant", "content": assistant_text})

    def _stopped_event(self, turn: Turn) -> dict[str, Any]:
        return event(
            "input.speech_stopped",
            reason=turn.reason,
            turn_ms=round(1000 * turn.audio.size / self.sample_rate),
        )

    def _buffer(self) -> np.ndarray:
        if len(self._chunks) != 1:
            self._chunks = [
                np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            ]
        return self._chunks[0]

    def _cut(self, end: int, reason: str) -> Turn:
        buf = self._buffer()
        start = self._speech_start if self._speech_start is not None else self._buf_start
        start = max(self._buf_start, start - int(self.preroll_seconds * self.sample_rate))
        audio = buf[start - self._buf_start : end - self._buf_start].copy()
        self._chunks = [buf[end - self._buf_start :]]
        self._buf_start = end
        self._speech_start = None
        if reason != "vad":  # the detector still believes the user speaks
            self.vad.reset()
            self._chunks, self._buf_start, self._total = [], 0, 0
        return Turn(audio=audio, reason=reason)

    def _trim(self) -> None:
        keep = int(self.preroll_seconds * self.sample_rate)
        if self._total - self._buf_start > 4 * keep:
            buf = self._buffer()
            self._chunks = [buf[-keep:]]
            self._buf_start = self._total - keep
