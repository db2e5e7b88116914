"""A damaged latest checkpoint does not fail the run: resume names it and falls back to the
newest intact one; a checkpoint moved away by hand does not make Ray refuse the stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import train_test_config
from opens2s.train import checkpoints, run_training
from opens2s.train.metrics import read_metrics

SHARD = "zero/zero_pp_rank_0_mp_rank_00_optim_states.pt"


def test_truncated_latest_checkpoint_falls_back_then_a_moved_one_is_forgotten(
    ray_local, train_corpus, tmp_path, capfd
):
    cfg = train_test_config(
        tmp_path / "run", train_corpus[0], max_steps=4, checkpoint_every=2, keep_last=2,
        export=False, max_failures=0,
    )  # fmt: skip
    first = run_training(cfg).stages[0]
    stage_dir = Path(first.checkpoint).parent
    latest, earlier = stage_dir / "checkpoint-0000004", stage_dir / "checkpoint-0000002"
    assert Path(first.checkpoint) == latest and earlier.is_dir()

    # The user moves the latest checkpoint away: Ray's record still names it, yet the run
    # resumes from the one that is left instead of asking to delete the stage folder.
    shutil.move(latest, tmp_path / "set-aside")
    second = run_training(cfg).stages[0]
    assert [r["start_step"] for r in read_metrics(second.metrics)] == [0, 0, 2, 2]
    assert "checkpoint(s) checkpoint-0000004 of" in capfd.readouterr().out
    assert earlier.is_dir() and latest.is_dir()

    # A truncated shard in the latest checkpoint: no attempt is burnt (max_failures=0), the
    # run names it, resumes from step 2 and writes a good step-4 checkpoint again.
    shard = latest / SHARD
    shard.write_bytes(shard.read_bytes()[:100])
    third = run_training(cfg).stages[0]
    rows = read_metrics(third.metrics)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["start_step"] for r in rows] == [0, 0, 2, 2]
    assert f"checkpoint {latest} is damaged" in capfd.readouterr().out
    checkpoints.verify(latest)


def test_resume_with_no_intact_checkpoint_names_every_damaged_one(tmp_path: Path) -> None:
    for step in (2, 4):
        d = tmp_path / checkpoints.dir_name(step)
        for sub in ("zero", "model_config", "tokenizer"):
            (d / sub).mkdir(parents=True)
        (d / checkpoints.META_FILE).write_text('{"tag": "zero", "zero_stage": 2}')
        (d / "zero" / "mp_rank_00_model_states.pt").write_bytes(b"not a torch file")
    handed = str(tmp_path / checkpoints.dir_name(4))
    with pytest.raises(checkpoints.CorruptCheckpointError) as err:
        checkpoints.resume(None, handed, str(tmp_path), say=lambda line: None)
    assert "checkpoint-0000004" in str(err.value) and "checkpoint-0000002" in str(err.value)
    assert "mp_rank_00_model_states.pt" in str(err.value)
