"""``opens2s model ...`` commands: inspect a model, talk to it with one audio file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("info")
def info(
    preset: str = typer.Option("tiny", "--preset", help="tiny | opens2s-8b (built on meta)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A model directory."),
) -> None:
    """Parameter counts per component, interleave strategy, unit vocabulary and rate."""
    from opens2s.model import PRESETS, build_model, load_model

    if checkpoint is not None:
        try:
            model, _ = load_model(checkpoint)
        except (OSError, ValueError) as e:
            raise typer.BadParameter(f"--checkpoint {checkpoint}: {e}") from e
        source = str(checkpoint)
    else:
        if preset not in PRESETS:
            raise typer.BadParameter(f"--preset {preset!r}: expected one of {list(PRESETS)}")
        # The big preset is built on the meta device: counts without allocating weights.
        model = build_model(preset, device="meta" if preset != "tiny" else "cpu")
        source = f"preset {preset}"
    c = model.config
    counts = model.component_parameters()
    typer.echo(f"OpenS2S model ({source})")
    for name, n in counts.items():
        typer.echo(f"  {name:<14} {n:>15,d}  ({n / 1e6:,.1f} M)")
    typer.echo(
        f"  audio encoder  {c.audio_encoder_config.model_type}, d_model "
        f"{c.audio_encoder_config.d_model} x {c.audio_encoder_config.encoder_layers}"
    )
    typer.echo(
        f"  llm            {c.llm_config.model_type}, hidden {c.llm_config.hidden_size} x "
        f"{c.llm_config.num_hidden_layers}, vocab {c.llm_config.vocab_size}"
    )
    typer.echo(
        f"  tts lm         {c.tts_lm_config.model_type}, hidden "
        f"{c.tts_lm_config.hidden_size} x {c.tts_lm_config.num_hidden_layers}, "
        f"{c.unit_vocab_size} units + specials (end of speech = {c.tts_eos_token_id})"
    )
    typer.echo(f"  interleave     {c.interleave_strategy} (text states : units)")
    typer.echo(f"  unit rate      {c.unit_rate} units/s; speaker embedding {c.spk_emb_dim}-d")


@app.command("chat")
def chat(
    audio: Path = typer.Option(..., "--audio", help="The user's utterance (WAV/FLAC/OGG/MP3)."),
    out: Path = typer.Option(..., "--out", help="Where to write the spoken answer (.wav)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A model directory."),
    preset: str = typer.Option("tiny", "--preset", help="Random-init preset if no checkpoint."),
    temperature: float = typer.Option(0.0, help="Text sampling temperature; 0 = greedy."),
    top_p: float = typer.Option(1.0, help="Text top-p."),
    unit_temperature: float = typer.Option(
        0.0, help="Speech-unit temperature; 0 = greedy (upstream OpenS2S samples at 1.0)."
    ),
    unit_top_p: float = typer.Option(1.0, help="Speech-unit top-p."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16 (bf16 on CUDA)."),
    glm4voice_decoder: Path | None = typer.Option(
        None, help="A glm-4-voice-decoder directory: vocode GLM-4-Voice units (released model)."
    ),
    max_text_tokens: int = typer.Option(128),
    max_units: int = typer.Option(1024),
    speaker_embedding: Path | None = typer.Option(None, help=".npy speaker embedding."),
) -> None:
    """Answer one spoken turn: stream the text to the terminal, write the speech to ``--out``.

    Units become audio with ``--glm4voice-decoder`` (GLM-4-Voice units, as the released model
    speaks) or the unit tokenizer saved beside the model (``units/tokenizer.npz``); without
    either the units and text are written to ``OUT.units.json`` instead.
    """
    import numpy as np
    import torch

    from opens2s.audio.io import AudioError, load_audio
    from opens2s.model import build_model, build_tokenizer, load_model
    from opens2s.model.streaming import Done, SamplingParams, StreamingDecoder, TextDelta, UnitChunk

    try:
        wave = load_audio(audio, 16000)
    except AudioError as e:
        raise typer.BadParameter(f"--audio: {e}") from e
    if dtype not in ("float32", "bfloat16", "float16"):
        raise typer.BadParameter(f"--dtype {dtype!r}: expected float32, bfloat16 or float16")
    torch_dtype = getattr(torch, dtype)
    if checkpoint is not None:
        try:
            model, tokenizer = load_model(checkpoint, device=device, dtype=torch_dtype)
        except (OSError, ValueError, RuntimeError) as e:
            raise typer.BadParameter(f"--checkpoint {checkpoint}: {e}") from e
    elif preset == "tiny":
        model = build_model("tiny", device=device, dtype=torch_dtype)
        tokenizer = build_tokenizer("tiny")
    else:
        raise typer.BadParameter(f"--preset {preset!r} needs --checkpoint (no bundled weights)")
    spk = np.load(speaker_embedding) if speaker_embedding is not None else None
    try:
        sampling = SamplingParams(
            temperature,
            top_p,
            seed,
            max_text_tokens,
            max_units,
            unit_temperature=unit_temperature,
            unit_top_p=unit_top_p,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    decoder = StreamingDecoder(model, tokenizer)

    t0 = time.perf_counter()
    first_unit_s = None
    text, units, reason = "", [], ""
    for event in decoder.decode(wave, speaker_embedding=spk, sampling=sampling):
        if isinstance(event, TextDelta):
            text += event.text
            typer.echo(event.text, nl=False)
        elif isinstance(event, UnitChunk):
            first_unit_s = first_unit_s or time.perf_counter() - t0
            units += event.units
        elif isinstance(event, Done):
            reason = event.reason
    elapsed = time.perf_counter() - t0
    typer.echo("")

    out.parent.mkdir(parents=True, exist_ok=True)
    vocoded = _vocode(checkpoint, units, out, glm4voice_decoder, device)
    if not vocoded:
        side = out.with_suffix(".units.json")
        side.write_text(json.dumps({"text": text, "units": units, "reason": reason}))
        typer.echo(f"no unit tokenizer/vocoder next to the model: wrote text + units to {side}")
    first = f"{first_unit_s * 1000:.0f} ms" if first_unit_s is not None else "n/a"
    typer.echo(
        f"done ({reason}): {len(text)} chars, {len(units)} units, first unit after {first}, "
        f"{elapsed:.2f} s total" + (f"; audio in {out}" if vocoded else "")
    )


def _vocode(
    checkpoint: Path | None,
    units: list[int],
    out: Path,
    glm4voice_decoder: Path | None,
    device: str = "cpu",
) -> bool:
    """Write ``units`` as audio with the GLM-4-Voice decoder or the model dir's unit tokenizer;
    False when there is neither."""
    from opens2s.audio.io import write_audio

    if glm4voice_decoder is not None:
        from opens2s.audio.vocoder import GLM4VoiceDecoder

        vocoder = GLM4VoiceDecoder(glm4voice_decoder, device=device)
        write_audio(out, vocoder.decode(units), vocoder.sample_rate)
        return True
    if checkpoint is None or not (checkpoint / "units" / "tokenizer.npz").is_file():
        return False
    from opens2s.audio.units import load_unit_tokenizer
    from opens2s.audio.vocoder import vocoder_for

    vocoder = vocoder_for(load_unit_tokenizer(checkpoint / "units" / "tokenizer.npz"))
    write_audio(out, vocoder.decode(units), vocoder.sample_rate)
    return True
