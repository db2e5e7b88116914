"""The pipeline's steps in order, and how they group into cluster jobs.

One table, read by the local runner, the ``--address`` runner and the KubeRay RayJob renderer, so
all three run the same steps.
"""

from __future__ import annotations

from opens2s import storage
from opens2s.config import PlatformConfig
from opens2s.config.train import STAGE_ORDER

STEPS: tuple[str, ...] = (
    "units",
    "corpus",
    "continuation",
    *STAGE_ORDER,
    "export",
    "serve",
    "turn",
    "eval",
)
"""units: fit the k-means unit tokenizer on a sample of rendered assistant speech (first, because
the corpus records carry speech units); corpus: build the speech-dialogue corpus (scripts, TTS,
units, filters, shards); continuation: the speech-understanding corpus (only when ``understand``
trains); understand, speak, align, finetune: the training stages listed in ``train.stages``;
export: the ``from_pretrained`` model dir; serve: deploy the Serve app on it; turn: one spoken
test turn against it (answer wav, transcript, TTFA, WER); eval: the exported model on the eval
set (the corpus's held-out split and training questions by default), scored in a Ray Data job
(docs/eval.md)."""

JOB_GROUPS: dict[str, tuple[str, ...]] = {
    "corpus": ("units", "corpus", "continuation"),
    "train": (*STAGE_ORDER, "export"),
    "serve": ("serve", "turn"),
    "eval": ("eval",),
}
"""How steps group into Ray jobs: ``opens2s pipeline --address`` submits one job per group."""

CLUSTER_JOBS: dict[str, tuple[str, ...]] = {k: JOB_GROUPS[k] for k in ("corpus", "train", "eval")}
"""The batch groups rendered as KubeRay RayJobs; serving on Kubernetes is the RayService."""


def not_needed(cfg: PlatformConfig, name: str) -> str | None:
    """Why step ``name`` has nothing to do with this config (None: it has work)."""
    if name in STAGE_ORDER and name not in cfg.train.stages:
        return "not in train.stages"
    if name == "continuation" and "understand" not in cfg.train.stages:
        return "only the understand stage reads it"
    return None


def steps_between(first: str | None = None, last: str | None = None) -> tuple[str, ...]:
    """The steps from ``first`` to ``last`` inclusive (None: from the start / to the end)."""
    for name in (first, last):
        if name is not None and name not in STEPS:
            raise ValueError(f"unknown pipeline step {name!r}; steps are {', '.join(STEPS)}")
    i = STEPS.index(first) if first else 0
    j = STEPS.index(last) + 1 if last else len(STEPS)
    if i >= j:
        raise ValueError(f"step {first!r} comes after {last!r}; steps are {', '.join(STEPS)}")
    return STEPS[i:j]


def served_config(cfg: PlatformConfig) -> PlatformConfig:
    """The config the Serve app runs with: ``serve.model_dir`` defaults to the pipeline's export,
    ``<run_dir>/model`` (locally, with ``--address`` and in the RayService alike)."""
    if cfg.serve.model_dir:
        return cfg
    model = storage.join(cfg.run_dir, "model")
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"model_dir": model})})
