"""The pipeline's steps in order, and how they group into cluster jobs.

One table, read by the local runner, the ``--address`` runner and the KubeRay RayJob renderer, so
all three run the same steps.
"""

from __future__ import annotations

STEPS: tuple[str, ...] = ("corpus", "units", "align", "finetune", "export", "serve", "turn")
"""corpus: build the speech-dialogue corpus; units: fit the unit tokenizer and tokenize the
assistant speech; align, finetune: the two training stages; export: the ``from_pretrained``
model dir; serve: deploy the Serve app; turn: one spoken test turn against it."""

CLUSTER_JOBS: dict[str, tuple[str, ...]] = {
    "corpus": ("corpus", "units"),
    "train": ("align", "finetune", "export"),
}
"""Batch steps grouped into the RayJobs rendered for Kubernetes; serving is the RayService."""


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
