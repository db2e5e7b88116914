"""opens2s.train: train the OpenS2S model with Ray Train + DeepSpeed, from the ``train`` section.

Public API: :func:`run_training` (every stage of a config, then export), :func:`fit_stage`,
:func:`export_checkpoint` (checkpoint -> ``from_pretrained`` dir), :func:`deepspeed_config`,
:class:`TrainSummary`. Layout: ``deepspeed_config`` (config generation), ``data`` (corpus ->
Ray Dataset -> batches), ``loop`` (the per-worker loop), ``checkpoints``, ``stages`` (freeze sets,
LoRA), ``export``, ``metrics`` (metrics.jsonl, loss.png), ``run`` (the driver).
"""

from opens2s.train.deepspeed_config import deepspeed_config
from opens2s.train.export import export_checkpoint
from opens2s.train.loop import KillWorker
from opens2s.train.run import StageSummary, TrainSummary, fit_stage, run_training

__all__ = [
    "KillWorker",
    "StageSummary",
    "TrainSummary",
    "deepspeed_config",
    "export_checkpoint",
    "fit_stage",
    "run_training",
]
