"""The ``model`` section of the platform config: which model to build or load, and its limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ComponentsSection(BaseModel):
    """Separate pretrained parts an OpenS2S model is assembled from (upstream's from-scratch
    recipe): local HF directories; the adapter and the bridges start fresh."""

    model_config = ConfigDict(extra="forbid")

    audio_encoder: str
    """A Qwen2-Audio directory (its ``audio_tower.*`` weights), a Qwen2-Audio encoder or a
    Whisper directory (its ``model.encoder.*`` weights), with ``preprocessor_config.json``."""
    llm: str
    """A causal LM directory (Qwen3 in the release) with its tokenizer."""
    tts_lm: str
    """A causal LM directory over speech units with its tokenizer (``<|audio_N|>`` tokens, an
    eos) and ``generation_config.json``."""


class ModelSection(BaseModel):
    """Settings of the OpenS2S model: preset, checkpoint, dtype, record limits.

    The tiny preset's unit vocabulary and unit rate are the audio section's ``codebook_size`` and
    ``unit_rate`` (the speech tokenizer defines them).
    """

    model_config = ConfigDict(extra="forbid")

    preset: Literal["tiny", "opens2s-8b"] = "tiny"
    """Architecture to build when ``checkpoint`` is unset (tiny: random init, CPU seconds)."""
    checkpoint: str | None = None
    """A ``from_pretrained`` directory (exported by training or the released model)."""
    components: ComponentsSection | None = None
    """Assemble the model from separate pretrained parts (``model/components.py``) when no
    ``checkpoint`` is set; the tiny preset's random init otherwise."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    seed: int = 0
    speaker_embedding_dim: int = Field(256, ge=1)
    """Size of the speaker embedding fed to spk2tts (256 = resemblyzer)."""
    interleave_strategy: str = "4:8"
    """TEXT:SPEECH span lengths of the TTS LM input."""
    max_text_tokens: int = Field(1024, ge=16)
    """Longest record (text tokens, audio placeholders counted once) the encoder accepts."""
    min_audio_seconds: float = Field(0.5, ge=0)
    max_audio_seconds: float = Field(120.0, gt=0)
    system_prompt: str = "You are a helpful assistant."
    record_roots: list[str] = Field(default_factory=list)
    """Where else records may name audio and speaker embeddings (local directories or s3://
    prefixes). Records are confined to the corpus root otherwise: an absolute path, ``../`` or
    another bucket is refused (``PathOutsideCorpusError``)."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if self.checkpoint and self.components:
            raise ValueError(
                "model.checkpoint and model.components are both set: a model starts either from "
                "a saved OpenS2S directory or from separate parts, not both"
            )
        return self

    @field_validator("interleave_strategy")
    @classmethod
    def _text_colon_speech(cls, value: str) -> str:
        parts = value.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
            raise ValueError(f"{value!r}: expected 'TEXT:SPEECH' positive integers, e.g. '4:8'")
        return value
