"""bench/train_preset.py, the one-device training bench (run on a GPU for opens2s-8b), runs here
on the tiny preset: plain PyTorch and ZeRO-2 train the same stage to the same losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_one_device_bench_reports_each_setup_and_zero2_equals_plain_adamw() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    setups = "plain_align,zero2_align,zero3_finetune_lora_offload,nonsense"
    bad = subprocess.run(
        [sys.executable, "bench/train_preset.py", "--setups", setups],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown setups ['nonsense']" in bad.stderr

    run = subprocess.run(
        [
            sys.executable, "bench/train_preset.py", "--preset", "tiny", "--device", "cpu",
            "--setups", "plain_align,zero2_align", "--warmup", "1", "--steps", "3",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    plain, zero2 = summary["setups"]["plain_align"], summary["setups"]["zero2_align"]
    for figures in (plain, zero2):
        assert "error" not in figures, figures
        assert figures["step_time_s"] > 0 and figures["samples_per_s"] > 0
    assert plain["trainable_params"] == zero2["trainable_params"] > 0
    # The same stage, data, AdamW, clipping and LR schedule: DeepSpeed's step is plain AdamW's.
    assert zero2["loss_last"] == pytest.approx(plain["loss_last"], rel=1e-4)
    assert zero2["loss_last"] < zero2["loss_first"]
    assert summary["zero2_over_plain_step_time"] > 0
