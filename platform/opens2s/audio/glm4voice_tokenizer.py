"""GLM-4-Voice's speech tokenizer from a local ``glm-4-voice-tokenizer`` directory: 16 kHz audio
-> units at 12.5/s, codes 0..16383.

A Whisper encoder with vector quantization (upstream ``WhisperVQEncoder``): Whisper log-mel
(128 bins, from the directory's ``preprocessor_config.json``) -> two convs (causal in the
release; the second halves the rate to 50/s) -> ``quantize_position`` pre-norm transformer layers
with block-causal attention (``quantize_causal_block_size`` frames) -> average pooling by
``pooling_kernel_size`` (to 12.5/s) after layer ``pooling_position`` -> nearest codebook entry.
Audio longer than 30 s is encoded in 30 s segments whose units are concatenated, as upstream.

Weights come from ``model*.safetensors`` as upstream's ``load_quantize_encoder`` reads them:
names under ``model.encoder.`` (or bare), the final ``layer_norm`` and the layers past the
quantizer skipped, anything else of the encoder must match: a missing or unexpected tensor is a
:class:`UnitError` naming it. Nothing is downloaded, nothing is unpickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from opens2s.audio.io import mono_wave, resample
from opens2s.audio.units import UnitError

SAMPLE_RATE = 16000
SEGMENT_SECONDS = 30


@dataclass(frozen=True)
class WhisperVQConfig:
    """The fields of the tokenizer's config.json this encoder uses (released values as defaults
    where upstream's config has them)."""

    d_model: int = 1280
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    num_mel_bins: int = 128
    max_source_positions: int = 1500
    activation_function: str = "gelu"
    scale_embedding: bool = False
    pooling_kernel_size: int | None = 4
    pooling_type: str = "avg"
    pooling_position: int = 16
    quantize_position: int = 16
    quantize_vocab_size: int = 16384
    quantize_causal_block_size: int | None = 200
    quantize_causal_encoder: bool = False
    encoder_causal_attention: bool = False
    encoder_causal_convolution: bool = True
    quantize_ema_decay: float | None = None

    @classmethod
    def from_json(cls, data: dict) -> WhisperVQConfig:
        """From a parsed config.json (unknown fields ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class _Conv(nn.Conv1d):
    """Conv1d, left-padded (causal) when the release says so, else padding 1."""

    def __init__(self, c_in: int, c_out: int, stride: int, causal: bool) -> None:
        super().__init__(c_in, c_out, 3, stride=stride, padding=0 if causal else 1)
        self.left = 2 if causal else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)) if self.left else x)


class _SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.h = heads
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (
            p(x).view(b, t, self.h, -1).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))


class _EncoderLayer(nn.Module):
    def __init__(self, cfg: WhisperVQConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = _SelfAttention(d, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, cfg.encoder_ffn_dim), nn.Linear(cfg.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        if cfg.activation_function not in ("gelu", "relu"):
            raise UnitError(
                "config.json", f"activation_function {cfg.activation_function!r}: gelu or relu"
            )
        self.act = F.gelu if cfg.activation_function == "gelu" else F.relu

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), bias)
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


def _attention_bias(valid: torch.Tensor, block: int | None, causal: bool, dtype) -> torch.Tensor:
    """Additive mask ``[B, 1, T, T]``: padding keys hidden; block-causal (a frame sees its own
    block and everything before) when ``block`` is set, causal when ``causal``."""
    t = valid.shape[1]
    allowed = torch.ones(t, t, dtype=torch.bool, device=valid.device)
    if causal:
        allowed = torch.tril(allowed)
    elif block:
        ends = (torch.arange(t, device=valid.device) // block + 1) * block
        allowed = torch.arange(t, device=valid.device)[None, :] < ends[:, None]
    allowed = allowed[None] & valid[:, None, :].bool()
    bias = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


class WhisperVQEncoder(nn.Module):
    """Log-mel ``[B, n_mels, T]`` + frame mask ``[B, T]`` -> unit ids ``[B, T / 8]`` and their mask."""

    def __init__(self, cfg: WhisperVQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        causal = cfg.encoder_causal_convolution
        self.conv1 = _Conv(cfg.num_mel_bins, d, 1, causal)
        self.conv2 = _Conv(d, d, 2, causal)
        self.embed_positions = nn.Embedding(cfg.max_source_positions, d)
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.quantize_position))
        self.codebook = nn.Embedding(cfg.quantize_vocab_size, d)
        pooled = cfg.max_source_positions
        if cfg.pooling_kernel_size:
            pooled = math.ceil(pooled / cfg.pooling_kernel_size)
        self.embed_positions2 = nn.Embedding(pooled, d)  # used after the quantizer; kept to load
        if cfg.quantize_ema_decay is not None:
            self.register_buffer("ema_count", torch.ones(cfg.quantize_vocab_size))
            self.register_buffer("ema_weight", torch.zeros(cfg.quantize_vocab_size, d))
        if cfg.pooling_type not in ("avg", "max"):
            raise UnitError("config.json", f"pooling_type {cfg.pooling_type!r}: avg or max")

    @property
    def frames_per_unit(self) -> int:
        """Mel frames (10 ms) per unit: 2 (conv stride) x pooling kernel."""
        return 2 * (self.cfg.pooling_kernel_size or 1)

    @torch.inference_mode()
    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        x = F.gelu(self.conv1(features))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        t = x.shape[1]
        if t > c.max_source_positions:
            raise UnitError(
                "audio", f"{t} encoder frames exceed max_source_positions {c.max_source_positions}"
            )
        x = x + self.embed_positions.weight[:t]
        valid = mask[:, ::2][:, :t]
        causal = c.encoder_causal_attention or c.quantize_causal_encoder
        block = c.quantize_causal_block_size
        bias = _attention_bias(valid, block, causal, x.dtype)
        k = c.pooling_kernel_size
        for i, layer in enumerate(self.layers):
            x = layer(x, bias)
            if k and i + 1 == c.pooling_position:
                h = x.transpose(1, 2)
                if h.shape[-1] % k:
                    h = F.pad(h, (0, k - h.shape[-1] % k))
                h = F.avg_pool1d(h, k) if c.pooling_type == "avg" else F.max_pool1d(h, k)
                x = h.transpose(1, 2)
                valid = valid[:, ::k]
                bias = _attention_bias(valid, block // k if block else None, causal, x.dtype)
        flat = x.reshape(-1, x.shape[-1]).float()
        book = self.codebook.weight.float()
        dist = (flat**2).sum(1, keepdim=True) - 2 * flat @ book.T + (book**2).sum(1)[None]
        return dist.argmin(1).reshape(x.shape[:2]), valid.bool()


def _encoder_state(model_dir: Path, cfg: WhisperVQConfig) -> dict[str, torch.Tensor]:
    """The encoder's tensors from ``model*.safetensors``, named as our module names them."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("model*.safetensors"))
    if not files:
        raise UnitError(str(model_dir), "no model*.safetensors")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            prefixed = any(k.startswith("model.encoder.") for k in keys)
            for key in keys:
                if prefixed:
                    if not key.startswith("model.encoder."):
                        continue  # the Whisper decoder / projection of the full checkpoint
                    name = key[len("model.encoder.") :]
                else:
                    name = key
                if name.startswith("layer_norm."):
                    continue  # the final norm sits after the quantizer
                if name.startswith("layers.") and int(name.split(".")[1]) >= cfg.quantize_position:
                    continue
                state[name] = f.get_tensor(key)
    return state


