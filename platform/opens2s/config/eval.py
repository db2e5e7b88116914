"""The ``eval`` section: ``opens2s eval`` and the pipeline's ``eval`` step (docs/eval.md).

Every spoken question of an eval set goes through the server's streaming decoder and vocoder
(batched sessions) in a Ray Data job; each answer is scored for latency, speech-text consistency,
reference match, voice, emotion and (with a judge model) empathy.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JudgeSettings(BaseModel):
    """The empathy judge: an instruct LLM from a local path scores each reply with a fixed rubric.

    Its answers are parsed as JSON; an answer that does not parse is asked again (sampled) up to
    ``max_attempts`` times, then counted as unparseable (never dropped).
    """

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = None
    """A local HF causal-LM directory (with its tokenizer); None: no judge, the score is absent."""
    backend: Literal["transformers", "vllm"] = "transformers"
    """transformers (CPU or one GPU, in a Ray actor) | vllm (GPU; guided JSON)."""
    max_new_tokens: int = Field(96, gt=0, le=2048)
    max_attempts: int = Field(3, ge=1, le=10)
    """Tries per reply; the first is greedy, retries sample at ``temperature``."""
    temperature: float = Field(0.7, gt=0)
    batch_size: int = Field(8, gt=0)
    gpus: float = Field(0.0, ge=0)
    """GPUs of the judge's actor (vllm needs at least 1)."""
    vllm_engine_kwargs: dict[str, Any] = {}


class EvalSection(BaseModel):
    """What to evaluate on, how the answers are made and which optional scorers run."""

    model_config = ConfigDict(extra="forbid")

    eval_set: str | None = None
    """A JSONL eval set (``{audio, question?, reference?, emotion?}`` per line), a corpus root
    (its held-out split), or None: this run's corpus."""
    train_questions: int = Field(6, ge=0)
    """From a corpus, also ask this many training questions (first user turns of training
    dialogues, reported as split ``train``: what the model memorised); 0 = held-out only."""
    max_items: int | None = Field(None, gt=0)
    """Ask at most this many items of the set (None: all)."""
    batch_size: int = Field(8, gt=0, le=64)
    """Sessions decoded together in one batched decoder (as a loaded Serve replica does)."""
    workers: int = Field(1, gt=0)
    """Ray actors answering questions, each holding the model, decoder and vocoder."""
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    """GPUs per answering actor (the model runs on ``model.device``, so set both)."""
    max_text_tokens: int = Field(128, gt=0, le=1024)
    max_units: int = Field(600, gt=0, le=4000)
    voice: str | None = None
    """The requested voice (a name under the model dir's ``speakers/``); None:
    ``audio.assistant_speaker``. Speaker similarity compares each answer with it."""
    ser_model_path: str | None = None
    """A speech emotion recognizer: a local HF audio-classification directory (config.json with
    id2label, weights, preprocessor_config.json); None: that score is absent."""
    judge: JudgeSettings = JudgeSettings()
