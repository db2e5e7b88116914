"""The ``data`` section of the platform config: corpus construction, one typed block per stage.

Stages run in this order (``opens2s.data.pipeline``): scenarios -> writer -> validation ->
render -> units -> filters -> output. Each block below is the typed config of one stage; the stage
modules in ``opens2s.data`` read their defaults from here only. Speech settings (sample rate,
assistant voice, codebook size, clipping threshold) are in the ``audio`` section.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScenarioSettings(_Stage):
    """What to talk about: emotion x intensity x situation x persona x user speaker, seeded."""

    num_dialogues: int = Field(6, gt=0)
    """How many dialogues (samples) the corpus holds."""
    seed: int = Field(0, ge=0)
    """Same seed (and settings) -> same scenarios and the same sample ids."""
    emotions: list[str] | None = None
    """Emotions to balance over; None = every emotion the TTS can render (audio.tts.EMOTIONS)."""
    intensities: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: [0.5, 1.0], min_length=1
    )
    """Emotion intensities to draw from, each in [0, 1] (0 = neutral, 1.0 = the full prosody
    profile; the TTS extrapolates beyond, which the corpus does not use)."""
    situations: list[str] | None = None
    """Situation names to draw from; None = the built-in bank (opens2s.data.content)."""
    personas: list[str] | None = None
    """Persona names to draw from; None = the built-in bank (opens2s.data.content)."""
    user_speakers: list[str] | None = None
    """TTS speakers for user turns; None = every TTS speaker except the assistant's."""
    min_exchanges: int = Field(1, ge=1)
    """Fewest user/assistant exchanges in a dialogue."""
    max_exchanges: int = Field(1, ge=1)
    """Most user/assistant exchanges in a dialogue."""
    neutral_share: float = Field(0.4, ge=0, le=1)
    """Share of dialogues whose user turns carry no emotion words, so that only the voice tells
    the emotion (checked against validation's emotion lexicon). They come as minimal pairs: the
    same user words, speaker and situation rendered with ``pair_size`` different emotions, each
    answered as its emotion calls for. Whole pairs are drawn per round of ``len(emotions)``
    dialogues, so the corpus' share is this rounded to whole pairs (summary.json reports it)."""
    pair_size: int = Field(2, ge=2)
    """Dialogues per minimal pair (each a different emotion); at most ``len(emotions)``."""

    @model_validator(mode="after")
    def _exchanges_ordered(self) -> ScenarioSettings:
        if self.min_exchanges > self.max_exchanges:
            raise ValueError(
                f"min_exchanges ({self.min_exchanges}) must be <= max_exchanges "
                f"({self.max_exchanges})"
            )
        return self


class WriterSettings(_Stage):
    """Who writes the dialogue scripts: the offline template writer or an instruct LLM."""

    kind: Literal["template", "llm"] = "template"
    backend: Literal["transformers", "vllm"] = "transformers"
    """LLM backend: transformers on CPU, vLLM (one engine per Ray Data actor) where GPUs exist."""
    model_path: str | None = None
    """Local directory of an instruct LM (HF format). None with transformers = the random-init
    tiny model of opens2s.model (garbage output: exercises retry and quarantine)."""
    max_new_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.8, ge=0)
    max_attempts: int = Field(3, ge=1)
    """Generations per dialogue before a malformed answer is quarantined."""
    batch_size: int = Field(8, gt=0)
    """Prompts per LLM batch."""
    gpus_per_worker: float = Field(1.0, ge=0)
    """GPUs per vLLM engine replica (0 = run the engine on CPU)."""
    vllm_engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra vLLM engine arguments (max_model_len, tensor_parallel_size, ...)."""


class ValidationSettings(_Stage):
    """What a script must look like before it is spoken."""

    min_words_per_turn: int = Field(2, ge=1)
    max_words_per_turn: int = Field(80, ge=1)
    min_english_ratio: float = Field(0.5, ge=0, le=1)
    """Share of a turn's words that must be common English words or plain ASCII words."""


class RenderSettings(_Stage):
    """How turns become audio (voices come from the audio section)."""

    audio_format: Literal["flac", "wav"] = "flac"
    batch_size: int = Field(4, gt=0)
    """Dialogues per rendering batch."""
    gpus_per_worker: float = Field(0.0, ge=0)
    """GPUs per rendering worker (e.g. 1 for audio.tts_engine cosyvoice2 on a GPU cluster)."""


