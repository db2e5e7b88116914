"""What a model replica runs, built from the config: model + streaming decoder, vocoder, voices.

The one place where serving meets ``opens2s.model`` and ``opens2s.audio``: a model directory (an
export of training, or the released model) or a preset, its unit tokenizer turned into a vocoder,
speaker embeddings by voice name, and the VAD the ingress runs per session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opens2s.config import PlatformConfig
from opens2s.serving.decode_loop import TurnRequest

log = logging.getLogger(__name__)


@dataclass
class SpeechStack:
    """Model, decoder and vocoder of one replica, and the voices it knows."""

    decoder: Any
    vocoder: Any
    sampling_defaults: dict[str, Any]
    voices: dict[str, np.ndarray] = field(default_factory=dict)
    default_voice: np.ndarray | None = None
    description: str = ""

    def start(self, req: TurnRequest) -> Any:
        """Prefill one turn; returns the decoder's per-session state."""
        from opens2s.model.streaming import SamplingParams

        if req.voice is not None and req.voice not in self.voices:
            raise ValueError(f"unknown voice {req.voice!r}; known: {sorted(self.voices) or 'none'}")
        spk = self.voices[req.voice] if req.voice is not None else self.default_voice
        sampling = SamplingParams(**(self.sampling_defaults | req.sampling))
        return self.decoder.start(
            req.audio,
            history=req.history,
            system_prompt=req.system_prompt,
            speaker_embedding=spk,
            sampling=sampling,
        )

    def step(self, states: list[Any]) -> list[list[Any]]:
        """One batched decoder step over the sessions' states."""
        return self.decoder.step(states)


def _model_dir(cfg: PlatformConfig) -> str | None:
    return cfg.serve.model_dir or cfg.model.checkpoint


def load_speech_stack(cfg: PlatformConfig) -> SpeechStack:
    """Build the replica's stack from the config (model dir, else preset)."""
    from opens2s.audio.units import load_unit_tokenizer
    from opens2s.audio.vocoder import vocoder_for
    from opens2s.model import build_model, build_tokenizer, load_model
    from opens2s.model.streaming import StreamingDecoder
    from opens2s.storage import copy_to_local

    src = _model_dir(cfg)
    tok_path: Path | None = None
    voices: dict[str, np.ndarray] = {}
    if src is not None:
        local = (
            Path(copy_to_local(src, Path("/tmp/opens2s-serve-models")))
            if "://" in src
            else Path(src)
        )
        model, tokenizer = load_model(local)
        if (local / "units" / "tokenizer.npz").is_file():
            tok_path = local / "units" / "tokenizer.npz"
        for f in (
            sorted((local / "speakers").glob("*.npy")) if (local / "speakers").is_dir() else []
        ):
            voices[f.stem] = np.load(f).astype(np.float32)
        description = f"{local.name} (from {src})"
    else:
        model = build_model(cfg.model.preset, seed=cfg.model.seed)
        tokenizer = build_tokenizer(cfg.model.preset)
        description = f"preset {cfg.model.preset} (random init, seed {cfg.model.seed})"
    model.eval()
    if cfg.serve.unit_tokenizer is not None:
        tok_path = Path(cfg.serve.unit_tokenizer)
    if tok_path is None:
        raise FileNotFoundError(
            f"no unit tokenizer for the vocoder: {src or 'the preset'} has no units/tokenizer.npz; "
            "set serve.unit_tokenizer to a tokenizer.npz (e.g. <corpus>/units/tokenizer.npz)"
        )
    vocoder = vocoder_for(load_unit_tokenizer(tok_path))
    s = cfg.serve.sampling
    defaults = dict(
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed,
        max_text_tokens=s.max_text_tokens,
        max_units=s.max_units,
    )
    return SpeechStack(
        decoder=StreamingDecoder(model, tokenizer),
        vocoder=vocoder,
        sampling_defaults=defaults,
        voices=voices,
        default_voice=voices.get(cfg.audio.assistant_speaker),
        description=description,
    )


def make_vad(cfg: PlatformConfig) -> Any:
    """A fresh end-of-turn detector for one realtime session."""
    from opens2s.audio.vad import EndOfTurnDetector

    return EndOfTurnDetector(sr=cfg.audio.sample_rate, silence_ms=cfg.audio.vad_silence_ms)
