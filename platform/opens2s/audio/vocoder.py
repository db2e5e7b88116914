"""Vocoders: unit ids -> wave, offline and streamed block by block.

The CPU default, :class:`GriffinLimVocoder`, looks up each unit's k-means centroid (a few stacked
log-mel frames), maps mel magnitudes to linear ones with the filters' pseudo-inverse, and recovers
phase with fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99).

Streaming (:class:`GriffinLimStream`) renders blocks of units as they arrive: the first block is
small (first audio early), the second larger, and later ones double up to a maximum. Each block
is rendered with the last ``overlap`` units of the previous block as left context, its phase
initialised from the previous block's phase there, and the two renders of that overlap are
cross-faded (raised cosine),
so block seams do not click. The output depends only on the unit sequence, never on how it was
split into ``push`` calls. The last ``overlap`` units' audio is held back until the next block (or
``flush``) can cross-fade it; the first block holds back ``first_overlap_units`` (fewer: its audio
leaves sooner). The first block may run fewer Griffin-Lim iterations
(``first_block_iters``): it is what the listener waits for, and its held-back tail is rendered
again, at full iterations, by the next block.

:class:`GLM4VoiceDecoder` (:mod:`opens2s.audio.glm4voice_decoder`) is GLM-4-Voice's flow-matching +
HiFT decoder from a local directory, streamed by :class:`GLM4VoiceStream` under the same contract.
:func:`vocoder_from_config` picks the vocoder an ``audio`` section describes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch

from opens2s.audio.features import SpeechMelSpec, mel_filters
from opens2s.audio.glm4voice_decoder import GLM4VoiceDecoder, GLM4VoiceStream
from opens2s.audio.units import GLM4VoiceTokenizer, MelKMeansUnits, UnitError, UnitTokenizer
from opens2s.config.audio import AudioSection

_DEFAULTS = AudioSection()


class VocoderStream(Protocol):
    """One utterance being vocoded as its units arrive."""

    def push(self, units: Sequence[int]) -> np.ndarray:
        """Add units; return the samples that became ready (possibly none)."""
        ...

    def flush(self) -> np.ndarray:
        """End of the utterance: return every remaining sample."""
        ...


class Vocoder(Protocol):
    """Units -> wave at ``sample_rate``."""

    sample_rate: int

    def decode(self, units: Sequence[int]) -> np.ndarray:
        """The wave of a whole unit sequence."""
        ...

    def stream(self) -> VocoderStream:
        """A fresh streaming session."""
        ...


@lru_cache(maxsize=8)
def _mel_pinv(spec: SpeechMelSpec) -> torch.Tensor:
    filt = mel_filters(spec.sr, spec.n_fft, spec.n_mels)  # [n_freq, n_mels]
    return torch.from_numpy(np.linalg.pinv(filt.T).astype(np.float32))  # [n_freq, n_mels]


def mel_to_magnitude(log_mel: np.ndarray, spec: SpeechMelSpec) -> torch.Tensor:
    """``[frames, n_mels]`` natural-log mel -> ``[n_freq, frames]`` linear STFT magnitudes."""
    mel = torch.from_numpy(np.exp(np.asarray(log_mel, np.float32))).T
    return (_mel_pinv(spec) @ mel).clamp(min=0.0)


class _StftPair:
    """The vocoder's STFT and inverse STFT (centred frames, Hann window) with everything that
    depends only on the spec or the frame count computed once: ``torch.stft``/``istft`` rebuild
    the padded window and the overlap-add envelope on every call, a quarter of an iteration's
    time on a small block. Same results as ``torch.stft``/``torch.istft`` (to float rounding)."""

    def __init__(self, spec: SpeechMelSpec) -> None:
        self.n_fft, self.hop = spec.n_fft, spec.hop
        left = (spec.n_fft - spec.win_length) // 2
        window = torch.hann_window(spec.win_length)
        self.window = torch.nn.functional.pad(window, (left, spec.n_fft - spec.win_length - left))
        self._envelopes: dict[int, torch.Tensor] = {}

    def _envelope(self, frames: int) -> torch.Tensor:
        """``1 / sum of squared windows`` over the output samples of ``frames`` centred frames."""
        env = self._envelopes.get(frames)
        if env is None:
            w2 = (self.window**2)[:, None].expand(self.n_fft, frames)
            total = self._overlap_add(w2)[self.n_fft // 2 : self.n_fft // 2 + frames * self.hop]
            env = 1.0 / total
            if len(self._envelopes) < 256:  # block sizes repeat; whole-utterance lengths vary
                self._envelopes[frames] = env
        return env

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        n = frames.shape[1]
        out_len = self.n_fft + self.hop * (n - 1)
        return torch.nn.functional.fold(
            frames[None], (1, out_len), (1, self.n_fft), stride=(1, self.hop)
        ).reshape(-1)

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """``[n_freq, T]`` complex -> ``T * hop`` samples."""
        frames = spec.shape[1]
        x = torch.fft.irfft(spec, n=self.n_fft, dim=0) * self.window[:, None]
        y = self._overlap_add(x)[self.n_fft // 2 : self.n_fft // 2 + frames * self.hop]
        return y * self._envelope(frames)

    def stft(self, wave: torch.Tensor, frames: int) -> torch.Tensor:
        """The first ``frames`` centred frames of ``wave``: ``[n_freq, frames]`` complex."""
        pad = self.n_fft // 2
        x = torch.nn.functional.pad(wave[None, None], (pad, pad), mode="reflect")[0, 0]
        return torch.fft.rfft(x.unfold(0, self.n_fft, self.hop)[:frames] * self.window, dim=1).T


@lru_cache(maxsize=8)
def _stft_pair(spec: SpeechMelSpec) -> _StftPair:
    return _StftPair(spec)


def griffin_lim(
    mag: torch.Tensor,
    spec: SpeechMelSpec,
    n_iter: int,
    *,
    init_phase: torch.Tensor | None = None,
    seed: int = 0,
    momentum: float = 0.99,
) -> tuple[np.ndarray, torch.Tensor]:
    """Fast Griffin-Lim: magnitudes ``[n_freq, T]`` -> (wave of ``T * hop`` samples, phase).

    ``init_phase`` (unit complex, ``[n_freq, T0]``) fixes the starting phase of the first ``T0``
    frames; the rest start from seeded random phase. Returns the final unit-complex phase.
    """
    n_freq, frames = mag.shape
    gen = torch.Generator().manual_seed(seed)
    angles = torch.exp(2j * math.pi * torch.rand(n_freq, frames, generator=gen))
    if init_phase is not None and init_phase.shape[1] > 0:
        angles[:, : init_phase.shape[1]] = init_phase
    stft = _stft_pair(spec)
    prev = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = stft.stft(stft.istft(mag * angles), frames)
        angles = rebuilt - prev * (momentum / (1 + momentum))
        angles = angles / (angles.abs() + 1e-16)
        prev = rebuilt
    wave = stft.istft(mag * angles)
    return wave.numpy().astype(np.float32), angles


class GriffinLimVocoder:
    """Units of a :class:`MelKMeansUnits` tokenizer -> centroid log-mel -> Griffin-Lim wave."""

    def __init__(
        self,
        tokenizer: MelKMeansUnits,
        *,
        n_iter: int | None = None,
        first_block_units: int | None = None,
        max_block_units: int | None = None,
        overlap_units: int | None = None,
        first_block_iters: int | None = None,
        first_overlap_units: int | None = None,
        second_block_units: int | None = None,
    ) -> None:
        tokenizer._require_fitted()
        self.tokenizer = tokenizer
        self.spec = tokenizer.spec
        self.sample_rate = tokenizer.spec.sr
        self.n_iter = n_iter or _DEFAULTS.griffin_lim_iters
        # Fewer on the first streamed block buys time to first audio; the next block re-renders
        # its held-back tail at n_iter and cross-fades, so only the first chunk's audio is rougher.
        self.first_block_iters = first_block_iters or self.n_iter
        self.first_block_units = first_block_units or _DEFAULTS.vocoder_first_block_units
        self.second_block_units = second_block_units or _DEFAULTS.vocoder_second_block_units
        self.max_block_units = max_block_units or _DEFAULTS.vocoder_max_block_units
        self.overlap_units = overlap_units or _DEFAULTS.vocoder_overlap_units
        # the first seam may share less context: the first block then holds back less audio
        self.first_overlap_units = first_overlap_units or _DEFAULTS.vocoder_first_overlap_units
        if tokenizer.decoder is not None:
            # re-render at least the units whose right context a learned decoder had not yet seen
            self.overlap_units = max(self.overlap_units, tokenizer.decoder.lookahead)
            self.first_overlap_units = max(self.first_overlap_units, tokenizer.decoder.lookahead)
        # the first block must release audio: at least one unit beyond what it holds back
        self.first_block_units = max(self.first_block_units, self.first_overlap_units + 1)
        self.frames_per_unit = tokenizer.stack
        self.samples_per_unit = tokenizer.stack * tokenizer.spec.hop

    @classmethod
    def from_config(
        cls, tokenizer: MelKMeansUnits, cfg: AudioSection, **overrides: int
    ) -> GriffinLimVocoder:
        """The vocoder the ``audio`` section describes; ``overrides`` replace single settings
        (keyword arguments of the constructor)."""
        settings = {
            "n_iter": cfg.griffin_lim_iters,
            "first_block_units": cfg.vocoder_first_block_units,
            "second_block_units": cfg.vocoder_second_block_units,
            "max_block_units": cfg.vocoder_max_block_units,
            "overlap_units": cfg.vocoder_overlap_units,
            "first_overlap_units": cfg.vocoder_first_overlap_units,
        }
        return cls(tokenizer, **(settings | overrides))

    def decode(self, units: Sequence[int]) -> np.ndarray:
        """Whole-utterance Griffin-Lim: ``len(units) * samples_per_unit`` samples."""
        ids = np.asarray(units, dtype=np.int64)
        if ids.size == 0:
            return np.zeros(0, np.float32)
        mag = mel_to_magnitude(self.tokenizer.units_to_mel(ids), self.spec)
        wave, _ = griffin_lim(mag, self.spec, self.n_iter)
        return wave

    def stream(self) -> GriffinLimStream:
        """A streaming session with this vocoder's block schedule."""
        return GriffinLimStream(self)


