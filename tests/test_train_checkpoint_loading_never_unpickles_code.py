"""Checkpoints come from storage a user or a bucket can write: loading one (export, resume) must
never run pickled code, and a damaged file is named. Real DeepSpeed checkpoints still load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from opens2s.train import checkpoints
from opens2s.train.export import full_state_dict

MAKE_CHECKPOINTS = r"""
import json, os, sys, pathlib, torch
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                  MASTER_PORT=sys.argv[2])
import deepspeed
from opens2s.config import load_config
from opens2s.train.deepspeed_config import deepspeed_config, WarmupLinearDecay, skip_shm_comm_build
skip_shm_comm_build()
deepspeed.init_distributed(dist_backend="gloo")
for z in (0, 2, 3):
    cfg = load_config(None, {"train.zero_stage": z, "train.num_workers": 1})
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    engine, *_ = deepspeed.initialize(
        model=m, model_parameters=list(m.parameters()),
        config=deepspeed_config(cfg.train, world_size=1, on_gpu=False),
        lr_scheduler=WarmupLinearDecay.from_section(cfg.train).scheduler)
    engine.backward(engine(torch.randn(2, 4)).sum())
    engine.step()
    d = pathlib.Path(sys.argv[1]) / f"zero{z}"
    engine.save_checkpoint(str(d), tag="zero", client_state={"train_state": {"step": 1}})
    (d / "opens2s_train.json").write_text(json.dumps({"tag": "zero", "zero_stage": z}))
    (d / "model_config").mkdir()
    (d / "tokenizer").mkdir()
"""


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on the marker: code a checkpoint must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def ds_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real single-process DeepSpeed checkpoints (ZeRO 0, 2, 3) of a small module."""
    from conftest import free_port

    root = tmp_path_factory.mktemp("ds-ckpts")
    done = subprocess.run(
        [sys.executable, "-c", MAKE_CHECKPOINTS, str(root), str(free_port())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("zero", [0, 2, 3])
def test_real_deepspeed_checkpoints_pass_the_safe_loader(ds_checkpoints: Path, zero: int) -> None:
    ckpt = ds_checkpoints / f"zero{zero}"
    checkpoints.verify(ckpt)
    state = full_state_dict(ckpt)
    assert sorted(state) == ["0.bias", "0.weight", "1.bias", "1.weight"]


@pytest.mark.parametrize(
    ("zero", "victim"),
    [(0, "mp_rank_00_model_states.pt"), (2, "zero_pp_rank_0_mp_rank_00_optim_states.pt")],
)
def test_crafted_pickle_in_a_checkpoint_is_refused_and_never_runs(
    ds_checkpoints: Path, tmp_path: Path, zero: int, victim: str
) -> None:
    ckpt = _copy(ds_checkpoints / f"zero{zero}", tmp_path / "ckpt")
    marker = tmp_path / "pwned"
    torch.save({"module": {}, "payload": _RunsCode(marker)}, ckpt / "zero" / victim)
    with pytest.raises(checkpoints.CorruptCheckpointError, match=victim):
        full_state_dict(ckpt)  # export's reader
    with pytest.raises(checkpoints.CorruptCheckpointError, match=victim):
        checkpoints.load(None, ckpt)  # resume: refused before DeepSpeed's loader sees it
    assert not marker.exists()


def test_truncated_shard_missing_model_config_and_foreign_tag_are_named(
    ds_checkpoints: Path, tmp_path: Path
) -> None:
    ckpt = _copy(ds_checkpoints / "zero2", tmp_path / "ckpt")
    shard = ckpt / "zero" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(checkpoints.CorruptCheckpointError, match=f"{ckpt}.*{shard.name}"):
        checkpoints.verify(ckpt)
    shutil.rmtree(ckpt / checkpoints.MODEL_CONFIG_DIR)
    with pytest.raises(checkpoints.CorruptCheckpointError, match=r"no model_config/"):
        full_state_dict(ckpt)
    (ckpt / checkpoints.META_FILE).write_text(json.dumps({"tag": "../../elsewhere"}))
    with pytest.raises(checkpoints.CorruptCheckpointError, match="expected 'zero'"):
        checkpoints.verify(ckpt)