class GLM4VoiceUnits:
    """GLM-4-Voice tokenizer (:class:`UnitTokenizer`): audio -> units at 12.5/s over 16,384 codes."""

    unit_rate = 12.5
    sample_rate = SAMPLE_RATE

    def __init__(
        self, model_dir: str | Path, device: str | None = None, batch_size: int = 16
    ) -> None:
        """``device`` None: a GPU when one is visible (a Ray worker given one), else the CPU."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise UnitError(str(self.model_dir), "GLM-4-Voice tokenizer directory does not exist")
        missing = [
            f
            for f in ("config.json", "preprocessor_config.json")
            if not (self.model_dir / f).is_file()
        ]
        if not any(self.model_dir.glob("model*.safetensors")):
            missing.append("model weights (model*.safetensors)")
        if missing:
            raise UnitError(
                str(self.model_dir), f"not a GLM-4-Voice tokenizer directory: missing {missing}"
            )
        from transformers import WhisperFeatureExtractor

        self.cfg = WhisperVQConfig.from_json(
            json.loads((self.model_dir / "config.json").read_text())
        )
        self.codebook_size = self.cfg.quantize_vocab_size
        self.model = WhisperVQEncoder(self.cfg)
        state = _encoder_state(self.model_dir, self.cfg)
        own = self.model.state_dict()
        missing_t, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing_t or unexpected:
            raise UnitError(
                str(self.model_dir),
                f"weights do not match config.json: missing {missing_t[:8]} ({len(missing_t)}), "
                f"unexpected {unexpected[:8]} ({len(unexpected)})",
            )
        wrong = [k for k, v in own.items() if state[k].shape != v.shape]
        if wrong:
            raise UnitError(str(self.model_dir), f"tensors of the wrong shape: {wrong[:8]}")
        self.model.load_state_dict(state, strict=True)
        self.model.to(device).eval()
        self.device, self.batch_size = device, batch_size
        self.features = WhisperFeatureExtractor.from_pretrained(str(self.model_dir))
        if self.features.feature_size != self.cfg.num_mel_bins:
            raise UnitError(
                str(self.model_dir),
                f"preprocessor_config.json has {self.features.feature_size} mel bins, "
                f"config.json num_mel_bins {self.cfg.num_mel_bins}",
            )

    def encode(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Unit ids (int64) of a mono wave: ``ceil(seconds * 12.5)`` of them."""
        return self.encode_batch([(wave, sr)])[0]

    def encode_batch(self, items: Sequence[tuple[np.ndarray, int]]) -> list[np.ndarray]:
        """Unit ids of many waves, in batches of ``batch_size`` 30 s segments."""
        segments, owner = [], []
        for i, (wave, sr) in enumerate(items):
            w = resample(mono_wave(wave, "GLM-4-Voice tokenizer input"), sr, SAMPLE_RATE)
            step = SEGMENT_SECONDS * SAMPLE_RATE
            for start in range(0, max(w.size, 1), step):
                segments.append(w[start : start + step])
                owner.append(i)
        out: list[list[int]] = [[] for _ in items]
        stride = self.model.frames_per_unit * self.features.hop_length  # samples per unit
        for b in range(0, len(segments), self.batch_size):
            batch = segments[b : b + self.batch_size]
            feats = self.features(
                batch,
                sampling_rate=SAMPLE_RATE,
                return_attention_mask=True,
                return_tensors="pt",
                padding="longest",
                pad_to_multiple_of=stride,
            )
            x = feats.input_features.to(self.device, self.model.conv1.weight.dtype)
            ids, valid = self.model(x, feats.attention_mask.to(self.device))
            for j in range(len(batch)):
                out[owner[b + j]].extend(ids[j][valid[j]].tolist())
        return [np.asarray(u, dtype=np.int64) for u in out]

    def save(self, path: str | Path) -> Path:
        """Write a small JSON pointer to the model directory (the weights stay where they are)."""
        path = Path(path)
        path.write_text(json.dumps({"kind": "glm4voice", "model_dir": str(self.model_dir)}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> GLM4VoiceUnits:
        """Open the tokenizer a pointer file (or a model directory) names."""
        path = Path(path)
        if path.is_dir():
            return cls(path)
        return cls(json.loads(path.read_text())["model_dir"])
