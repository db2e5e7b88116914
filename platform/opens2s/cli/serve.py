"""``opens2s serve`` command."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(config: Path = typer.Option(..., "--config", help="Platform config YAML.")) -> None:
    """Not built yet."""
    raise typer.Exit(f"opens2s serve is not built yet")
