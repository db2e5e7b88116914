"""``opens2s pipeline`` command: corpus -> units -> training -> export -> serve -> one spoken turn."""

from __future__ import annotations

from pathlib import Path

import typer


def pipeline(
    config: Path = typer.Option(..., "--config", help="Platform config YAML."),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Ray dashboard address of an existing cluster (http://HOST:8265): run each step as a "
        "Ray job through the Jobs API instead of on an embedded local Ray.",
    ),
    first: str | None = typer.Option(None, "--from", help="First step to run."),
    until: str | None = typer.Option(None, "--until", help="Last step to run."),
    keep_serving: bool = typer.Option(
        False, "--keep-serving", help="Local mode: keep the Serve app up after the test turn."
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        help="Show Ray's, DeepSpeed's and the libraries' own logs on the terminal (default: "
        "they go to <run_dir>/logs/pipeline.log).",
    ),
) -> None:
    """Run the whole pipeline; steps whose outputs exist are skipped (rerun to resume)."""
    import time

    from opens2s.config import ConfigError, load_config
    from opens2s.pipeline.plan import steps_between
    from opens2s.pipeline.runner import PipelineError
    from opens2s.pipeline.summary import format_summary

    try:
        cfg = load_config(config)
        names = steps_between(first, until)
    except (ConfigError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e

    from opens2s.pipeline.console import plain_console, quiet_console

    console = plain_console() if verbose else quiet_console(cfg.run_dir)
    log = console.line
    if console.log_file is not None:
        log(f"Ray, DeepSpeed and library logs: {console.log_file}")

    t0 = time.perf_counter()
    where = f"Ray cluster {address} (Jobs API)" if address else "embedded local Ray"
    log(f"pipeline {' -> '.join(names)} on {where}; run_dir {cfg.run_dir}")
    error: PipelineError | None = None
    try:
        if address:
            from opens2s.pipeline.ray_jobs import run_steps_as_jobs

            manifest = run_steps_as_jobs(cfg, address, names, log=log)
        else:
            from opens2s.pipeline.local import run_local

            manifest = run_local(cfg, names, keep_serving=keep_serving, log=log)
    except PipelineError as e:
        error = e
    except Exception as e:  # not a step's failure: the pipeline itself broke
        import traceback

        traceback.print_exc()  # into the log file (fd 2) unless --verbose
        where = f" (traceback in {console.log_file})" if console.log_file else ""
        console.echo(f"error: {type(e).__name__}: {e}{where}", error=True)
        raise typer.Exit(1) from e
    from opens2s.pipeline.manifest import RunManifest
    from opens2s.pipeline.ray_jobs import cluster_config

    manifest = RunManifest.load(cluster_config(cfg).run_dir if address else cfg.run_dir)
    console.echo("")
    console.echo(format_summary(manifest))
    console.echo(f"total {time.perf_counter() - t0:.1f} s")
    if error is not None:
        where = f" (logs: {console.log_file})" if console.log_file else ""
        console.echo(f"error: {error}{where}", error=True)
        raise typer.Exit(1)
