"""Cutting the decoded unit stream into vocoder blocks.

``growing`` sends a small first block (first audio as soon as a couple of units exist), then blocks
that grow geometrically up to a cap (fewer vocoder calls per second of audio); ``fixed`` is
OpenS2S's schedule (24 units a block); ``whole`` waits for the end of decoding (a baseline). The
vocoder stream overlaps consecutive blocks itself, so blocks here do not repeat units.
"""

from __future__ import annotations

from collections.abc import Sequence

from opens2s.config.serve import VocoderBlocks


class UnitBlocker:
    """Explicit state: units waiting for their block, and the size of the next block."""

    def __init__(self, cfg: VocoderBlocks) -> None:
        self.cfg = cfg
        self._pending: list[int] = []
        self._next = float(cfg.fixed_units if cfg.schedule == "fixed" else cfg.first_units)
        self.blocks_sent = 0

    @property
    def next_block_units(self) -> int:
        """Units the next block waits for."""
        return max(1, int(self._next))

    def push(self, units: Sequence[int]) -> list[list[int]]:
        """Add decoded units; return the blocks that are now complete (possibly none)."""
        self._pending.extend(int(u) for u in units)
        if self.cfg.schedule == "whole":
            return []
        out: list[list[int]] = []
        while len(self._pending) >= self.next_block_units:
            n = self.next_block_units
            out.append(self._pending[:n])
            self._pending = self._pending[n:]
            self.blocks_sent += 1
            if self.cfg.schedule == "growing":
                self._next = min(float(self.cfg.max_units), self._next * self.cfg.growth)
        return out

    def flush(self) -> list[int]:
        """The units still waiting (end of decoding)."""
        rest, self._pending = self._pending, []
        if rest:
            self.blocks_sent += 1
        return rest
