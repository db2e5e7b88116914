"""``opens2s cluster ...`` commands: render and check the KubeRay manifests."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("render")
def render(
    config: Path = typer.Option(..., "--config", help="Platform config YAML."),
    out: Path = typer.Option(Path("cluster/generated"), "--out", help="Output directory."),
) -> None:
    """Render RayCluster, RayJobs, RayService and the launcher YAML; validate each; write them."""
    from opens2s.cluster import ManifestError, write_cluster_files
    from opens2s.config import ConfigError, load_config

    try:
        cfg = load_config(config)
        paths = write_cluster_files(cfg, out)
    except (ConfigError, ManifestError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    for p in paths:
        typer.echo(f"wrote {p}")
    typer.echo(f"{len(paths)} files valid against the KubeRay CRDs / Ray launcher schema: {out}")


@app.command("validate")
def validate(files: list[Path] = typer.Argument(..., help="KubeRay manifest YAML files.")) -> None:
    """Check KubeRay manifests against the CRD schemas; print each wrong field's path."""
    import yaml

    from opens2s.cluster import manifest_problems

    bad = 0
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc or not str(doc.get("apiVersion", "")).startswith("ray.io/"):
                continue
            problems = manifest_problems(doc)
            for p in problems:
                typer.echo(f"{f}: {p}", err=True)
            bad += bool(problems)
            if not problems:
                typer.echo(f"{f}: {doc['kind']} {doc['metadata']['name']} ok")
    if bad:
        raise typer.Exit(1)