class UnitSettings(_Stage):
    """Assistant audio -> discrete units."""

    tokenizer_path: str | None = None
    """An existing unit tokenizer (tokenizer.npz, local or s3://). None = fit one on a sample of
    rendered assistant audio and keep it at <corpus>/units/tokenizer.npz (reused on rerun)."""
    fit_dialogues: int = Field(12, gt=0)
    """Dialogues rendered per round to fit the tokenizer when none is given; rounds continue
    until there is audio for 3 vectors per unit (audio.codebook_size / audio.unit_rate)."""


class FilterSettings(_Stage):
    """Audio checks; a failing dialogue is quarantined with the check's name and measurement."""

    min_turn_seconds: float = Field(0.5, ge=0)
    max_turn_seconds: float = Field(30.0, gt=0)
    max_silence_ratio: float = Field(0.7, ge=0, le=1)
    """Largest share of 20 ms frames quieter than silence_db."""
    silence_db: float = -40.0
    """Frame level (dBFS, RMS) below which a frame counts as silence."""
    max_wer: float | None = None
    """Largest ASR word error rate between script and audio; None = ASR check off."""
    verify_prosody: bool = True
    """Render each emotional user turn once more, neutral, by the same speaker, and drop the
    dialogue when its prosody (F0 level and range, tempo, energy) moved against what its emotion
    calls for (``opens2s.audio.prosody``; rule after Juslin & Laukka 2003)."""
    min_speaker_similarity: float | None = Field(None, ge=-1, le=1)
    """Smallest cosine similarity (audio.speaker_encoder) between a user turn and its speaker's
    neutral rendering of the same words; None = check off. Needs ``verify_prosody``'s neutral
    renderings. espeak voices measure 0.86-0.99 against themselves across emotions and up to
    0.96 against other catalog voices, so on espeak it only catches a render that lost its
    speaker outright; 0.75 is a start for a zero-shot TTS (cosyvoice2). It costs two resemblyzer
    embeddings per user turn (~0.3 s on one core, ~5x the rest of a tiny dialogue), hence off."""
    ser_model_path: str | None = None
    """Local directory of a speech-emotion-recognition model: a transformers audio
    classification checkpoint (config.json with id2label, weights, preprocessor_config.json) or
    a FunASR emotion2vec directory (config.yaml, model.pt, tokens.txt); a user turn whose
    recognised emotion differs from its target is dropped. None = off."""

    @model_validator(mode="after")
    def _turn_seconds_ordered(self) -> FilterSettings:
        if self.min_turn_seconds > self.max_turn_seconds:
            raise ValueError(
                f"min_turn_seconds ({self.min_turn_seconds}) must be <= max_turn_seconds "
                f"({self.max_turn_seconds}): no turn could pass"
            )
        return self


class OutputSettings(_Stage):
    """Where and how the corpus is written."""

    uri: str | None = None
    """Corpus root (local path or s3://); None = <run_dir>/corpus."""
    shard_size: int = Field(10, gt=0)
    """Dialogues per shard (the unit of resumption: a finished shard is never redone)."""
    speaker_embedding: bool = True
    """Embed the assistant voice once (audio.speaker_encoder) into spk/assistant.npy and point
    every assistant item's spk_emb at it; False leaves spk_emb empty (the model uses zeros)."""
    held_out_fraction: float = Field(0.0, ge=0, lt=1)
    """Share of kept dialogues written to ``held_out/`` instead of ``shards/``: the eval split,
    never trained on. Chosen by a hash of the sample id (the same dialogue stays held out when
    the corpus grows); 0 = none (the demo trains on all of its 6)."""


class DataSection(BaseModel):
    """Settings of the corpus-construction workload."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(2, gt=0)
    """Parallel Ray workers per heavy stage (writer, render, units, filters)."""
    cpus_per_worker: float = Field(0.25, gt=0)
    """Logical CPUs each stage worker asks Ray for. Stage workers are single-threaded and wait on
    each other in a streaming pipeline: 0.25 packs a whole pipeline on a 2-core laptop; use 1
    on a cluster with real cores to spare."""
    worker_retries: int = Field(2, ge=0)
    """Times a batch is retried after its worker (actor) process dies, before it counts as failed.
    An actor holds four batches (one running, three queued): a batch queued beside one that kills
    its actor fails with it. The samples of every failed batch are then rerun one per batch (the
    salvage pass), so only the sample that kills its worker is quarantined as lost."""
    max_failed_blocks: int = Field(8, ge=0)
    """Ray Data blocks that may fail (a worker crash) before the job stops; their dialogues are
    quarantined as lost."""
    scenarios: ScenarioSettings = ScenarioSettings()
    writer: WriterSettings = WriterSettings()
    validation: ValidationSettings = ValidationSettings()
    render: RenderSettings = RenderSettings()
    units: UnitSettings = UnitSettings()
    filters: FilterSettings = FilterSettings()
    output: OutputSettings = OutputSettings()
