"""DeepSpeed config generated from the ``train`` section, and the CPU set-up DeepSpeed needs.

:func:`deepspeed_config` turns :class:`~opens2s.config.TrainSection` into the dict
``deepspeed.initialize`` takes: ZeRO stage and offload, precision (bf16 on GPU, fp32 on CPU), batch
sizes and gradient accumulation, clipping and AdamW. :class:`WarmupLinearDecay` is the learning-rate
schedule OpenS2S trained with (warmup, then linear decay), handed to ``deepspeed.initialize`` as
``lr_scheduler``: DeepSpeed's own ``WarmupDecayLR`` runs its first two steps at the minimum rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opens2s.config.train import TrainSection


def deepspeed_config(train: TrainSection, *, world_size: int, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config for ``world_size`` workers.

    The optimizer is AdamW: torch's implementation on CPU without offload (DeepSpeed's FusedAdam
    would JIT-compile a CUDA op), DeepSpeedCPUAdam with optimizer offload, FusedAdam on GPU.
    """
    bf16 = train.precision == "bf16" or (train.precision == "auto" and on_gpu)
    if bf16 and not on_gpu:
        # bf16 matmuls on CPU are slow and the ZeRO bf16 optimizer is only tested on accelerators.
        raise ValueError("train.precision bf16 needs use_gpu: true; use fp32 or auto on CPU")
    offload = train.offload_optimizer
    optimizer_params: dict[str, Any] = {
        "lr": train.lr,
        "betas": list(train.betas),
        "eps": 1e-8,
        "weight_decay": train.weight_decay,
    }
    if not on_gpu and not offload:
        optimizer_params["torch_adam"] = True
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage > 0:
        zero.update(
            {
                "overlap_comm": False,
                # On GPU, copying each gradient into one contiguous buffer as it is produced
                # avoids memory fragmentation. On CPU there is none to avoid, and the per-parameter
                # copy in DeepSpeed's backward hook costs more (~20% of a tiny model's backward)
                # than flattening the bucket once at reduction time.
                "contiguous_gradients": on_gpu,
                # NCCL has a reduce-scatter; over gloo DeepSpeed emulates it with one reduce per
                # rank and slice, so on CPU one all-reduce of the bucket is cheaper.
                "reduce_scatter": on_gpu,
            }
        )
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if train.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "train_batch_size": train.micro_batch_size * train.grad_accum_steps * world_size,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


@dataclass(frozen=True)
class WarmupLinearDecay:
    """Learning-rate factor for optimizer step ``k`` (0 = the first step): linear warmup from
    ``min_lr`` to ``lr`` over ``warmup_steps`` steps (the last warmup step at ``lr``), then linear
    decay that would reach 0 at ``max_steps``. A plain object so the scheduler state pickles."""

    lr: float
    min_lr: float
    warmup_steps: int
    max_steps: int

    @classmethod
    def from_section(cls, train: TrainSection) -> WarmupLinearDecay:
        return cls(train.lr, train.min_lr, train.warmup_steps, train.max_steps)

    def __call__(self, k: int) -> float:
        if k < self.warmup_steps:
            start = self.min_lr / self.lr
            return start + (1.0 - start) * (k + 1) / self.warmup_steps
        return max(0.0, (self.max_steps - k) / max(1, self.max_steps - self.warmup_steps))

    def scheduler(self, optimizer: Any) -> Any:
        """The torch scheduler for ``optimizer`` (``deepspeed.initialize(lr_scheduler=...)``)."""
        import torch

        return torch.optim.lr_scheduler.LambdaLR(optimizer, self)


def skip_shm_comm_build() -> None:
    """Keep DeepSpeed on plain gloo collectives on CPU.

    At ``initialize`` on the CPU accelerator DeepSpeed JIT-compiles its shared-memory
    all-reduce op (~45-50 s per fresh machine). Marking the op incompatible makes DeepSpeed skip
    it and use torch.distributed (gloo), which is all two CPU workers need.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
