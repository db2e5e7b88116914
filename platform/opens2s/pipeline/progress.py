"""Progress of a training stage on the pipeline's console, read from its ``metrics.jsonl``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from opens2s import storage
from opens2s.train.metrics import read_metrics


class StageProgress:
    """Polls a stage's metrics log and writes a line each time another tenth of ``total`` steps
    is done (step, loss, elapsed time). Use as a context manager around the stage."""

    def __init__(
        self,
        metrics_uri: str,
        total: int,
        stage: str,
        log: Callable[[str], None],
        poll_s: float = 2.0,
    ) -> None:
        self.uri, self.total, self.stage, self.log, self.poll_s = (
            metrics_uri,
            total,
            stage,
            log,
            poll_s,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{stage}", daemon=True)
        self._next = max(1, total // 10)
        self._t0 = time.monotonic()

    def __enter__(self) -> StageProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                if not storage.exists(self.uri):
                    continue
                rows = read_metrics(self.uri)
            except Exception:  # a file being replaced, a flaky bucket: try again next poll
                continue
            if not rows:
                continue
            last = rows[-1]
            step = int(last.get("step", 0))
            if step < self._next or step >= self.total:
                continue
            self.log(
                f"[{self.stage}] step {step}/{self.total} ({100 * step // self.total}%), loss "
                f"{float(last.get('loss', float('nan'))):.3f}, "
                f"{time.monotonic() - self._t0:.0f} s"
            )
            tenth = max(1, self.total // 10)
            self._next = (step // tenth + 1) * tenth
