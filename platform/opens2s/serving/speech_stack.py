"""What a model replica runs, built from the config: model + streaming decoder, vocoder, voices.

The one place where serving meets ``opens2s.model`` and ``opens2s.audio``: a model directory (an
export of training, or the released model) or a preset, its unit tokenizer turned into a vocoder,
speaker embeddings by voice name, and the VAD the ingress runs per session.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opens2s.config import AudioSection, PlatformConfig
from opens2s.config.serve import VocoderBlocks
from opens2s.serving.decode_loop import TurnRequest

log = logging.getLogger(__name__)

FIRST_BLOCK_GRIFFIN_LIM_ITERS = 4
"""Griffin-Lim iterations of the growing schedule's first block (later blocks: the config's).
Trade-off (18 espeak utterances): the first chunk's 80 ms is rougher, log-mel error vs its units
0.214 nats (0.160 at 32 iterations, 0.192 at 8); it saves ~8 ms of time to first audio."""


@dataclass
class SpeechStack:
    """Model, decoder and vocoder of one replica, and the voices it knows."""

    decoder: Any
    unit_tokenizer: Any
    """The k-means tokenizer whose units the Griffin-Lim vocoder inverts; None when the model
    speaks GLM-4-Voice units (``audio.glm4voice_decoder_path`` decodes them)."""
    audio_cfg: AudioSection
    sampling_defaults: dict[str, Any]
    voices: dict[str, np.ndarray] = field(default_factory=dict)
    default_voice: np.ndarray | None = None
    description: str = ""
    _vocoders: dict[tuple[str, int], Any] = field(default_factory=dict)

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

    def vocoder_for(self, blocks: VocoderBlocks) -> Any:
        """The vocoder whose streams cut blocks as ``blocks`` says (cached per schedule)."""
        from opens2s.audio.units import MelKMeansUnits
        from opens2s.audio.vocoder import GriffinLimVocoder, vocoder_for

        key = (blocks.schedule, blocks.fixed_units)
        if key not in self._vocoders:
            a = self.audio_cfg
            if self.unit_tokenizer is None:  # GLM-4-Voice units: its flow + HiFT decoder
                from opens2s.audio.vocoder import vocoder_from_config

                model = getattr(self.decoder, "model", None)
                device = str(next(model.parameters()).device) if model is not None else "cpu"
                fixed = (max(blocks.fixed_units, 10),) if blocks.schedule == "fixed" else None
                self._vocoders[key] = vocoder_from_config(a, device=device, block_schedule=fixed)
            elif isinstance(self.unit_tokenizer, MelKMeansUnits):
                if blocks.schedule == "fixed":  # the OpenS2S baseline: every block alike
                    n = blocks.fixed_units
                    overrides = {
                        "first_block_units": n,
                        "second_block_units": n,
                        "max_block_units": n,
                        "first_overlap_units": a.vocoder_overlap_units,
                    }
                else:
                    overrides = {
                        "first_block_iters": min(FIRST_BLOCK_GRIFFIN_LIM_ITERS, a.griffin_lim_iters)
                    }
                self._vocoders[key] = GriffinLimVocoder.from_config(
                    self.unit_tokenizer, a, **overrides
                )
            else:  # a neural decoder streams with its own schedule
                self._vocoders[key] = vocoder_for(self.unit_tokenizer, a)
        return self._vocoders[key]


def _model_dir(cfg: PlatformConfig) -> str | None:
    return cfg.serve.model_dir or cfg.model.checkpoint


MODEL_CACHE_ROOT = Path(tempfile.gettempdir()) / "opens2s-serve-models"


def model_cache_dir(src: str) -> Path:
    """The local directory a remote model ``src`` is copied to: one per URI, so that files of
    one model never mix with another's (``<temp>/opens2s-serve-models/<name>-<hash of URI>``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", src.rstrip("/").rsplit("/", 1)[-1])[:64] or "model"
    return MODEL_CACHE_ROOT / f"{name}-{hashlib.sha256(src.encode()).hexdigest()[:16]}"


def model_cache_copy(src: str, copy_to_local: Any) -> Path:
    """A fresh local copy of remote model ``src`` in :func:`model_cache_dir`: copied into a new
    sibling first and swapped in, so no file of an earlier copy (or an earlier upload to the
    same URI) stays behind and a failed copy leaves no half directory."""
    target = model_cache_dir(src)
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        copy_to_local(src, fresh)
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        if target.exists():
            target.rename(old)
        fresh.rename(target)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


