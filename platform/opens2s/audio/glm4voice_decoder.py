"""GLM-4-Voice's decoder from a local ``glm-4-voice-decoder`` directory: units -> wave, offline
and streamed.

The directory holds ``config.yaml`` (hyperpyyaml), ``flow.pt`` and ``hift.pt`` (state dicts).
The YAML is read as data: its ``!new:`` / ``!name:`` / ``!apply:`` / ``!ref`` tags are kept as
plain values and only the sizes we need are taken from the ``flow:`` and ``hift:`` sections;
nothing in it is executed. Weights load with ``torch.load(weights_only=True)`` into our own
modules (:mod:`glm4voice_flow`, :mod:`glm4voice_hift`); a missing or unexpected tensor is a
:class:`DecoderLoadError` naming it.

Streaming (:class:`GLM4VoiceStream`) follows upstream's server: units are decoded in blocks
(a small first block, then larger ones); each block is decoded with every earlier unit as the
flow's prompt and every committed mel frame as its prompt mel; the last ``overlap`` mel frames of
a block are held back and cross-faded (Hamming window) into the next block's render of the same
frames; the vocoder re-renders the last committed mel frame with its source samples cached from
the previous call; the final block is decoded with ``finalize=True`` (nothing held back).
Unlike upstream, positions stay exact: the prompt mel is exactly the frames committed so far, so
a block's new frames sit at the same absolute frames as in a whole-utterance decode (with the
same start noise), and the vocoder's sine source continues its phase across blocks.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch
import yaml

from opens2s.audio.glm4voice_flow import FlowConfig, MaskedDiffWithXvec, mel_frames
from opens2s.audio.glm4voice_hift import HiftConfig, HiFTGenerator
from opens2s.audio.units import UnitError

REQUIRED_FILES = ("config.yaml", "flow.pt", "hift.pt")
NATIVE_RATE = 22050
FIRST_BLOCK_UNITS = 10  # GLM-4-Voice's decoder starts from 10 units (its model card)
BLOCK_SCHEDULE = (10, 20, 40, 80)  # multiples of the encoder's attention block (10 units)
OVERLAP_UNITS = 5  # upstream token_overlap_len
MEL_CACHE_FRAMES = 1  # upstream mel_cache_len


class DecoderLoadError(UnitError):
    """A decoder directory that cannot be read: names the file or tensor and what is wrong."""

    def __init__(self, message: str) -> None:
        source, _, problem = message.partition(": ")
        super().__init__(source, problem or message)


# ---------------------------------------------------------------------------------------------
# config.yaml as data


class _TagTolerantLoader(yaml.SafeLoader):
    """SafeLoader that reads any ``!tag`` node as its plain value (mapping, list or scalar)."""


class _Ref(str):
    """The text of a ``!ref`` scalar, e.g. ``<chunk_size> * <token_mel_ratio>``."""


def _plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if suffix == "ref":
        return _Ref(loader.construct_scalar(node))
    return loader.construct_scalar(node)


_REF = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")
_ARITHMETIC = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _arithmetic(node: ast.AST) -> int | float:
    """Evaluate numbers joined by + - * / // % and parentheses; anything else is refused."""
    if isinstance(node, ast.Expression):
        return _arithmetic(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _arithmetic(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    raise ValueError(f"not plain arithmetic: {ast.dump(node)}")


_TagTolerantLoader.add_multi_constructor("!", _plain)


def read_config(path: str | Path) -> dict:
    """The decoder's config.yaml as plain data, with ``!ref <name>`` values resolved (and
    ``!ref`` arithmetic on numbers, e.g. ``<chunk_size> * <token_mel_ratio>``, evaluated)."""
    try:
        data = yaml.load(Path(path).read_text(), Loader=_TagTolerantLoader)  # noqa: S506
    except yaml.YAMLError as e:
        raise DecoderLoadError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise DecoderLoadError(f"{path}: expected a mapping at the top level")

    def ref(text: _Ref) -> Any:
        # hyperpyyaml: ``!ref <a>`` is a's value; ``!ref <a> * <b>`` is arithmetic on the values.
        # A reference we cannot resolve stays as its text: only the sections a reader takes sizes
        # from matter, and their readers refuse a value of the wrong kind by its field name.
        names = _REF.findall(text)
        if not names or any(n not in data for n in names):
            return text
        if _REF.fullmatch(text.strip()):
            return resolve(data[names[0]])
        values = {n: resolve(data[n]) for n in names}
        if not all(type(v) in (int, float) for v in values.values()):
            return text
        try:
            expr = ast.parse(_REF.sub(lambda m: repr(values[m.group(1)]), text), mode="eval")
            return _arithmetic(expr)
        except (SyntaxError, ValueError, ZeroDivisionError):
            return text

    def resolve(v: Any) -> Any:
        if isinstance(v, _Ref):
            return ref(v)
        if isinstance(v, str) and v.startswith("<") and v.endswith(">") and v[1:-1] in data:
            return data[v[1:-1]]
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x) for x in v]
        return v

    return resolve(data)


