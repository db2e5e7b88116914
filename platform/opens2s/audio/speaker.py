"""Speaker embeddings (the model's ``spk_emb``): resemblyzer's 256-d d-vector encoder.

The encoder's weights ship inside the ``resemblyzer`` wheel, so nothing is downloaded. Embeddings
are L2-normalised: the cosine similarity of two is their dot product.
"""

from __future__ import annotations

import threading

import numpy as np

from opens2s.audio.io import AudioError, mono_wave, resample
from opens2s.config.audio import AudioSection

_DEFAULTS = AudioSection()
ENCODER_SR = 16000
MIN_SECONDS = 0.3


class SpeakerEncoder:
    """Wave -> fixed-size speaker embedding (float32, unit length)."""

    def __init__(self, kind: str | None = None, device: str = "cpu") -> None:
        kind = kind or _DEFAULTS.speaker_encoder
        if kind != "resemblyzer":
            raise AudioError("audio.speaker_encoder", f"unknown speaker encoder {kind!r}")
        from resemblyzer import VoiceEncoder

        self._encoder = VoiceEncoder(device, verbose=False)
        self._lock = threading.Lock()
        self.dim = 256

    def embed(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """The speaker embedding of a mono wave (any rate), shape ``[dim]`` float32."""
        from resemblyzer import preprocess_wav

        arr = mono_wave(wave, "speaker input", finite=True)
        if float(np.abs(arr).max()) < 1e-4:
            raise AudioError("speaker input", "silent audio: no voice to embed")
        arr = resample(arr, sr, ENCODER_SR)
        cleaned = preprocess_wav(arr.astype(np.float64), source_sr=ENCODER_SR)
        if cleaned.size < MIN_SECONDS * ENCODER_SR:
            # too little voiced audio after silence trimming: embed the untrimmed wave instead
            cleaned = arr.astype(np.float64)
        if cleaned.size < MIN_SECONDS * ENCODER_SR:
            raise AudioError(
                "speaker input",
                f"{arr.size / ENCODER_SR:.2f} s of audio, need at least {MIN_SECONDS} s",
            )
        with self._lock:
            emb = self._encoder.embed_utterance(cleaned)
        emb = np.asarray(emb, dtype=np.float32)
        return emb / max(float(np.linalg.norm(emb)), 1e-8)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
