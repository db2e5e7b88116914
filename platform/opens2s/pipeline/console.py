"""The pipeline's console: its own one-line-per-step log on the terminal, everything else in a file.

Ray's and DeepSpeed's logs, library warnings, Ray Data progress, worker output (forwarded to the
driver), C++ log lines and tracebacks of normal shutdowns all go to ``<run_dir>/logs/pipeline.log``:
file descriptors 1 and 2 of the process are pointed at that file, and the pipeline writes its own
lines through duplicates of the terminal's descriptors (and into the file too, for context).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from opens2s import storage


@dataclass
class Console:
    """Where the pipeline's own lines go: the terminal (``out``, ``err``) and the log file."""

    out: TextIO
    err: TextIO
    log_file: Path | None

    def line(self, msg: str) -> None:
        """One timestamped line on the terminal (and in the log file)."""
        text = f"{time.strftime('%H:%M:%S')} {msg}"
        self.out.write(text + "\n")
        self.out.flush()
        if self.log_file is not None:
            print(text, flush=True)  # fd 1 is the log file

    def echo(self, text: str, *, error: bool = False) -> None:
        """Text as it is (summaries, errors) on the terminal."""
        stream = self.err if error else self.out
        stream.write(text + "\n")
        stream.flush()
        if self.log_file is not None:
            print(text, flush=True)


def logs_dir(run_dir: str) -> Path:
    """``<run_dir>/logs`` for a local run dir; a local temporary folder for s3:// run dirs."""
    if storage.is_s3(run_dir):
        return Path(tempfile.mkdtemp(prefix="opens2s-logs-"))
    return Path(run_dir) / "logs"


def quiet_console(run_dir: str) -> Console:
    """Point fds 1 and 2 of this process at ``<logs>/pipeline.log`` for the rest of its life
    (Ray's own shutdown messages come at exit) and return the terminal's console."""
    folder = logs_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / "pipeline.log"
    sys.stdout.flush()
    sys.stderr.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return Console(out, err, log_file)


def plain_console() -> Console:
    """Everything on the terminal (``--verbose``)."""
    return Console(sys.stdout, sys.stderr, None)
