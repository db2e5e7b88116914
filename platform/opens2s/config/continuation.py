"""The ``continuation`` section: the speech-understanding corpus (``opens2s corpus continuation``).

For each utterance of an ASR/SER manifest (audio + transcript, optional emotion) a text LLM
continues the transcript (with an emotion: in a tone that fits it), as upstream OpenS2S's
``text_generation.py`` does; the record pairs the audio with that continuation, so the
``understand`` training stage learns to continue from speech what the LLM continued from text.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opens2s.config.data import ValidationSettings


class ContinuationSection(BaseModel):
    """Where the manifest comes from, who writes the continuations, where the records go."""

    model_config = ConfigDict(extra="forbid")

    manifest: str | None = None
    """ASR/SER manifest (JSONL or Parquet, local or s3://): one utterance per row with ``audio``
    (relative to the manifest's folder, or absolute / s3://), ``text`` (the transcript) and an
    optional ``emotion``. None: the pipeline builds one from the dialogue corpus's user turns
    (``opens2s corpus import-asr`` builds one from a folder of audio + transcripts)."""
    output_uri: str | None = None
    """Continuation corpus root (local or s3://); None = <run_dir>/continuation."""
    backend: Literal["transcript", "transformers", "vllm"] = "transcript"
    """Who writes the target text. ``transcript``: the transcript itself, with a transcription
    instruction (no LLM; the offline default of the tiny pipeline, where a random-init LM would
    only write noise). ``transformers``: a local HF instruct LM on CPU workers. ``vllm``: one
    ``vllm.LLM`` per Ray Data actor (GPU workers, or CPU with gpus_per_worker 0 and vLLM's CPU
    build)."""
    model_path: str | None = None
    """Local directory of the instruct LM (HF format); required by transformers and vllm."""
    max_new_tokens: int = Field(128, gt=0)
    """Longest continuation in tokens (upstream allows 1024)."""
    temperature: float = Field(0.0, ge=0)
    """0 = greedy, as upstream generates continuations."""
    max_attempts: int = Field(2, ge=1, le=10)
    """Answers asked of the LLM per utterance: a continuation that fails ``validation`` (too
    few or too many words, not English, an engine error) is asked again, and after the last
    attempt the utterance is quarantined with the reason and the start of the last answer."""
    retry_temperature: float = Field(0.7, gt=0)
    """Sampling temperature of a retry when ``temperature`` is lower (a greedy retry would only
    repeat the rejected answer)."""
    batch_size: int = Field(8, gt=0)
    """Utterances per LLM batch."""
    workers: int = Field(1, gt=0)
    """LLM workers (transformers actors or vLLM engine replicas)."""
    cpus_per_worker: float = Field(0.25, gt=0)
    """Logical CPUs of each light worker (audio checks, output) and transformers actor."""
    gpus_per_worker: float = Field(1.0, ge=0)
    """GPUs per vLLM engine replica (0 = run the engine on CPU)."""
    vllm_engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra vLLM engine arguments (max_model_len, tensor_parallel_size, ...)."""
    shard_size: int = Field(100, gt=0)
    """Utterances per shard (the unit of resumption: a finished shard is never redone)."""
    validation: ValidationSettings = ValidationSettings()
    """What a continuation must look like (word count, English) before it is kept."""