def load_speech_stack(cfg: PlatformConfig) -> SpeechStack:
    """Build the replica's stack from the config (model dir, else preset), on ``model.device``
    in ``model.dtype``."""
    import torch

    from opens2s.audio.units import load_unit_tokenizer
    from opens2s.model import build_model, build_tokenizer, load_model
    from opens2s.model.streaming import StreamingDecoder
    from opens2s.storage import copy_to_local

    src = _model_dir(cfg)
    device, dtype = cfg.model.device, getattr(torch, cfg.model.dtype)
    tok_path: Path | None = None
    voices: dict[str, np.ndarray] = {}
    if src is not None:
        local = model_cache_copy(src, copy_to_local) if "://" in src else Path(src)
        model, tokenizer = load_model(local, device=device, dtype=dtype)
        if (local / "units" / "tokenizer.npz").is_file():
            tok_path = local / "units" / "tokenizer.npz"
        for f in (
            sorted((local / "speakers").glob("*.npy")) if (local / "speakers").is_dir() else []
        ):
            voices[f.stem] = np.load(f).astype(np.float32)
        description = f"{local.name} (from {src}) on {device} in {cfg.model.dtype}"
    else:
        model = build_model(
            cfg.model.preset,
            seed=cfg.model.seed,
            device=device,
            dtype=dtype,
            section=cfg.model,
            audio=cfg.audio,
        )
        tokenizer = build_tokenizer(cfg.model.preset)
        description = (
            f"preset {cfg.model.preset} (random init, seed {cfg.model.seed}) on {device} in "
            f"{cfg.model.dtype}"
        )
    model.eval()
    if cfg.serve.unit_tokenizer is not None:
        tok_path = Path(cfg.serve.unit_tokenizer)
    unit_tokenizer = None
    if tok_path is not None:
        unit_tokenizer = load_unit_tokenizer(tok_path)
    elif cfg.audio.glm4voice_decoder_path:
        log.info("units go to the GLM-4-Voice decoder at %s", cfg.audio.glm4voice_decoder_path)
    elif src is not None:
        raise FileNotFoundError(
            f"no vocoder for {src}'s units: it has no units/tokenizer.npz (k-means units); set "
            "audio.glm4voice_decoder_path to a glm-4-voice-decoder directory (GLM-4-Voice "
            "units, as the released model speaks) or serve.unit_tokenizer to a tokenizer.npz"
        )
    else:
        unit_tokenizer = load_unit_tokenizer(demo_unit_tokenizer(cfg))
    if unit_tokenizer is not None and unit_tokenizer.codebook_size != model.config.unit_vocab_size:
        raise ValueError(
            f"the model speaks {model.config.unit_vocab_size} units but the vocoder's unit "
            f"tokenizer has {unit_tokenizer.codebook_size}: use the tokenizer the model was "
            "trained with (its corpus's units/tokenizer.npz)"
        )
    s = cfg.serve.sampling
    defaults = dict(
        temperature=s.temperature,
        top_p=s.top_p,
        unit_temperature=s.unit_temperature,
        unit_top_p=s.unit_top_p,
        seed=s.seed,
        max_text_tokens=s.max_text_tokens,
        max_units=s.max_units,
    )
    return SpeechStack(
        decoder=StreamingDecoder(model, tokenizer),
        unit_tokenizer=unit_tokenizer,
        audio_cfg=cfg.audio,
        sampling_defaults=defaults,
        voices=voices,
        default_voice=voices.get(cfg.audio.assistant_speaker),
        description=description,
    )


def make_vad(cfg: PlatformConfig) -> Any:
    """A fresh end-of-turn detector for one realtime session."""

    from opens2s.audio.vad import build_vad

    return build_vad(cfg.audio, sr=16000)


DEMO_SENTENCES = (
    "I had a really long day at work today.",
    "Thank you so much for listening to me.",
    "That sounds hard, and it makes sense that you feel tired.",
    "What would help you the most right now?",
    "We could take a short walk and talk about it.",
    "I am so happy for you, that is wonderful news!",
)


def demo_unit_tokenizer(cfg: PlatformConfig, path: Path | None = None) -> Path:
    """A unit tokenizer for serving a random-init preset with no corpus: k-means fitted on a
    minute of espeak-ng speech (seconds on a CPU), cached at ``path`` (default: the temp dir)."""
    import tempfile

    from opens2s.audio.io import resample
    from opens2s.audio.tts import EspeakTTS
    from opens2s.audio.units import MelKMeansUnits

    k, rate = cfg.audio.codebook_size, cfg.audio.unit_rate
    path = path or Path(tempfile.gettempdir()) / f"opens2s-demo-units-{k}-{rate:g}.npz"
    if path.is_file():
        return path
    tts = EspeakTTS()
    speakers = tts.speakers()
    waves = []
    seconds_needed = 1.5 * k / rate
    i = 0
    while sum(w.size for w in waves) < seconds_needed * 16000:
        wave, sr = tts.synthesize(
            DEMO_SENTENCES[i % len(DEMO_SENTENCES)], speakers[i % len(speakers)]
        )
        waves.append(resample(wave, sr, 16000))
        i += 1
    log.info("fitting a demo unit tokenizer (%d units) on %d espeak utterances", k, len(waves))
    tok = MelKMeansUnits(codebook_size=k, unit_rate=rate).fit(waves, passes=2, seed=0)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.npz")
    tok.save(tmp)
    tmp.replace(path)  # atomic: replicas starting together never read half a file
    return path


def make_transcriber(cfg: PlatformConfig) -> Any:
    """The ingress's transcriber of user turns (Whisper from ``audio.asr_model_path``, else the
    packaged tiny.en), one torch-free CTranslate2 thread."""
    from opens2s.audio.asr import Transcriber

    return Transcriber(cfg.audio.asr_model_path, beam_size=cfg.audio.asr_beam_size, cpu_threads=1)
