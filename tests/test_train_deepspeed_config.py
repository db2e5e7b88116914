"""The DeepSpeed config generated from the train section, and the CPU shared-memory op skip."""

from __future__ import annotations

import pytest
from opens2s.config.train import TrainSection
from opens2s.train.deepspeed_config import (
    WarmupLinearDecay,
    deepspeed_config,
    skip_shm_comm_build,
)
from pydantic import ValidationError


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stage_batch_sizes_clipping_and_schedule_come_from_the_section(stage):
    train = TrainSection(
        zero_stage=stage, micro_batch_size=4, grad_accum_steps=8, grad_clip=1.0, max_steps=100
    )
    ds = deepspeed_config(train, world_size=16, on_gpu=False)
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_batch_size"] == 4 * 8 * 16 == 512  # OpenS2S's global batch
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 8
    assert ds["gradient_clipping"] == 1.0


def test_schedule_warms_up_then_decays_linearly_and_never_wastes_a_step_at_zero():
    schedule = WarmupLinearDecay.from_section(TrainSection(lr=1e-3, warmup_steps=2, max_steps=10))
    factors = [schedule(k) for k in range(10)]
    assert factors == pytest.approx(
        [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]
    )
    warm = WarmupLinearDecay.from_section(
        TrainSection(lr=1e-3, min_lr=1e-4, warmup_steps=3, max_steps=10)
    )
    assert [warm(k) * 1e-3 for k in range(3)] == pytest.approx([4e-4, 7e-4, 1e-3])


def test_cpu_runs_fp32_with_torch_adamw_and_gpu_runs_bf16():
    train = TrainSection(weight_decay=0.05)
    cpu = deepspeed_config(train, world_size=2, on_gpu=False)
    assert cpu["bf16"]["enabled"] is False and cpu["fp16"]["enabled"] is False
    assert cpu["optimizer"]["type"] == "AdamW"
    # torch's AdamW: DeepSpeed's FusedAdam would JIT-compile a CUDA op.
    assert cpu["optimizer"]["params"]["torch_adam"] is True
    assert cpu["optimizer"]["params"]["weight_decay"] == 0.05
    gpu = deepspeed_config(train, world_size=8, on_gpu=True)
    assert gpu["bf16"]["enabled"] is True
    assert "torch_adam" not in gpu["optimizer"]["params"]
    with pytest.raises(ValueError, match="bf16 needs use_gpu"):
        deepspeed_config(TrainSection(precision="bf16"), world_size=2, on_gpu=False)


def test_offload_settings_and_their_validation():
    ds = deepspeed_config(
        TrainSection(zero_stage=3, offload_optimizer=True, offload_params=True),
        world_size=2,
        on_gpu=True,
    )
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    # DeepSpeedCPUAdam runs the offloaded optimizer: no torch_adam.
    assert "torch_adam" not in ds["optimizer"]["params"]
    with pytest.raises(ValidationError, match="offload_params needs zero_stage 3"):
        TrainSection(zero_stage=2, offload_params=True)
    with pytest.raises(ValidationError, match="warmup_steps"):
        TrainSection(warmup_steps=20, max_steps=20)
    with pytest.raises(ValidationError, match="extra"):
        TrainSection(zero_stages=2)


def test_shm_comm_op_is_not_built_on_cpu():
    from deepspeed.comm.torch import build_shm_op

    skip_shm_comm_build()
    assert build_shm_op() is None  # would otherwise JIT-compile for ~45 s
