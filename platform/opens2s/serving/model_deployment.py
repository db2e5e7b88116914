"""The model deployment: holds the model, the streaming decoder and the vocoder of one replica.

Every response this replica serves runs in one :class:`BatchedDecodeLoop` (one batched decoder
step over all active sessions). An open response stream counts as one ongoing request, so Serve's
autoscaling on ongoing requests scales on concurrent sessions.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from opens2s.config import PlatformConfig
from opens2s.serving.decode_loop import BatchedDecodeLoop, TurnRequest
from opens2s.serving.speech_stack import load_speech_stack


@serve.deployment(name="S2SModel")
class S2SModel:
    """One replica: model + decoder + vocoder + the batched decode loop."""

    def __init__(self, platform_config: dict[str, Any]) -> None:
        import torch

        self.cfg = PlatformConfig.model_validate(platform_config)
        torch.set_num_threads(self.cfg.serve.decode_threads)
        self.stack = load_speech_stack(self.cfg)
        self.loop = BatchedDecodeLoop(
            start=self.stack.start,
            decoder_step=self.stack.step,
            vocoder_for=self.stack.vocoder_for,
            blocks=self.cfg.serve.vocoder_blocks,
            max_batch=self.cfg.serve.limits.max_sessions_per_replica,
        )
        # Serve's id of this replica (its actor is SERVE_REPLICA::<app>#S2SModel#<id>): answers
        # name it, so a client or an operator sees which replica served a turn.
        self.replica = serve.get_replica_context().replica_id.unique_id

    async def respond(self, req: TurnRequest) -> AsyncIterator[dict[str, Any]]:
        """Stream the events answering one user turn (text deltas, audio deltas, done)."""
        async for ev in self.loop.respond(req):
            if ev["type"] == "response.done":
                ev["replica"] = self.replica
            yield ev

    def info(self) -> dict[str, Any]:
        """What clients need to know: sample rates, voices, and which replica answered."""
        return {
            "input_sample_rate": 16000,
            "output_sample_rate": self.loop.sample_rate,
            "voices": sorted(self.stack.voices),
            "model": self.stack.description,
            "replica": self.replica,
            "replica_pid": os.getpid(),
            "active_responses": self.loop.active_count,
        }

    def decode_stats(self) -> dict[str, Any]:
        """Batch sizes of the decode steps so far (shows that sessions share steps)."""
        sizes = np.asarray(self.loop.batch_sizes or [0])
        return {
            "steps": self.loop.steps,
            "max_batch": int(sizes.max()),
            "mean_batch": float(sizes.mean()),
        }

    def __del__(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.close()


def model_source(cfg: PlatformConfig) -> str:
    """Human-readable name of what a replica serves (for logs and /v1/info)."""
    if cfg.serve.model_dir:
        return f"model_dir {Path(cfg.serve.model_dir)}"
    return f"preset {cfg.serve.preset} (random init)"
