"""Streaming voice activity and end-of-turn detection.

:class:`EndOfTurnDetector` takes PCM frames of any size as they arrive, scores 32 ms chunks with
silero-vad (its TorchScript model ships inside the ``silero-vad`` wheel; loaded from the file, so
nothing downloads and the package's import-time ``torch.set_num_threads(1)`` does not touch the
process) or with a plain energy threshold, and emits ``speech_started`` once speech has lasted
``min_speech_ms`` and ``speech_stopped`` once ``silence_ms`` of silence follow speech.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soxr
import torch

from opens2s.audio.io import AudioError
from opens2s.config.audio import AudioSection

_DEFAULTS = AudioSection()
VAD_SR = 16000
CHUNK = 512  # samples per silero-vad step at 16 kHz (32 ms)


@dataclass(frozen=True)
class VADEvent:
    """A turn boundary: ``t`` is where in the stream speech started or stopped (seconds);
    ``detected_at`` is how much audio had been pushed when the detector decided (seconds)."""

    kind: Literal["speech_started", "speech_stopped"]
    t: float
    detected_at: float


def silero_model_path() -> Path:
    """The silero-vad TorchScript file inside the installed wheel."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise AudioError("silero-vad", "package not installed; pip install silero-vad")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise AudioError(str(path), "silero-vad model file missing from the wheel")
    return path


_MODEL_LOCK = threading.Lock()
_MODEL: torch.jit.ScriptModule | None = None


def _load_silero() -> torch.jit.ScriptModule:
    """One TorchScript module per process; each detector copies it to keep its own state."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            _MODEL = torch.jit.load(str(silero_model_path()), map_location="cpu").eval()
        return _MODEL


class EndOfTurnDetector:
    """Streaming end-of-turn detection over pushed PCM (float32 mono at ``sr``)."""

    def __init__(
        self,
        sr: int = VAD_SR,
        silence_ms: int | None = None,
        *,
        threshold: float | None = None,
        min_speech_ms: int | None = None,
        engine: Literal["silero", "energy"] | None = None,
        energy_dbfs: float = -40.0,
    ) -> None:
        if sr <= 0:
            raise AudioError("EndOfTurnDetector", f"sample rate must be positive, got {sr}")
        self.sr = sr
        self.silence_ms = silence_ms or _DEFAULTS.vad_silence_ms
        self.threshold = threshold or _DEFAULTS.vad_threshold
        self.min_speech_ms = min_speech_ms or _DEFAULTS.vad_min_speech_ms
        self.engine = engine or _DEFAULTS.vad_engine
        self.energy_dbfs = energy_dbfs
        if self.engine == "silero":
            import copy

            self._model = copy.deepcopy(_load_silero())
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new turn / session starts at t = 0."""
        self._buf = np.zeros(0, np.float32)
        self._resampler = (
            soxr.ResampleStream(self.sr, VAD_SR, 1, dtype="float32") if self.sr != VAD_SR else None
        )
        self._chunks_seen = 0
        self._in_speech = False
        self._speech_run = 0  # chunks of speech in a row
        self._silence_run = 0  # chunks of silence in a row
        if self.engine == "silero":
            self._model.reset_states()

    @property
    def in_speech(self) -> bool:
        """Whether the user is speaking now (a turn has started and not ended)."""
        return self._in_speech

    def _speech_prob(self, chunk: np.ndarray) -> float:
        if self.engine == "energy":
            rms = float(np.sqrt(np.mean(chunk * chunk)) + 1e-12)
            return 1.0 if 20 * np.log10(rms) > self.energy_dbfs else 0.0
        with torch.inference_mode():
            return float(self._model(torch.from_numpy(chunk)[None, :], VAD_SR))

    def push(self, pcm: np.ndarray) -> list[VADEvent]:
        """Feed PCM samples (any count); return the turn events they complete, oldest first."""
        arr = np.asarray(pcm, dtype=np.float32)
        if arr.ndim != 1:
            raise AudioError("VAD input", f"expected mono 1-D PCM, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise AudioError("VAD input", "PCM frame holds NaN/inf samples")
        if self._resampler is not None:
            arr = self._resampler.resample_chunk(arr)
        self._buf = np.concatenate([self._buf, arr])
        events: list[VADEvent] = []
        chunk_s = CHUNK / VAD_SR
        need_speech = max(1, int(np.ceil(self.min_speech_ms / 1000 / chunk_s)))
        need_silence = max(1, int(np.ceil(self.silence_ms / 1000 / chunk_s)))
        while self._buf.size >= CHUNK:
            chunk, self._buf = self._buf[:CHUNK], self._buf[CHUNK:]
            prob = self._speech_prob(chunk)
            self._chunks_seen += 1
            now = self._chunks_seen * chunk_s
            # hysteresis: once speaking, a chunk must fall well below threshold to count as silence
            speech = prob >= (self.threshold - 0.15 if self._in_speech else self.threshold)
            if speech:
                self._speech_run += 1
                self._silence_run = 0
            else:
                self._silence_run += 1
                self._speech_run = 0
            if not self._in_speech and self._speech_run >= need_speech:
                self._in_speech = True
                events.append(VADEvent("speech_started", now - self._speech_run * chunk_s, now))
            elif self._in_speech and self._silence_run >= need_silence:
                self._in_speech = False
                events.append(VADEvent("speech_stopped", now - self._silence_run * chunk_s, now))
        return events


def build_vad(cfg: AudioSection | None = None, sr: int | None = None) -> EndOfTurnDetector:
    """An end-of-turn detector with the config's engine, threshold and silence window."""
    cfg = cfg or _DEFAULTS
    return EndOfTurnDetector(
        sr or cfg.sample_rate,
        cfg.vad_silence_ms,
        threshold=cfg.vad_threshold,
        min_speech_ms=cfg.vad_min_speech_ms,
        engine=cfg.vad_engine,
    )
