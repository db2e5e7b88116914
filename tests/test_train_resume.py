"""A killed training worker is replaced and the run resumes from the latest checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import train_test_config
from opens2s.train import KillWorker, run_training
from opens2s.train.metrics import read_metrics


def test_killed_worker_is_replaced_and_run_resumes_at_last_checkpoint_with_exact_steps(
    ray_local, train_corpus, train_reference_run, tmp_path
):
    cfg = train_test_config(
        tmp_path / "run", train_corpus[0], checkpoint_every=4, export=False, max_failures=2
    )
    marker = tmp_path / "killed.pid"
    # Rank 1 SIGKILLs its own process right after step 9; checkpoints exist at steps 4 and 8.
    # Each worker's epoch is 4 micro-batches, so step 8 ends an epoch: the resume starts the
    # next epoch after skipping a whole one.
    summary = run_training(cfg, kill=KillWorker(rank=1, step=9, marker=str(marker)))
    assert marker.exists(), "the worker was never killed"
    stage = summary.stages[0]
    assert stage.resumed_from == [8]
    rows = read_metrics(stage.metrics)
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert [r["start_step"] for r in rows] == [0] * 8 + [8] * 2
    assert [r["epoch"] for r in rows] == [0] * 4 + [1] * 4 + [2] * 2
    assert stage.steps == 10 and Path(stage.checkpoint).name == "checkpoint-0000010"
    # Weights, optimizer, LR schedule and data position came back: the resumed steps compute
    # the same losses as the uninterrupted reference run.
    ref = read_metrics(train_reference_run[1].stages[0].metrics)
    for key in ("loss", "llm_loss", "tts_loss", "lr"):
        np.testing.assert_allclose(
            [r[key] for r in rows], [r[key] for r in ref], rtol=1e-4, err_msg=key
        )
