"""``opens2s serve --config``: start the Serve application locally (or on the Ray cluster at
RAY_ADDRESS) and keep it up until Ctrl-C."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer


def serve(
    config: Path | None = typer.Option(
        None, "--config", help="Platform config YAML (default: the embedded tiny config)."
    ),
    port: int | None = typer.Option(None, help="HTTP port (default: serve.port of the config)."),
    host: str | None = typer.Option(None, help="HTTP host (default: serve.host of the config)."),
    block: bool = typer.Option(True, help="Keep serving until Ctrl-C (--no-block: deploy, exit)."),
    model_dir: str | None = typer.Option(
        None,
        "--model-dir",
        help="A model directory to serve (e.g. <run_dir>/model of a pipeline run, or the "
        "released OpenS2S directory); default: serve.model_dir, else model.checkpoint, else "
        "the random-init preset.",
    ),
) -> None:
    """Deploy the OpenS2S app (WebSocket /v1/realtime, POST /v1/speech, web page at /)."""
    import ray
    from ray import serve as ray_serve

    from opens2s.config import ConfigError, load_config
    from opens2s.serving.app import build_app

    try:
        cfg = load_config(config, {"serve.model_dir": model_dir} if model_dir else None)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    s = cfg.serve
    host = host or s.host
    port = s.port if port is None else port
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if not address:  # the local proxy inherits it: WebSocket messages capped at 1 MiB
            from opens2s.serving.proxy_limits import proxy_environment

            for key, value in proxy_environment().items():
                os.environ.setdefault(key, value)
        ray.init(address=address or "local", namespace="serve" if address else None)
    ray_serve.start(http_options={"host": host, "port": port})
    t0 = time.monotonic()
    typer.echo(
        f"deploying {s.app_name} ({s.model_dir or cfg.model.checkpoint or cfg.model.preset})"
    )
    ray_serve.run(build_app(cfg), name=s.app_name, route_prefix=s.route_prefix, blocking=False)
    base = f"http://{host}:{port}{s.route_prefix.rstrip('/')}"
    typer.echo(f"ready in {time.monotonic() - t0:.1f} s")
    typer.echo(f"  web page   {base}/")
    typer.echo(f"  realtime   ws://{host}:{port}{s.route_prefix.rstrip('/')}/v1/realtime")
    typer.echo(f"  speech     POST {base}/v1/speech  (audio file body → NDJSON events)")
    typer.echo(f"  health     {base}/healthz")
    if not block:
        return
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("shutting down")
        ray_serve.shutdown()
