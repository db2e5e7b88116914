"""The ``train`` section of the platform config: Ray Train + DeepSpeed settings.

Defaults are the tiny laptop run (2 CPU workers, a few steps). The large-scale OpenS2S recipe
(ZeRO-1, AdamW, global batch 512, clip 1.0, weight decay 0.05, warmup then linear decay) is spelled
out in ``docs/training.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Stage = Literal["understand", "speak", "align", "finetune"]
STAGE_ORDER: tuple[str, ...] = ("understand", "speak", "align", "finetune")
"""The recipe's order (docs/training.md): speech understanding, speech generation, alignment of
the bridges, empathetic fine-tuning. ``train.stages`` lists a subsequence of it."""


class StageSettings(BaseModel):
    """One stage's own values; anything unset is the train section's."""

    model_config = ConfigDict(extra="forbid")

    corpus: str | None = None
    """Corpus root (``shards/*.jsonl``) this stage reads; None: ``understand`` reads the
    continuation corpus, the other stages the dialogue corpus (see ``opens2s.train.run``)."""
    lr: float | None = Field(None, gt=0)
    min_lr: float | None = Field(None, ge=0)
    warmup_steps: int | None = Field(None, ge=0)
    max_steps: int | None = Field(None, gt=0)
    checkpoint_every: int | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    micro_batch_size: int | None = Field(None, gt=0)
    grad_accum_steps: int | None = Field(None, gt=0)


class LoraSection(BaseModel):
    """Low-rank adapters on the LLM's linear layers (peft); merged into the weights on export."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    """Names of the LLM's linear layers that get adapters."""


class TrainSection(BaseModel):
    """Settings of the train workload (read by ``opens2s.train``)."""

    model_config = ConfigDict(extra="forbid")

    # What to train, from where
    stages: list[Stage] = ["finetune"]
    """Stages run in recipe order (understand, speak, align, finetune); each later stage starts
    from the previous stage's final weights. ``understand``: the audio adapter, on continuation
    records (LLM frozen); ``speak``: llm2tts/llm_ln + the TTS LM with spk2tts/spk_ln (LLM
    frozen); ``align``: audio adapter + llm2tts/llm_ln + spk2tts/spk_ln; ``finetune``: adapter +
    LLM + TTS LM (+ the bridges). The audio encoder stays frozen in all. The first stage starts
    from the ``model`` section (``model.checkpoint``, ``model.components``, else a random
    ``model.preset``)."""
    stage_settings: dict[Stage, StageSettings] = Field(default_factory=dict)
    """Per-stage values (corpus, lr, steps ...) over the section's, as the paper's stages differ
    (e.g. ``understand: {lr: 1e-4}``, ``finetune: {lr: 2e-5}``)."""
    corpus: str | None = None
    """Corpus root (local or s3://) holding ``shards/*.jsonl``; None: where the corpus job writes
    (``data.output.uri``, else ``<run_dir>/corpus``)."""
    materialize_corpus: bool = True
    """Encode the corpus once and keep it in Ray's object store for every epoch (small corpora);
    false streams it and re-encodes each epoch (corpora larger than the object store)."""
    lora: LoraSection | None = None
    """LoRA on the LLM (finetune stage); None trains the LLM's full weights."""

    # DeepSpeed
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    """ZeRO optimizer state in host memory (DeepSpeedCPUAdam; compiles cpu_adam once)."""
    offload_params: bool = False
    """ZeRO-3 parameters in host memory."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""

    # Optimisation
    # The laptop default trains the tiny random-init model until it answers its corpus's
    # questions (600 steps at 3e-3 on 6 dialogues: closed-loop WER ~0.05, docs/training.md).
    lr: float = Field(3e-3, gt=0)
    min_lr: float = Field(0.0, ge=0)
    """Warmup climbs linearly from min_lr to lr over warmup_steps; then lr decays linearly
    towards 0 at max_steps."""
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(2, gt=0)
    """Samples per worker per forward pass."""
    grad_accum_steps: int = Field(1, gt=0)
    """Global batch = micro_batch_size x grad_accum_steps x num_workers."""
    max_steps: int = Field(600, gt=0)
    """Optimizer steps per stage."""
    seed: int = 0

    # Checkpoints and fault tolerance
    checkpoint_every: int = Field(300, gt=0)
    """Optimizer steps between checkpoints (one is always written at the end)."""
    keep_last: int = Field(2, gt=0)
    max_failures: int = Field(2, ge=-1)
    """Worker-group restarts Ray Train allows (-1: unlimited)."""

    # Workers
    num_workers: int = Field(1, gt=0)
    """Training workers (DeepSpeed ranks). One on a 2-core laptop: a second costs ~a minute of
    start-up and gloo collectives for a 1.4 M-parameter model."""
    cpus_per_worker: float = Field(0.5, gt=0)
    """Fractional on a laptop so that Ray Data's encode tasks still get CPUs."""
    use_gpu: bool = False

    gradient_checkpointing: bool = False
    """Recompute the LLM's, TTS LM's and audio encoder's layer activations in backward instead of
    keeping them: less memory for a longer step (docs/training.md has the 8B figures)."""

    # Output
    export: bool = True
    """Export the last stage's final checkpoint to ``<run_dir>/model`` (save_pretrained dir)."""

    @model_validator(mode="after")
    def _check(self) -> TrainSection:
        if not self.stages:
            raise ValueError(
                f"train.stages is empty; give at least one of: {', '.join(STAGE_ORDER)}"
            )
        order = [STAGE_ORDER.index(s) for s in self.stages]
        if order != sorted(set(order)):
            raise ValueError(
                f"train.stages {list(self.stages)}: each stage at most once, in recipe order "
                f"{', '.join(STAGE_ORDER)}"
            )
        unused = sorted(set(self.stage_settings) - set(self.stages))
        if unused:
            raise ValueError(
                f"train.stage_settings names {unused}, which train.stages {list(self.stages)} "
                "does not run"
            )
        if self.stage_settings:
            for stage in self.stages:
                self.for_stage(stage)  # each stage's own values must pass these checks too
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(
                f"train.offload_params needs zero_stage 3, got zero_stage {self.zero_stage}"
            )
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("train.offload_optimizer needs zero_stage 1, 2 or 3, got 0")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"train.warmup_steps ({self.warmup_steps}) must be below "
                f"train.max_steps ({self.max_steps})"
            )
        return self

    def for_stage(self, stage: Stage) -> TrainSection:
        """This section with ``stage``'s settings applied (what that stage trains with)."""
        own = self.stage_settings.get(stage)
        if own is None:
            return self
        values = self.model_dump()
        values.update(own.model_dump(exclude_none=True, exclude={"corpus"}))
        values["stage_settings"] = {}
        try:
            return TrainSection.model_validate(values)
        except ValueError as e:
            raise ValueError(f"train.stage_settings.{stage}: {e}") from e

    def stage_corpus(self, stage: Stage) -> str | None:
        """The corpus ``stage_settings`` gives ``stage``; None: the stage's default."""
        own = self.stage_settings.get(stage)
        return own.corpus if own is not None else None

    def global_batch_size(self) -> int:
        """Samples per optimizer step over all workers."""
        return self.micro_batch_size * self.grad_accum_steps * self.num_workers
