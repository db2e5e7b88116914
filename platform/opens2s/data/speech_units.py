"""Stage 5, units: assistant audio -> discrete speech units with the corpus's unit tokenizer.

When the config names no tokenizer, a separate job step (:func:`fit_unit_tokenizer`, run by the
pipeline before the main pass) fits the k-means tokenizer on a sample of rendered assistant audio
and stores it under the corpus root, where every later run finds and reuses it; all shards are
therefore encoded with the same codebook.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from opens2s import storage
from opens2s.config.audio import AudioSection
from opens2s.data.sample import Sample

STAGE = "units"


def load_tokenizer_from(uri: str):
    """Load a unit tokenizer from a local path or s3:// URI (copied to a temp dir first)."""
    from opens2s.audio.units import load_unit_tokenizer

    if not storage.is_s3(uri):
        return load_unit_tokenizer(uri)
    local = storage.copy_to_local(uri, tempfile.mkdtemp(prefix="opens2s-units-"))
    return load_unit_tokenizer(local)


def fit_unit_tokenizer(waves: list[np.ndarray], audio: AudioSection, target_uri: str) -> str:
    """Fit the audio section's k-means tokenizer on ``waves`` (at audio.sample_rate) and store it
    at ``target_uri``; returns the URI."""
    from opens2s.audio.units import build_unit_tokenizer

    if not waves:
        raise ValueError("no rendered assistant audio to fit the unit tokenizer on")
    tokenizer = build_unit_tokenizer(audio)
    tokenizer.fit(
        [(w, audio.sample_rate) for w in waves],
        passes=audio.kmeans_passes,
        batch_units=audio.kmeans_batch_frames,
    )
    with tempfile.TemporaryDirectory(prefix="opens2s-units-") as tmp:
        path = Path(tmp) / "tokenizer.npz"
        tokenizer.save(path)
        storage.write_bytes(target_uri, path.read_bytes())
    return target_uri


class AssistantUnitEncoder:
    """Encodes assistant turns to unit ids (one tokenizer per worker)."""

    def __init__(self, tokenizer_uri: str) -> None:
        self.tokenizer = load_tokenizer_from(tokenizer_uri)

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        """Set ``turn.units`` of every assistant turn of live samples (one batched call when the
        tokenizer has ``encode_batch``, as the GLM-4-Voice tokenizer does)."""
        live = [s for s in samples if s.ok]
        turns = [(s, i) for s in live for i, t in enumerate(s.turns) if t.role == "assistant"]
        batch = getattr(self.tokenizer, "encode_batch", None)
        if batch is not None and turns:
            try:
                encoded = batch([(s.waves[i], s.sample_rate) for s, i in turns])
            except Exception:  # one bad wave must not drop the batch: fall back to one by one
                encoded = None
            if encoded is not None:
                for (s, i), units in zip(turns, encoded, strict=True):
                    self._set(s, i, units)
                return samples
        for s, i in turns:
            if not s.ok:
                continue
            try:
                units = self.tokenizer.encode(s.waves[i], s.sample_rate)
            except Exception as e:
                s.drop(STAGE, f"unit encoding failed: {type(e).__name__}: {e}")
                continue
            self._set(s, i, units)
        return samples

    @staticmethod
    def _set(s: Sample, i: int, units) -> None:
        if not s.ok:
            return
        units = np.asarray(units)
        if units.size == 0:
            s.drop(
                STAGE,
                f"unit encoding failed: turn {i} gave no units ({s.turns[i].seconds:.2f} s of audio)",
            )
            return
        s.turns[i].units = [int(u) for u in units]


ASSISTANT_EMBEDDING_TEXTS = (
    "I am here with you, and I am listening.",
    "That sounds really hard. Let us take it one step at a time.",
    "Congratulations, that is wonderful news! How do you feel about it?",
)


def embed_assistant_voice(audio: AudioSection, target_uri: str) -> str:
    """Render a few sentences in the assistant voice, embed them with the speaker encoder and
    store the embedding (float32 .npy) at ``target_uri``; returns the URI."""
    import io

    from opens2s.audio.io import resample
    from opens2s.audio.speaker import SpeakerEncoder
    from opens2s.audio.tts import build_tts

    tts = build_tts(audio)
    waves = []
    for text in ASSISTANT_EMBEDDING_TEXTS:
        wave, sr = tts.synthesize(text, audio.assistant_speaker)
        waves.append(resample(np.asarray(wave, np.float32), sr, audio.sample_rate))
    embedding = SpeakerEncoder(audio.speaker_encoder).embed(
        np.concatenate(waves), audio.sample_rate
    )
    buf = io.BytesIO()
    np.save(buf, np.asarray(embedding, dtype=np.float32))
    storage.write_bytes(target_uri, buf.getvalue())
    return target_uri
