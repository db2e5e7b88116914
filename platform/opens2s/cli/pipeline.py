"""``opens2s pipeline`` command."""

from __future__ import annotations

from pathlib import Path

import typer


def pipeline(config: Path = typer.Option(..., "--config", help="Platform config YAML.")) -> None:
    """Not built yet."""
    raise typer.Exit(f"opens2s pipeline is not built yet")
