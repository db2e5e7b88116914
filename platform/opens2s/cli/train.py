"""``opens2s train`` command."""

from __future__ import annotations

from pathlib import Path

import typer


def train(config: Path = typer.Option(..., "--config", help="Platform config YAML.")) -> None:
    """Not built yet."""
    raise typer.Exit(f"opens2s train is not built yet")
