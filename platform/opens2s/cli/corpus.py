"""``opens2s corpus ...`` commands: build a corpus, print its summary, speak a sentence with its
TTS, build continuation data, import released or ASR data."""

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


@app.command("speak")
def speak(
    text: str = typer.Argument(..., help="The sentence to speak."),
    config: Path | None = typer.Option(None, "--config", help="Platform config YAML."),
    speaker: str | None = typer.Option(None, help="A speaker of the TTS; default: the first."),
    emotion: list[str] = typer.Option([], "--emotion", help="Repeatable; default: every one."),
    intensity: float = typer.Option(1.0, help="Emotion intensity (0 = neutral)."),
    out: Path = typer.Option(Path("speak"), help="Directory for the .wav files."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. audio.tts_engine=cosyvoice2."),
) -> None:
    """Speak one sentence with the corpus TTS (audio.tts_engine) in each emotion, write the wavs
    and check each against the speaker's neutral rendering with the corpus's prosody rule: a
    quick look at a TTS setup (e.g. a CosyVoice2 directory and its speaker prompts) before a
    corpus job."""
    from opens2s.audio.io import AudioError, write_audio
    from opens2s.audio.prosody import measure_prosody, verify_emotion
    from opens2s.audio.tts import EMOTIONS, TTSError, build_tts, speaker_names
    from opens2s.cli.train import parse_overrides
    from opens2s.config import ConfigError, load_config

    try:
        cfg = load_config(config, parse_overrides(set_))
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    unknown = [e for e in emotion if e not in EMOTIONS]
    if unknown:
        raise typer.BadParameter(f"{unknown}: known emotions are {', '.join(EMOTIONS)}")
    try:
        names = speaker_names(cfg.audio)
        who = speaker or next((n for n in names if n != cfg.audio.assistant_speaker), names[0])
        if who not in names:
            raise typer.BadParameter(f"{who!r} is not a speaker; known: {', '.join(names)}")
        tts = build_tts(cfg.audio)
        out.mkdir(parents=True, exist_ok=True)
        neutral_wave, sr = tts.synthesize(text, who, "neutral", 1.0)
        write_audio(out / f"{who}-neutral.wav", neutral_wave, sr)
        neutral = measure_prosody(neutral_wave, sr)
        typer.echo(f"{cfg.audio.tts_engine}, speaker {who}: {out}/{who}-<emotion>.wav")
        typer.echo(f"  neutral    {len(neutral_wave) / sr:5.2f} s  (the reference)")
        for name in emotion or [e for e in EMOTIONS if e != "neutral"]:
            wave, sr = tts.synthesize(text, who, name, intensity)
            write_audio(out / f"{who}-{name}.wav", wave, sr)
            verdict = verify_emotion(measure_prosody(wave, sr), neutral, name)
            changes = ", ".join(f"{k} {v:+.2f}" for k, v in verdict.changes.items())
            status = "agrees" if verdict.agrees else f"DISAGREES: {verdict.reason}"
            typer.echo(f"  {name:<10} {len(wave) / sr:5.2f} s  {status}  ({changes})")
    except (TTSError, AudioError) as e:
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
