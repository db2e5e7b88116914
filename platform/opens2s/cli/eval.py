"""``opens2s eval``: score a model on a spoken eval set; ``opens2s eval compare A B``."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(invoke_without_command=True, no_args_is_help=False)


@app.callback()
def evaluate(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", help="Platform config YAML."),
    checkpoint: str | None = typer.Option(
        None,
        "--checkpoint",
        help="Model directory, exported or released (local or s3://); default: the run's export "
        "<run_dir>/model, else model.checkpoint.",
    ),
    eval_set: str | None = typer.Option(
        None,
        "--eval-set",
        help="A .jsonl eval set or a corpus root (its held-out split); default: eval.eval_set, "
        "else the run's corpus.",
    ),
    out: str | None = typer.Option(None, "--out", help="Output folder; default <run_dir>/eval."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config value, e.g. --set eval.max_items=4 (repeatable)."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="Show Ray's logs on the terminal (default: <run_dir>/logs/)."
    ),
) -> None:
    """Ask a model every spoken question of an eval set (a Ray Data job) and score the answers:
    latency, speech-text consistency, reference match, voice, emotion, empathy (docs/eval.md)."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise typer.BadParameter("--config is required", param_hint="--config")
    from opens2s import storage
    from opens2s.cli.train import parse_overrides
    from opens2s.config import ConfigError, load_config

    try:
        cfg = load_config(config, parse_overrides(overrides))
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    exported = storage.join(cfg.run_dir, "model")
    model_dir = checkpoint or (
        exported
        if storage.exists(storage.join(exported, "config.json"))
        else cfg.model.checkpoint or exported
    )
    if not storage.exists(storage.join(model_dir, "config.json")):
        typer.echo(
            f"error: {model_dir} holds no config.json: give --checkpoint a model directory "
            "(exported by training or the released model)",
            err=True,
        )
        raise typer.Exit(2)
    from opens2s.evaluation.job import eval_dir, run_eval
    from opens2s.pipeline.console import plain_console, quiet_console
    from opens2s.pipeline.local import start_local_ray

    console = plain_console() if verbose else quiet_console(cfg.run_dir)
    if console.log_file is not None:
        console.echo(f"Ray's and the libraries' logs: {console.log_file}")
    start_local_ray()
    try:
        run_eval(cfg, model_dir, out or eval_dir(cfg), eval_set, log=console.echo)
    except (ValueError, FileNotFoundError) as e:
        console.echo(f"error: {e}", error=True)
        raise typer.Exit(2) from e


@app.command("compare")
def compare(
    a: str = typer.Argument(..., help="Run A: a run dir, its eval/ dir or an eval.json."),
    b: str = typer.Argument(..., help="Run B (compared with A)."),
) -> None:
    """Print how run B's scores differ from run A's."""
    from opens2s.evaluation.report import compare as compare_runs
    from opens2s.evaluation.report import read_result

    try:
        ra, rb = read_result(a), read_result(b)
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    for line in compare_runs(ra, rb):
        typer.echo(line)
