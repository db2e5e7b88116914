"""opens2s.train: train the OpenS2S model with Ray Train + DeepSpeed, from the ``train`` section.

Public API: :func:`run_training` (every stage of a config, then export), :func:`fit_stage`,
:func:`export_checkpoint` (checkpoint -> ``from_pretrained`` dir), :func:`deepspeed_config`,
:class:`TrainSummary`. Layout: ``deepspeed_config`` (config generation), ``data`` (corpus ->
Ray Dataset -> batches), ``loop`` (the per-worker loop), ``checkpoints``, ``stages`` (freeze sets,
LoRA), ``export``, ``metrics`` (metrics.jsonl, loss.png), ``run`` (the driver).

The names are imported on first use, so the modules that need no Ray (``deepspeed_config``,
``stages``, ``toy_corpus``) import on a machine without it, as ``bench/train_preset.py`` does.
"""

from __future__ import annotations

import importlib
from typing import Any

# Eager (it needs no Ray): the function, not its same-named module, is the package attribute.
from opens2s.train.deepspeed_config import deepspeed_config as deepspeed_config

_HOMES = {
    "KillWorker": "loop",
    "StageSummary": "run",
    "TrainSummary": "run",
    "export_checkpoint": "export",
    "fit_stage": "run",
    "run_training": "run",
}

__all__ = sorted([*_HOMES, "deepspeed_config"])


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