@dataclass
class _StreamState:
    pending: list[int] = field(default_factory=list)  # units not yet rendered
    history: list[int] = field(default_factory=list)  # rendered units the decoder sees as context
    context: list[int] = field(default_factory=list)  # last overlap units already rendered
    context_phase: torch.Tensor | None = None  # their phase, [n_freq, frames]
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # held samples
    blocks: int = 0
    emitted: int = 0
    closed: bool = False


class GriffinLimStream:
    """Streaming Griffin-Lim: explicit state, ``push(units)`` and ``flush()`` (see module doc)."""

    def __init__(self, vocoder: GriffinLimVocoder) -> None:
        self.v = vocoder
        self.state = _StreamState()

    def _next_block_size(self) -> int:
        k = self.state.blocks
        if k == 0:
            return self.v.first_block_units
        return min(self.v.max_block_units, self.v.second_block_units * 2 ** (k - 1))

    def push(self, units: Sequence[int]) -> np.ndarray:
        """Add units; render every complete block; return the samples now final."""
        if self.state.closed:
            raise UnitError("vocoder stream", "push() after flush(): start a new stream()")
        ids = [int(u) for u in units]
        if ids and (min(ids) < 0 or max(ids) >= self.v.tokenizer.codebook_size):
            raise UnitError(
                "units",
                f"ids must lie in [0, {self.v.tokenizer.codebook_size}), got {min(ids)}..{max(ids)}",
            )
        self.state.pending.extend(ids)
        out = []
        while len(self.state.pending) >= self._next_block_size():
            size = self._next_block_size()
            block, self.state.pending = self.state.pending[:size], self.state.pending[size:]
            out.append(self._render(block, final=False))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        """Render what is left and release the held tail; the stream is closed after this."""
        if self.state.closed:
            return np.zeros(0, np.float32)
        out = (
            self._render(self.state.pending, final=True) if self.state.pending else self.state.tail
        )
        self.state.pending, self.state.tail, self.state.closed = [], np.zeros(0, np.float32), True
        return out

    def _render(self, block: list[int], *, final: bool) -> np.ndarray:
        v, st = self.v, self.state
        ctx = st.context
        spu, fpu = v.samples_per_unit, v.frames_per_unit
        # units before the cross-faded context only inform a learned decoder; they are not re-rendered
        left = st.history[: len(st.history) - len(ctx)] if ctx else []
        mel = v.tokenizer.units_to_mel(np.array(left + ctx + block), left_context=len(left))
        mag = mel_to_magnitude(mel, v.spec)
        n_iter = v.first_block_iters if st.blocks == 0 else v.n_iter
        wave, phase = griffin_lim(
            mag, v.spec, n_iter, init_phase=st.context_phase, seed=st.blocks + 1
        )
        n_ctx = len(ctx) * spu
        head = wave[:n_ctx]
        if n_ctx:
            # raised-cosine cross-fade of the held tail (previous render) into this render
            fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n_ctx) + 0.5) / n_ctx)
            head = st.tail * (1.0 - fade) + head * fade
        body = np.concatenate([head, wave[n_ctx:]]).astype(np.float32)
        overlap = v.first_overlap_units if st.blocks == 0 else v.overlap_units
        keep = 0 if final else min(overlap, len(ctx) + len(block))
        all_units = ctx + block
        st.context = all_units[len(all_units) - keep :] if keep else []
        dec = v.tokenizer.decoder
        n_hist = keep + (dec.lookahead if dec is not None else 0)
        st.history = (st.history + block)[-n_hist:] if keep else []
        st.context_phase = phase[:, phase.shape[1] - keep * fpu :] if keep else None
        split = body.size - keep * spu
        st.tail = body[split:]
        st.blocks += 1
        st.emitted += split
        return body[:split]


