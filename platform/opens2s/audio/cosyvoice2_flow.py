"""CosyVoice2's flow (``flow.pt``): speech tokens -> 80-bin mel at 24 kHz / hop 480, and its
vocoder's config (``hift.pt``).

Token embedding -> ``UpsampleConformerEncoder``: a Conformer over tokens (after a small
look-ahead conv block that lets each token see the next ``pre_lookahead_len``), a nearest x2
upsampling with a left-padded conv, and a second Conformer over mel frames -> linear to 80 ->
conditional flow matching: a causal 1-D U-Net (``CausalConditionalDecoder``: causal convs with
LayerNorm instead of GroupNorm; the same ResNet / transformer layout as GLM-4-Voice's
``ConditionalDecoder``, whose blocks are reused) integrated with Euler steps on a cosine time
schedule, with classifier-free guidance (``CausalConditionalCFM``).

Here everything runs offline, as upstream's ``CosyVoice2Model.token2wav`` decodes a whole
utterance (``streaming=False, finalize=True``): full attention in both Conformers and in the
U-Net (the ``static_chunk_size`` masks are for streaming only) and the look-ahead padded with
zeros at the end. Parameter names follow the released ``flow.pt``, so its state dict loads with
``strict=True``. The start noise is upstream's fixed table (``torch.randn(1, 80, 15000)`` after
seeding 0), so a decode equals upstream's on the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from opens2s.audio.glm4voice_decoder import DecoderLoadError, config_field, hift_config
from opens2s.audio.glm4voice_flow import (
    ConditionalDecoder,
    ConformerLayer,
    LinearEmbed,
    rel_positions,
)
from opens2s.audio.glm4voice_hift import HiftConfig

MEL_RATE = 24000 / 480  # mel frames per second (2 per token at 25 tokens/s)


@dataclass(frozen=True)
class CausalFlowConfig:
    """The ``flow:`` section of cosyvoice2.yaml (released CosyVoice2-0.5B sizes as defaults)."""

    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    vocab_size: int = 6561
    input_frame_rate: int = 25
    token_mel_ratio: int = 2
    pre_lookahead_len: int = 3
    # encoder (UpsampleConformerEncoder)
    encoder_output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    num_up_blocks: int = 4  # fixed in upstream's code, not in the yaml
    static_chunk_size: int = 25  # tokens; streaming only
    # flow matching (CausalConditionalCFM)
    cfm_in_channels: int = 240
    inference_cfg_rate: float = 0.7
    t_scheduler: str = "cosine"
    n_timesteps: int = 10
    # estimator (CausalConditionalDecoder)
    estimator_in_channels: int = 320
    channels: tuple[int, ...] = (256,)
    attention_head_dim: int = 64
    n_blocks: int = 4
    num_mid_blocks: int = 12
    num_heads: int = 8
    decoder_static_chunk_size: int = 50  # mel frames; streaming only
    num_decoding_left_chunks: int = -1

    def frames_for(self, n_tokens: int) -> int:
        """Mel frames of ``n_tokens`` tokens."""
        return n_tokens * self.token_mel_ratio


# ---------------------------------------------------------------------------------------------
# config


def _sub(section: dict, key: str, where: str, path: str) -> dict:
    v = config_field(section, key, where, path, dict)
    # ``!new:omegaconf.DictConfig`` keeps its fields under ``content``
    return v["content"] if isinstance(v.get("content"), dict) else v


def _int_list(v: list, field: str, path: str) -> tuple[int, ...]:
    if not v or not all(type(x) is int and x > 0 for x in v):
        raise DecoderLoadError(
            f"{path}: '{field}' must be a non-empty list of positive ints, got {v!r}"
        )
    return tuple(v)


def _expect(value: Any, want: Any, field: str, path: str, why: str) -> None:
    if value != want:
        raise DecoderLoadError(f"{path}: '{field}' must be {want!r} ({why}), got {value!r}")


def causal_flow_config(cfg: dict, path: str = "cosyvoice2.yaml") -> CausalFlowConfig:
    """The flow sizes of a parsed cosyvoice2.yaml (:func:`glm4voice_decoder.read_config`); a
    missing field or one of the wrong kind is a :class:`DecoderLoadError` naming it."""
    if not isinstance(cfg.get("flow"), dict):
        raise DecoderLoadError(f"{path}: missing 'flow' (a mapping)")
    f = cfg["flow"]
    enc = _sub(f, "encoder", "flow", path)
    dec = _sub(f, "decoder", "flow", path)
    cfm = _sub(dec, "cfm_params", "flow.decoder", path)
    est = _sub(dec, "estimator", "flow.decoder", path)
    E, D, C, S = "flow.encoder", "flow.decoder", "flow.decoder.cfm_params", "flow.decoder.estimator"

    def num(sec: dict, key: str, where: str) -> int:
        return config_field(sec, key, where, path, int)

    out = CausalFlowConfig(
        input_size=num(f, "input_size", "flow"),
        output_size=num(f, "output_size", "flow"),
        spk_embed_dim=num(f, "spk_embed_dim", "flow"),
        vocab_size=num(f, "vocab_size", "flow"),
        input_frame_rate=num(f, "input_frame_rate", "flow"),
        token_mel_ratio=num(f, "token_mel_ratio", "flow"),
        pre_lookahead_len=num(f, "pre_lookahead_len", "flow"),
        encoder_output_size=num(enc, "output_size", E),
        attention_heads=num(enc, "attention_heads", E),
        linear_units=num(enc, "linear_units", E),
        num_blocks=num(enc, "num_blocks", E),
        static_chunk_size=num(enc, "static_chunk_size", E),
        cfm_in_channels=num(dec, "in_channels", D),
        inference_cfg_rate=float(config_field(cfm, "inference_cfg_rate", C, path, float)),
        t_scheduler=config_field(cfm, "t_scheduler", C, path, str),
        estimator_in_channels=num(est, "in_channels", S),
        channels=_int_list(config_field(est, "channels", S, path, list), f"{S}.channels", path),
        attention_head_dim=num(est, "attention_head_dim", S),
        n_blocks=num(est, "n_blocks", S),
        num_mid_blocks=num(est, "num_mid_blocks", S),
        num_heads=num(est, "num_heads", S),
        decoder_static_chunk_size=num(est, "static_chunk_size", S),
        num_decoding_left_chunks=num(est, "num_decoding_left_chunks", S),
    )
    # what upstream's code assumes of these sizes, checked here so a mismatch is named
    n = out.output_size
    _expect(num(enc, "input_size", E), out.input_size, f"{E}.input_size", path, "flow.input_size")
    _expect(
        out.encoder_output_size,
        out.input_size,
        f"{E}.output_size",
        path,
        "the upsampled frames go through a second input layer of input_size",
    )
    for key, want in (
        ("input_layer", "linear"),
        ("pos_enc_layer_type", "rel_pos_espnet"),
        ("selfattention_layer_type", "rel_selfattn"),
    ):
        _expect(enc.get(key, want), want, f"{E}.{key}", path, "the only kind supported")
    for key in ("use_cnn_module", "macaron_style"):
        _expect(bool(enc.get(key, False)), False, f"{E}.{key}", path, "not supported")
    _expect(out.cfm_in_channels, 3 * n, f"{D}.in_channels", path, "3 x output_size")
    _expect(dec.get("spk_emb_dim", n), n, f"{D}.spk_emb_dim", path, "output_size")
    _expect(out.estimator_in_channels, 4 * n, f"{S}.in_channels", path, "4 x output_size")
    _expect(est.get("out_channels", n), n, f"{S}.out_channels", path, "output_size")
    _expect(est.get("act_fn", "gelu"), "gelu", f"{S}.act_fn", path, "the only kind supported")
    if out.encoder_output_size % out.attention_heads:
        raise DecoderLoadError(f"{path}: '{E}.attention_heads' must divide {E}.output_size")
    if out.t_scheduler not in ("cosine", "linear"):
        raise DecoderLoadError(f"{path}: '{C}.t_scheduler' must be 'cosine' or 'linear'")
    if cfm.get("solver", "euler") != "euler":
        raise DecoderLoadError(f"{path}: '{C}.solver' must be 'euler'")
    return out


def cosyvoice2_hift_config(cfg: dict, path: str = "cosyvoice2.yaml") -> HiftConfig:
    """The HiFT sizes of a parsed cosyvoice2.yaml (the 24 kHz, hop-480 vocoder)."""
    if not isinstance(cfg.get("hift"), dict):
        raise DecoderLoadError(f"{path}: missing 'hift' (a mapping)")
    h = cfg["hift"]
    for key in ("in_channels", "base_channels", "nb_harmonics", "sampling_rate"):
        config_field(h, key, "hift", path, int)
    lists = (
        "upsample_rates",
        "upsample_kernel_sizes",
        "resblock_kernel_sizes",
        "resblock_dilation_sizes",
        "source_resblock_kernel_sizes",
        "source_resblock_dilation_sizes",
    )
    for key in lists:
        config_field(h, key, "hift", path, list)
    for key in ("upsample_kernel_sizes", "source_resblock_kernel_sizes"):
        if len(h[key]) != len(h["upsample_rates"]):
            raise DecoderLoadError(
                f"{path}: 'hift.{key}' needs one entry per upsample rate "
                f"({len(h['upsample_rates'])}), got {h[key]!r}"
            )
    ist = config_field(h, "istft_params", "hift", path, dict)
    for key in ("n_fft", "hop_len"):
        config_field(ist, key, "hift.istft_params", path, int)
    try:
        return hift_config(cfg, path)
    except (TypeError, ValueError) as e:  # a value inside a list or the F0 predictor
        raise DecoderLoadError(f"{path}: 'hift' holds a value of the wrong kind ({e})") from e


# ---------------------------------------------------------------------------------------------
# encoder


class PreLookaheadLayer(nn.Module):
    """Each token also sees the next ``lookahead`` tokens (conv over ``lookahead + 1``, leaky
    ReLU, causal conv over 3), added to its input; past the end the look-ahead reads zeros."""

    def __init__(self, channels: int, lookahead: int) -> None:
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C]`` -> ``[B, T, C]``."""
        h = F.pad(x.transpose(1, 2), (0, self.lookahead))
        h = F.leaky_relu(self.conv1(h))
        h = self.conv2(F.pad(h, (2, 0)))
        return h.transpose(1, 2) + x


