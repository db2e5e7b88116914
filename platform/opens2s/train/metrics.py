"""Per-step training metrics: a ``metrics.jsonl`` log in run storage and a ``loss.png`` plot.

Rank 0 keeps the rows in memory and rewrites the whole file (atomically): every step on a local
path, at each checkpoint and at the end on s3:// (objects cannot be appended to). After a restart
the log is read back and cut at the step the run resumes from.
"""

from __future__ import annotations

import io
import json
from typing import Any

from opens2s import storage

LOSS_KEYS = ("loss", "llm_loss", "tts_loss")


class MetricsLog:
    """The rows of ``metrics.jsonl`` (one JSON object per optimizer step)."""

    def __init__(self, uri: str, rows: list[dict[str, Any]] | None = None) -> None:
        self.uri = uri
        self.rows: list[dict[str, Any]] = rows or []

    @classmethod
    def resume(cls, uri: str, up_to_step: int) -> MetricsLog:
        """Read an existing log and keep the rows up to and including ``up_to_step``."""
        rows = read_metrics(uri) if storage.exists(uri) else []
        return cls(uri, [r for r in rows if r.get("step", 0) <= up_to_step])

    def append(self, row: dict[str, Any]) -> None:
        """Add one step's metrics (plain numbers and strings)."""
        self.rows.append(row)

    def flush(self) -> None:
        """Write the whole log to ``uri`` (atomically)."""
        storage.write_text(self.uri, "".join(json.dumps(r) + "\n" for r in self.rows))


def read_metrics(uri: str) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file."""
    text = storage.read_text(uri)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def plot_losses(rows: list[dict[str, Any]], out_uri: str, title: str = "training loss") -> str:
    """Plot loss, llm_loss and tts_loss against the step into a PNG at ``out_uri``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key in LOSS_KEYS:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=key, marker="." if len(points) < 50 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return storage.write_bytes(out_uri, buf.getvalue())