def vocoder_for(tokenizer: UnitTokenizer, cfg: AudioSection | None = None) -> Vocoder:
    """The vocoder that inverts ``tokenizer``'s units (Griffin-Lim for k-means, GLM-4-Voice's own)."""
    cfg = cfg or _DEFAULTS
    if isinstance(tokenizer, MelKMeansUnits):
        return GriffinLimVocoder.from_config(tokenizer, cfg)
    if isinstance(tokenizer, GLM4VoiceTokenizer):
        return vocoder_from_config(cfg)
    raise UnitError(type(tokenizer).__name__, "no vocoder known for this tokenizer")


def vocoder_from_config(
    cfg: AudioSection,
    *,
    unit_tokenizer: UnitTokenizer | None = None,
    sample_rate: int | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    block_schedule: Sequence[int] | None = None,
    **overrides: int,
) -> Vocoder:
    """The vocoder an ``audio`` section describes: GLM-4-Voice's decoder when
    ``glm4voice_decoder_path`` is set and no k-means tokenizer is given, else Griffin-Lim over
    ``unit_tokenizer``'s centroids. Output at ``sample_rate`` (default ``cfg.sample_rate``, the
    API's 16 kHz; 22,050 is the decoder's own). ``block_schedule`` (units per streamed block,
    the last size repeating) replaces GLM-4-Voice's default growing schedule; ``overrides`` go to
    the Griffin-Lim vocoder."""
    if isinstance(unit_tokenizer, MelKMeansUnits):
        return GriffinLimVocoder.from_config(unit_tokenizer, cfg, **overrides)
    if cfg.glm4voice_decoder_path:
        return GLM4VoiceDecoder(
            cfg.glm4voice_decoder_path,
            sample_rate=sample_rate or cfg.sample_rate,
            device=device,
            dtype=dtype,
            **({"block_schedule": tuple(block_schedule)} if block_schedule else {}),
        )
    raise UnitError(
        "audio.glm4voice_decoder_path",
        "no vocoder: set it to a glm-4-voice-decoder directory or give a k-means unit tokenizer",
    )