class RepeatUpsample(nn.Module):
    """Nearest x ``stride`` resampling, then a conv over ``2 * stride + 1`` frames that only
    looks back (left zero padding)."""

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, 2 * stride + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, stride * T]``."""
        x = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return self.conv(F.pad(x, (2 * self.stride, 0)))


class UpsampleConformerEncoder(nn.Module):
    """Token embeddings ``[B, T, d]`` -> frame features ``[B, ratio * T, d]`` (full attention)."""

    def __init__(self, cfg: CausalFlowConfig) -> None:
        super().__init__()
        d = cfg.encoder_output_size
        self.d = d

        def layers(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                ConformerLayer(d, cfg.attention_heads, cfg.linear_units) for _ in range(n)
            )

        self.embed = LinearEmbed(cfg.input_size, d)
        self.pre_lookahead_layer = PreLookaheadLayer(d, cfg.pre_lookahead_len)
        self.encoders = layers(cfg.num_blocks)
        self.up_layer = RepeatUpsample(d, cfg.token_mel_ratio)
        self.up_embed = LinearEmbed(cfg.input_size, d)
        self.up_encoders = layers(cfg.num_up_blocks)
        self.after_norm = nn.LayerNorm(d, eps=1e-5)

    def _conformer(self, x: torch.Tensor, embed: LinearEmbed, stack: nn.ModuleList, lookahead=None):
        t = x.shape[1]
        x = embed.out(x) * math.sqrt(self.d)
        if lookahead is not None:
            x = lookahead(x)
        pos = rel_positions(t, self.d).to(x)
        mask = torch.ones(1, t, t, dtype=torch.bool, device=x.device)
        for layer in stack:
            x = layer(x, mask, pos)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conformer(x, self.embed, self.encoders, self.pre_lookahead_layer)
        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)
        x = self._conformer(x, self.up_embed, self.up_encoders)
        return self.after_norm(x)


# ---------------------------------------------------------------------------------------------
# estimator: GLM-4-Voice's U-Net with causal convs and LayerNorm


class CausalConv1d(nn.Conv1d):
    """Stride-1 conv that sees only the current and earlier frames (left zero padding)."""

    def __init__(self, d_in: int, d_out: int, kernel_size: int) -> None:
        super().__init__(d_in, d_out, kernel_size)
        self.left = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)))


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, T]`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class CausalBlock1D(nn.Module):
    """Causal conv (3) -> LayerNorm over channels -> Mish; names ``block.0`` / ``block.2`` as
    released (upstream's ``block.1`` / ``block.3`` are parameter-free transposes)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            CausalConv1d(d_in, d_out, 3), nn.Identity(), _ChannelLayerNorm(d_out), nn.Mish()
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class CausalConditionalDecoder(ConditionalDecoder):
    """The estimator of CosyVoice2's flow matching (offline: every frame sees every frame)."""

    block = CausalBlock1D

    @staticmethod
    def edge_conv(channels: int) -> nn.Module:
        return CausalConv1d(channels, channels, 3)

    @staticmethod
    def attn_bias(mask: torch.Tensor) -> torch.Tensor:
        # upstream turns the key mask into an additive bias of 0 (kept) / -1e10 (padding)
        return ((1.0 - mask) * -1.0e10)[:, None]  # [B, 1, 1, T]


class CausalConditionalCFM(nn.Module):
    """Euler integration of the estimator's velocity from the fixed noise (t=0) to mel (t=1),
    with classifier-free guidance (the unconditioned half sees no mu, speaker or prompt)."""

    def __init__(self, cfg: CausalFlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.output_size
        self.estimator = CausalConditionalDecoder(cfg, in_channels=4 * n, out_channels=n)

    def forward(self, z, mu, mask, spks, cond, n_timesteps: int) -> torch.Tensor:
        c = self.cfg
        t_span = torch.linspace(0, 1, n_timesteps + 1, device=mu.device, dtype=mu.dtype)
        if c.t_scheduler == "cosine":
            t_span = 1 - torch.cos(t_span * 0.5 * math.pi)
        # time advances by t += dt with dt re-read from the schedule, as upstream's solver does
        # (the float32 sum differs from t_span[i] in the last bit)
        t, dt = t_span[0], t_span[1] - t_span[0]
        x = z
        zeros_mu, zeros_spks, zeros_cond = (
            torch.zeros_like(mu),
            torch.zeros_like(spks),
            torch.zeros_like(cond),
        )
        for step in range(1, n_timesteps + 1):
            v = self.estimator(
                torch.cat([x, x]),
                torch.cat([mask, mask]),
                torch.cat([mu, zeros_mu]),
                t.expand(2),
                torch.cat([spks, zeros_spks]),
                torch.cat([cond, zeros_cond]),
            )
            vc, vu = v.chunk(2)
            v = (1.0 + c.inference_cfg_rate) * vc - c.inference_cfg_rate * vu
            x = x + dt * v
            t = t + dt
            if step < n_timesteps:
                dt = t_span[step + 1] - t
        return x


class CausalMaskedDiffWithXvec(nn.Module):
    """The flow module of CosyVoice2's ``flow.pt``: tokens (after prompt tokens whose mel is
    given) and a speaker embedding -> mel frames of the tokens."""

    NOISE_FRAMES = 50 * 300  # upstream's table: 300 s of mel; longer sequences reuse it cyclically
    NOISE_SEED = 0

    def __init__(self, cfg: CausalFlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = UpsampleConformerEncoder(cfg)
        self.encoder_proj = nn.Linear(cfg.encoder_output_size, cfg.output_size)
        self.decoder = CausalConditionalCFM(cfg)
        gen = torch.Generator().manual_seed(self.NOISE_SEED)
        noise = torch.randn(1, cfg.output_size, self.NOISE_FRAMES, generator=gen)
        self.register_buffer("noise", noise, persistent=False)

    def start_noise(self, frames: int) -> torch.Tensor:
        """The fixed start noise of frames ``0..frames-1``: ``[1, 80, frames]``."""
        reps = -(-frames // self.NOISE_FRAMES)
        return self.noise.repeat(1, 1, reps)[:, :, :frames]

    def _check(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat, embedding):
        c = self.cfg
        for name, ids in (("token", token), ("prompt_token", prompt_token)):
            if ids.dim() != 2 or ids.shape[0] != 1:
                raise ValueError(f"{name} must be [1, T], got {tuple(ids.shape)}")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= c.vocab_size):
                raise ValueError(
                    f"{name} ids must lie in [0, {c.vocab_size}), got "
                    f"{int(ids.min())}..{int(ids.max())}"
                )
        if token.shape[1] == 0:
            raise ValueError("token must hold at least one token")
        if (
            prompt_feat.dim() != 3
            or prompt_feat.shape[0] != 1
            or prompt_feat.shape[2] != c.output_size
        ):
            raise ValueError(
                f"prompt_feat must be [1, frames, {c.output_size}], got {tuple(prompt_feat.shape)}"
            )
        if prompt_feat.shape[1] > c.frames_for(prompt_token.shape[1] + token.shape[1]):
            raise ValueError(
                f"prompt_feat has {prompt_feat.shape[1]} frames, more than the "
                f"{c.frames_for(prompt_token.shape[1] + token.shape[1])} of all tokens"
            )
        if embedding.shape != (1, c.spk_embed_dim):
            raise ValueError(
                f"embedding must be [1, {c.spk_embed_dim}], got {tuple(embedding.shape)}"
            )

    @torch.inference_mode()
    def inference(
        self,
        token: torch.Tensor,
        prompt_token: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
        n_timesteps: int = 10,
    ) -> torch.Tensor:
        """Mel ``[1, 80, F]`` of ``token`` ``[1, T]`` following ``prompt_token`` ``[1, Tp]`` whose
        mel is ``prompt_feat`` ``[1, Fp, 80]`` (``Fp = ratio * Tp`` as the frontend cuts it),
        spoken by ``embedding`` ``[1, 192]``: ``F = ratio * (Tp + T) - Fp``."""
        self._check(token, prompt_token, prompt_feat, embedding)
        dtype = self.input_embedding.weight.dtype
        spks = self.spk_embed_affine_layer(F.normalize(embedding.to(dtype), dim=1))
        tokens = torch.cat([prompt_token, token], 1).long()
        h = self.encoder_proj(self.encoder(self.input_embedding(tokens)))  # [1, F, 80]
        frames, n_prompt = h.shape[1], prompt_feat.shape[1]
        mu = h.transpose(1, 2)
        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt] = prompt_feat.to(dtype).transpose(1, 2)
        mask = torch.ones(1, 1, frames, device=mu.device, dtype=dtype)
        z = self.start_noise(frames).to(device=mu.device, dtype=dtype)
        mel = self.decoder(z, mu, mask, spks, cond, n_timesteps)
        return mel[:, :, n_prompt:].float()


__all__ = [
    "CausalFlowConfig",
    "CausalMaskedDiffWithXvec",
    "causal_flow_config",
    "cosyvoice2_hift_config",
]
