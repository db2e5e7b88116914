"""``opens2s corpus ...`` commands: build a corpus, print a corpus's summary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("build")
def build(
    config: Path = typer.Option(..., "--config", help="Platform config YAML."),
    output: str | None = typer.Option(None, help="Corpus root (path or s3://); data.output.uri."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. data.workers=4 (repeatable)."),
) -> None:
    """Build the corpus (resumes a killed run: complete shards are skipped)."""
    import ray

    from opens2s.cli.train import parse_overrides
    from opens2s.config import ConfigError, load_config
    from opens2s.data.pipeline import EmptyCorpusError, build_corpus

    overrides = parse_overrides(set_)
    if output:
        overrides["data.output.uri"] = output
    try:
        cfg = load_config(config, overrides)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local")
    try:
        build_corpus(cfg, log=typer.echo)
    except EmptyCorpusError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


@app.command("stats")
def stats(
    root: str = typer.Argument(..., help="Corpus root (local path or s3://)."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json as it is."),
) -> None:
    """Print the summary of a built corpus."""
    from opens2s.data.summary import format_summary, read_summary

    try:
        summary = read_summary(root)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="DIR") from e
    typer.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


@app.command("continuation")
def continuation(
    config: Path = typer.Option(..., "--config", help="Platform config YAML."),
    manifest: str | None = typer.Option(None, help="ASR/SER manifest; continuation.manifest."),
    output: str | None = typer.Option(None, help="Root (path or s3://); continuation.output_uri."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. continuation.workers=2."),
) -> None:
    """Build the continuation corpus (speech understanding) from an ASR/SER manifest; resumes."""
    import ray

    from opens2s.cli.train import parse_overrides
    from opens2s.config import ConfigError, load_config
    from opens2s.data.continuation import EmptyContinuationError, build_continuation
    from opens2s.data.continuation_manifest import ManifestError

    overrides = parse_overrides(set_)
    if output:
        overrides["continuation.output_uri"] = output
    try:
        cfg = load_config(config, overrides)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local")
    try:
        build_continuation(cfg, manifest=manifest, log=typer.echo)
    except (EmptyContinuationError, ManifestError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


@app.command("import-asr")
def import_asr(
    folder: Path = typer.Argument(..., help="Folder of audio files with transcripts."),
    out: str | None = typer.Option(None, help="Manifest to write (default FOLDER/manifest.jsonl)."),
) -> None:
    """Make an ASR manifest from a folder: ``x.wav`` + ``x.txt``, or LibriSpeech ``*.trans.txt``.
    Unusable files are listed with the reason (and in ``<manifest>.problems.jsonl``)."""
    from opens2s import storage
    from opens2s.data.continuation_manifest import ManifestError, import_asr_dir, write_manifest

    try:
        rows, problems = import_asr_dir(folder)
    except ManifestError as e:
        raise typer.BadParameter(str(e), param_hint="FOLDER") from e
    target = out or str(folder / "manifest.jsonl")
    write_manifest(target, rows)
    storage.write_text(target + ".problems.jsonl", "".join(json.dumps(p) + "\n" for p in problems))
    for p in problems:
        typer.echo(f"skipped {p['path']}: {p['reason']}", err=True)
    typer.echo(f"{target}: {len(rows)} utterances, {len(problems)} problems")
    if not rows:
        raise typer.Exit(1)


@app.command("import-opens2s")
def import_opens2s(
    files: list[Path] = typer.Argument(..., help="Released OpenS2S dataset JSONL files."),
    into: str = typer.Option(..., "--into", help="Corpus root to add the records to."),
    audio_root: Path | None = typer.Option(
        None, help="Where relative audio paths start (default: each file's folder)."
    ),
    unit_vocab: int = typer.Option(16384, help="Unit vocabulary (GLM-4-Voice: 16384)."),
    shard_size: int = typer.Option(100, help="Records per new shard."),
) -> None:
    """Import a local copy of the released OpenS2S dataset (its JSONL layout) into a corpus, in
    new shards beside generated data; refused lines are listed with the reason."""
    from opens2s.data.import_released import import_released

    try:
        report = import_released(
            files, into, audio_root=audio_root, shard_size=shard_size, unit_vocab_size=unit_vocab
        )
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="FILES") from e
    for q in report.refused:
        typer.echo(f"refused {q['id']}: {q['reason']}", err=True)
    typer.echo(
        f"{into}: {report.records} records imported into shards {report.shards}, "
        f"{len(report.refused)} refused, {report.already_imported} already there"
    )