def describe(vocoder: Vocoder) -> str:
    """One-line JSON description of a vocoder's settings (for logs and benchmarks)."""
    if isinstance(vocoder, GriffinLimVocoder):
        return json.dumps(
            {
                "kind": "griffin_lim",
                "n_iter": vocoder.n_iter,
                "first_block_iters": vocoder.first_block_iters,
                "first_block_units": vocoder.first_block_units,
                "second_block_units": vocoder.second_block_units,
                "max_block_units": vocoder.max_block_units,
                "overlap_units": vocoder.overlap_units,
                "first_overlap_units": vocoder.first_overlap_units,
            }
        )
    if isinstance(vocoder, GLM4VoiceDecoder):
        return json.dumps(
            {
                "kind": "glm4voice",
                "sample_rate": vocoder.sample_rate,
                "block_schedule": list(vocoder.block_schedule),
                "overlap_units": vocoder.overlap_units,
                "n_timesteps": vocoder.flow_cfg.n_timesteps,
            }
        )
    return json.dumps({"kind": type(vocoder).__name__})


__all__ = [
    "GLM4VoiceDecoder",
    "GLM4VoiceStream",
    "GriffinLimStream",
    "GriffinLimVocoder",
    "describe",
    "vocoder_for",
    "vocoder_from_config",
]
