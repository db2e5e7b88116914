"""``opens2s train`` command: every stage of the config's ``train`` section, then export."""

from __future__ import annotations

from pathlib import Path

import typer


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``["train.max_steps=5", ...]`` -> ``{"train.max_steps": 5}`` (values parsed as YAML)."""
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set {pair!r}: expected KEY=VALUE, e.g. train.max_steps=5")
        out[key.strip()] = yaml.safe_load(value)
    return out


def train(
    config: Path = typer.Option(..., "--config", help="Platform config YAML."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config value, e.g. --set train.max_steps=5 (repeatable)."
    ),
) -> None:
    """Train on the corpus with Ray Train + DeepSpeed; print a summary at the end."""
    from opens2s.config import ConfigError, load_config

    try:
        cfg = load_config(config, parse_overrides(overrides))
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    from opens2s.train import run_training

    summary = run_training(cfg)
    typer.echo(summary.render())