def config_field(
    section: dict, key: str, where: str, path: str, kind: type | tuple[type, ...]
) -> Any:
    """``section[key]``, which must be present and of ``kind``: an error names ``where.key``
    otherwise. A bool is never a number; an int is a fine float."""
    if key not in section:
        raise DecoderLoadError(f"{path}: missing '{where}.{key}'")
    v = section[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if type(v) in kinds or (float in kinds and type(v) is int):
        return v
    names = " or ".join(k.__name__ for k in kinds)
    if set(kinds) <= {int, float}:
        names = "a number" if float in kinds else "a number (int)"
    raise DecoderLoadError(f"{path}: '{where}.{key}' must be {names}, got {v!r}")


def _section(cfg: dict, path: str, *keys: str) -> dict:
    node: Any = cfg
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise DecoderLoadError(f"{path}: missing '{'.'.join(keys)}'")
        node = node[k]
    return node


def flow_config(cfg: dict, path: str = "config.yaml") -> FlowConfig:
    """The flow sizes of a parsed config.yaml."""
    f = _section(cfg, path, "flow")
    enc = _section(cfg, path, "flow", "encoder")
    reg = _section(cfg, path, "flow", "length_regulator")
    dec = _section(cfg, path, "flow", "decoder")
    cfm = dec.get("cfm_params", {})
    cfm = cfm.get("content", cfm) if isinstance(cfm, dict) else {}
    est = _section(cfg, path, "flow", "decoder", "estimator")
    if enc.get("use_cnn_module") or enc.get("macaron_style"):
        raise DecoderLoadError(
            f"{path}: flow.encoder with a conv module / macaron is not supported"
        )
    if enc.get("input_layer", "linear") != "linear":
        raise DecoderLoadError(f"{path}: flow.encoder.input_layer must be 'linear'")
    out = FlowConfig(
        input_size=int(f.get("input_size", 512)),
        output_size=int(f.get("output_size", 80)),
        spk_embed_dim=int(f.get("spk_embed_dim", 192)),
        vocab_size=int(f.get("vocab_size", 16384)),
        input_frame_rate=float(f.get("input_frame_rate", 12.5)),
        encoder_output_size=int(enc.get("output_size", 512)),
        attention_heads=int(enc.get("attention_heads", 8)),
        linear_units=int(enc.get("linear_units", 2048)),
        num_blocks=int(enc.get("num_blocks", 6)),
        block_size=int(enc.get("block_size", 10)),
        regulator_channels=int(reg.get("channels", 80)),
        sampling_ratios=tuple(int(r) for r in reg.get("sampling_ratios", (1, 1, 1, 1))),
        inference_cfg_rate=float(cfm.get("inference_cfg_rate", 0.7)),
        t_scheduler=str(cfm.get("t_scheduler", "cosine")),
        channels=tuple(int(c) for c in est.get("channels", (256, 256))),
        attention_head_dim=int(est.get("attention_head_dim", 64)),
        n_blocks=int(est.get("n_blocks", 4)),
        num_mid_blocks=int(est.get("num_mid_blocks", 12)),
        num_heads=int(est.get("num_heads", 8)),
    )
    if int(est.get("in_channels", 4 * out.output_size)) != 4 * out.output_size:
        raise DecoderLoadError(
            f"{path}: flow.decoder.estimator.in_channels must be 4 x output_size"
        )
    return out


def hift_config(cfg: dict, path: str = "config.yaml") -> HiftConfig:
    """The HiFT sizes of a parsed config.yaml."""
    h = _section(cfg, path, "hift")
    ist = h.get("istft_params", {})
    f0 = h.get("f0_predictor", {}) or {}

    def nested(v: Any) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(x) for x in d) for d in v)

    d = HiftConfig()
    return HiftConfig(
        in_channels=int(h.get("in_channels", d.in_channels)),
        base_channels=int(h.get("base_channels", d.base_channels)),
        nb_harmonics=int(h.get("nb_harmonics", d.nb_harmonics)),
        sampling_rate=int(h.get("sampling_rate", d.sampling_rate)),
        nsf_alpha=float(h.get("nsf_alpha", d.nsf_alpha)),
        nsf_sigma=float(h.get("nsf_sigma", d.nsf_sigma)),
        nsf_voiced_threshold=float(h.get("nsf_voiced_threshold", d.nsf_voiced_threshold)),
        upsample_rates=tuple(int(x) for x in h.get("upsample_rates", d.upsample_rates)),
        upsample_kernel_sizes=tuple(
            int(x) for x in h.get("upsample_kernel_sizes", d.upsample_kernel_sizes)
        ),
        n_fft=int(ist.get("n_fft", d.n_fft)),
        hop_len=int(ist.get("hop_len", d.hop_len)),
        resblock_kernel_sizes=tuple(
            int(x) for x in h.get("resblock_kernel_sizes", d.resblock_kernel_sizes)
        ),
        resblock_dilation_sizes=nested(h.get("resblock_dilation_sizes", d.resblock_dilation_sizes)),
        source_resblock_kernel_sizes=tuple(
            int(x) for x in h.get("source_resblock_kernel_sizes", d.source_resblock_kernel_sizes)
        ),
        source_resblock_dilation_sizes=nested(
            h.get("source_resblock_dilation_sizes", d.source_resblock_dilation_sizes)
        ),
        lrelu_slope=float(h.get("lrelu_slope", d.lrelu_slope)),
        audio_limit=float(h.get("audio_limit", d.audio_limit)),
        f0_cond_channels=int(f0.get("cond_channels", d.f0_cond_channels)),
    )


