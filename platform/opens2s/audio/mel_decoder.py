"""A small learned unit -> mel decoder that refines k-means centroids with context.

A unit's centroid is the average of every stacked-mel vector assigned to it, so it blurs formant
transitions. :class:`UnitMelDecoder` looks at neighbouring units (a stack of 1-D convolutions,
``lookahead`` units to the right at most) and predicts a correction to each centroid, trained with
an L1 loss against the true stacked log-mel of the fitting audio. It starts as the identity
(zero-initialised output layer), so it can only improve on the plain centroids it is trained on.

Weights are plain float32 arrays kept with the codebook (``decoder.*`` in the same .npz or
.safetensors file); nothing is pickled.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

# bench/units.py: 256 x 4 trained 2000 steps beat 192 x 3 for 1000 steps at 12.5 units/s
DEFAULT_HIDDEN = 256
DEFAULT_LAYERS = 4
DEFAULT_STEPS = 2000


class UnitMelDecoder(nn.Module):
    """Unit ids -> normalised stacked log-mel vectors, ``centroid + f(context)``."""

    def __init__(
        self,
        centroids_normed: np.ndarray,
        hidden: int = DEFAULT_HIDDEN,
        layers: int = DEFAULT_LAYERS,
    ) -> None:
        super().__init__()
        k, dim = centroids_normed.shape
        self.dim, self.hidden, self.layers = dim, hidden, layers
        self.lookahead = layers  # each kernel-3 conv sees one unit to the right
        self.centroids = nn.Parameter(
            torch.from_numpy(centroids_normed.astype(np.float32)), requires_grad=False
        )
        self.inp = nn.Linear(dim, hidden)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, padding=1) for _ in range(layers))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, units: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` ids -> ``[B, T, dim]`` normalised features."""
        c = self.centroids[units]
        h = self.inp(c).transpose(1, 2)
        for conv in self.convs:
            h = h + torch.nn.functional.gelu(conv(h))
        return c + self.out(h.transpose(1, 2))

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Trainable weights as named float32 arrays (``decoder.`` prefix), for the codebook file."""
        return {
            f"decoder.{k}": v.detach().cpu().numpy().astype(np.float32)
            for k, v in self.state_dict().items()
            if k != "centroids"
        }

    @classmethod
    def from_arrays(
        cls, centroids_normed: np.ndarray, arrays: dict[str, np.ndarray]
    ) -> UnitMelDecoder:
        """Rebuild a decoder from :meth:`state_arrays` output."""
        w = {k.removeprefix("decoder."): torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
        hidden = w["inp.weight"].shape[0]
        layers = sum(1 for k in w if k.startswith("convs.") and k.endswith(".weight"))
        dec = cls(centroids_normed, hidden, layers)
        w["centroids"] = dec.centroids.data
        dec.load_state_dict(w)
        return dec.eval()

    @torch.inference_mode()
    def decode(self, units: np.ndarray) -> np.ndarray:
        """``[T]`` ids -> ``[T, dim]`` normalised features (numpy)."""
        ids = torch.from_numpy(np.asarray(units, dtype=np.int64))[None]
        return self(ids)[0].numpy()


def train_decoder(
    centroids_normed: np.ndarray,
    sequences: list[tuple[np.ndarray, np.ndarray]],
    *,
    steps: int = DEFAULT_STEPS,
    batch: int = 16,
    window: int = 48,
    lr: float = 2e-3,
    hidden: int = DEFAULT_HIDDEN,
    layers: int = DEFAULT_LAYERS,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> UnitMelDecoder:
    """Fit a decoder on ``(unit ids [T], normalised features [T, dim])`` pairs of utterances.

    Random windows of ``window`` units, Adam with cosine decay, L1 loss. Returns it in eval mode.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dec = UnitMelDecoder(centroids_normed, hidden, layers)
    opt = torch.optim.Adam([p for p in dec.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    usable = [(u, f) for u, f in sequences if len(u) >= 4]
    if not usable:
        raise ValueError("no utterance long enough to train the unit decoder on")
    t0 = time.monotonic()
    for step in range(steps):
        ids, target = [], []
        for i in rng.integers(len(usable), size=batch):
            u, f = usable[i]
            w = min(window, len(u))
            s = int(rng.integers(0, len(u) - w + 1))
            pad = window - w
            ids.append(np.pad(u[s : s + w], (0, pad)))
            target.append(np.pad(f[s : s + w], ((0, pad), (0, 0))))
        ids_t = torch.from_numpy(np.stack(ids))
        tgt = torch.from_numpy(np.stack(target).astype(np.float32))
        loss = (dec(ids_t) - tgt).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step + 1) % max(1, steps // 10) == 0:
            progress(
                f"unit decoder step {step + 1}/{steps}: L1 {float(loss.detach()):.3f} ({time.monotonic() - t0:.0f} s)"
            )
    return dec.eval()