# ---------------------------------------------------------------------------------------------
# weights


def _weight_norm_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Newer torch saves weight norm as ``parametrizations.weight.original0/1``: map those to the
    released ``weight_g`` / ``weight_v``."""
    out = {}
    for k, v in state.items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        out[k.replace("parametrizations.weight.original1", "weight_v")] = v
    return out


def load_strict(module: torch.nn.Module, path: Path) -> None:
    """Load a state dict file into ``module``; every tensor must match by name and shape."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, a truncated file, not a torch file
        raise DecoderLoadError(f"{path}: cannot be read as a weights-only state dict ({e})") from e
    if not isinstance(state, dict):
        raise DecoderLoadError(f"{path}: expected a state dict, got {type(state).__name__}")
    state = _weight_norm_names(state)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise DecoderLoadError(
            f"{path}: does not match the config's architecture: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''} ({len(missing)}), unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise DecoderLoadError(f"{path}: tensors of the wrong shape: {wrong[:8]}")
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------
# decoder


class GLM4VoiceDecoder:
    """GLM-4-Voice units (12.5/s, 16,384 codes) -> wave at ``sample_rate`` (22,050 native; other
    rates are resampled, e.g. 16,000 for our API)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        sample_rate: int = NATIVE_RATE,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        block_schedule: Sequence[int] = BLOCK_SCHEDULE,
        overlap_units: int = OVERLAP_UNITS,
        noise_seed: int = 0,
    ) -> None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise DecoderLoadError(f"{model_dir}: GLM-4-Voice decoder directory does not exist")
        missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
        if missing:
            raise DecoderLoadError(
                f"{model_dir}: not a GLM-4-Voice decoder directory: missing {missing}"
            )
        cfg = read_config(model_dir / "config.yaml")
        self.flow_cfg = flow_config(cfg, str(model_dir / "config.yaml"))
        self.hift_cfg = hift_config(cfg, str(model_dir / "config.yaml"))
        self.flow = MaskedDiffWithXvec(self.flow_cfg, noise_seed=noise_seed)
        self.hift = HiFTGenerator(self.hift_cfg, noise_seed=noise_seed)
        load_strict(self.flow, model_dir / "flow.pt")
        load_strict(self.hift, model_dir / "hift.pt")
        self.flow.to(device=device, dtype=dtype).eval()
        self.hift.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype
        self.native_rate = self.hift_cfg.sampling_rate
        self.sample_rate = int(sample_rate)
        self.hop = self.hift_cfg.hop
        self.codebook_size = self.flow_cfg.vocab_size
        self.block_schedule = tuple(int(b) for b in block_schedule)
        if not self.block_schedule or min(self.block_schedule) <= overlap_units:
            raise DecoderLoadError(
                f"block_schedule {self.block_schedule}: every block must exceed overlap_units ({overlap_units})"
            )
        self.overlap_units = overlap_units
        # upstream: int(token_overlap_len / input_frame_rate * 22050 / 256) mel frames
        self.overlap_frames = self.flow_cfg.frames_for(overlap_units)
        self.mel_window = torch.from_numpy(np.hamming(2 * self.overlap_frames).astype(np.float32))

    # -- pieces ---------------------------------------------------------------------------------

    def _ids(self, units: Sequence[int]) -> list[int]:
        ids = [int(u) for u in units]
        if ids and (min(ids) < 0 or max(ids) >= self.codebook_size):
            raise ValueError(
                f"units must lie in [0, {self.codebook_size}), got {min(ids)}..{max(ids)}"
            )
        return ids

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def mel(
        self,
        units: Sequence[int],
        prompt_units: Sequence[int] = (),
        prompt_mel: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow mel ``[1, 80, F]`` of ``units`` after ``prompt_units`` (whose mel is ``prompt_mel``)."""
        if prompt_mel is None:
            prompt_mel = torch.zeros(
                1, self.flow_cfg.output_size, 0, device=self.device, dtype=self.dtype
            )
        return self.flow.inference(
            self._tensor(self._ids(units)), self._tensor(list(prompt_units)), prompt_mel
        )

    def to_client_rate(self, wave: np.ndarray) -> np.ndarray:
        """A whole native-rate wave at ``sample_rate``."""
        if self.sample_rate == self.native_rate:
            return wave.astype(np.float32)
        return soxr.resample(wave, self.native_rate, self.sample_rate, quality="HQ").astype(
            np.float32
        )

    # -- offline ---------------------------------------------------------------------------------

    def decode_native(self, units: Sequence[int]) -> np.ndarray:
        """The 22,050 Hz wave of a whole unit sequence: ``frames_for(len(units)) * 256`` samples."""
        ids = self._ids(units)
        if not ids:
            return np.zeros(0, np.float32)
        wave, _, _ = self.hift.inference(self.mel(ids))
        return wave[0].float().cpu().numpy()

    def decode(self, units: Sequence[int]) -> np.ndarray:
        """The wave of a whole unit sequence at ``sample_rate``."""
        return self.to_client_rate(self.decode_native(units))

    def stream(self) -> GLM4VoiceStream:
        """A streaming session (see the module doc)."""
        return GLM4VoiceStream(self)


@dataclass
class _StreamState:
    pending: list[int] = field(default_factory=list)  # units not yet decoded
    units: list[int] = field(default_factory=list)  # decoded units: the next block's prompt
    mel: torch.Tensor | None = None  # committed mel frames [1, 80, C]: the next prompt mel
    held_mel: torch.Tensor | None = None  # last overlap frames of the previous render
    cache_mel: torch.Tensor | None = None  # vocoder cache: last committed frame(s)
    cache_source: torch.Tensor | None = None  # ... and their source samples
    phase: torch.Tensor | None = None  # sine phase after the last emitted sample
    emitted: int = 0  # native samples emitted
    blocks: int = 0
    closed: bool = False


class GLM4VoiceStream:
    """``push(units)`` -> samples ready so far, ``flush()`` -> the rest (at the decoder's rate)."""

    def __init__(self, decoder: GLM4VoiceDecoder) -> None:
        self.d = decoder
        self.state = _StreamState()
        self._resampler = (
            soxr.ResampleStream(
                decoder.native_rate, decoder.sample_rate, 1, dtype="float32", quality="HQ"
            )
            if decoder.sample_rate != decoder.native_rate
            else None
        )

    def _next_block_size(self) -> int:
        sched = self.d.block_schedule
        return sched[min(self.state.blocks, len(sched) - 1)]

    def push(self, units: Sequence[int]) -> np.ndarray:
        """Add units; decode every complete block; return the samples now final."""
        if self.state.closed:
            raise ValueError("vocoder stream: push() after flush(): start a new stream()")
        self.state.pending.extend(self.d._ids(units))
        out = []
        while len(self.state.pending) >= self._next_block_size():
            size = self._next_block_size()
            block, self.state.pending = self.state.pending[:size], self.state.pending[size:]
            out.append(self._decode(block, finalize=False))
        return self._out(np.concatenate(out) if out else np.zeros(0, np.float32), last=False)

    def flush(self) -> np.ndarray:
        """Decode what is left with ``finalize=True``; the stream is closed after this."""
        st = self.state
        if st.closed:
            return np.zeros(0, np.float32)
        if st.pending:
            wave = self._decode(st.pending, finalize=True)
        elif st.held_mel is not None:  # units ended exactly at a block: vocode the held frames
            wave = self._vocode(st.held_mel, finalize=True)
        else:
            wave = np.zeros(0, np.float32)
        st.pending, st.closed = [], True
        return self._out(wave, last=True)

    def _out(self, wave: np.ndarray, *, last: bool) -> np.ndarray:
        if self._resampler is None:
            return wave
        return self._resampler.resample_chunk(wave.astype(np.float32), last=last)

    def _decode(self, block: list[int], *, finalize: bool) -> np.ndarray:
        d, st = self.d, self.state
        mel = d.mel(block, st.units, st.mel)  # frames [C, T) at their absolute positions
        st.units = st.units + block
        if st.held_mel is not None:
            n = d.overlap_frames
            w = d.mel_window.to(mel)
            mel = mel.clone()
            mel[..., :n] = mel[..., :n] * w[:n] + st.held_mel * w[n:]
        st.blocks += 1
        return self._vocode(mel, finalize=finalize)

    def _vocode(self, mel: torch.Tensor, *, finalize: bool) -> np.ndarray:
        """Commit ``mel`` (all of it when finalizing, else all but the held-back overlap) and
        vocode it after the cached frame(s); returns the native samples now final."""
        d, st = self.d, self.state
        hop, n = d.hop, d.overlap_frames
        if not finalize:
            mel, st.held_mel = mel[..., :-n], mel[..., -n:]
        else:
            st.held_mel = None
        st.mel = mel if st.mel is None else torch.cat([st.mel, mel], -1)
        x = mel if st.cache_mel is None else torch.cat([st.cache_mel, mel], -1)
        offset = st.emitted  # the cached frames' samples were not emitted yet
        wave, source, cum = d.hift.inference(x, st.cache_source, offset=offset, phase0=st.phase)
        wave = wave[0].float().cpu().numpy()
        if finalize:
            st.emitted += wave.size
            return wave
        keep = MEL_CACHE_FRAMES * hop
        st.cache_mel = x[..., -MEL_CACHE_FRAMES:]
        st.cache_source = source[..., -keep:]
        st.phase = cum[:, -keep - 1] if cum.shape[1] > keep else None
        out = wave[:-keep]
        st.emitted += out.size
        return out


def samples_for(n_units: int, unit_rate: float = 12.5, hop: int = 256) -> int:
    """Native samples a decode of ``n_units`` units gives: its mel frames (as upstream counts
    them) times the hop."""
    return mel_frames(n_units, unit_rate) * hop


__all__ = [
    "DecoderLoadError",
    "GLM4VoiceDecoder",
    "GLM4VoiceStream",
    "flow_config",
    "hift_config",
    "read_config",
    "samples_for",
]
