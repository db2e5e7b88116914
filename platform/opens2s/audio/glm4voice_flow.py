"""GLM-4-Voice's flow: speech units -> 80-bin mel at 22,050 Hz / hop 256 (CosyVoice-1 style).

Unit embedding -> block-causal Conformer encoder (relative positions, blocks of ``block_size``
units see themselves and everything before) -> linear to 80 -> length regulator (nearest
interpolation to the frame count, then convs) -> conditional flow matching: a 1-D U-Net
(``ConditionalDecoder``: ResNet + transformer blocks, down / mid / up) integrated with Euler
steps on a cosine time schedule, with classifier-free guidance.

Parameter names follow the released ``flow.pt`` exactly (see docs/speech.md for the sources),
so its state dict loads with ``strict=True``. Noise is not drawn per call: the start noise of
frame ``i`` is column ``i`` of a fixed seeded table, so a block decoded with its prompt and the
whole utterance decoded at once start from the same noise at the same frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

MEL_RATE = 22050 / 256  # mel frames per second


@dataclass(frozen=True)
class FlowConfig:
    """The ``flow:`` section of the decoder's config.yaml (released sizes as defaults)."""

    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    vocab_size: int = 16384
    input_frame_rate: float = 12.5
    # encoder (BlockConformerEncoder)
    encoder_output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    block_size: int = 10
    # length regulator
    regulator_channels: int = 80
    sampling_ratios: tuple[int, ...] = (1, 1, 1, 1)
    # flow matching
    inference_cfg_rate: float = 0.7
    t_scheduler: str = "cosine"
    n_timesteps: int = 10
    # estimator (ConditionalDecoder)
    channels: tuple[int, ...] = (256, 256)
    attention_head_dim: int = 64
    n_blocks: int = 4
    num_mid_blocks: int = 12
    num_heads: int = 8
    extra: dict = field(default_factory=dict, compare=False)

    def frames_for(self, n_units: int) -> int:
        """Mel frames of ``n_units`` units (see :func:`mel_frames`)."""
        return mel_frames(n_units, self.input_frame_rate)


def mel_frames(n_units: int, unit_rate: float = 12.5) -> int:
    """Mel frames of ``n_units`` units exactly as upstream computes them: an int32 count divided
    in float32 (``/ rate * 22050 / 256``), truncated. Float64 arithmetic gives one frame more or
    less for a few counts (e.g. 3392 units)."""
    n = torch.tensor(n_units, dtype=torch.int32)
    return int((n / unit_rate * 22050 / 256).int())


# ---------------------------------------------------------------------------------------------
# encoder


def rel_positions(length: int, d_model: int) -> torch.Tensor:
    """ESPnet relative positional encoding for offsets ``length-1 .. -(length-1)``: [2L-1, d]."""
    pos = torch.arange(length - 1, -length, -1, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(1e4) / d_model))
    pe = torch.zeros(2 * length - 1, d_model)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def block_causal_mask(length: int, block: int) -> torch.Tensor:
    """``[L, L]`` bool: position i sees every position before the end of its block."""
    ends = (torch.arange(length) // block + 1) * block
    return torch.arange(length)[None, :] < ends[:, None]


class _RelPosSelfAttention(nn.Module):
    """Transformer-XL style self-attention with learned biases ``pos_bias_u/v``."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.linear_q, self.linear_k = nn.Linear(d, d), nn.Linear(d, d)
        self.linear_v, self.linear_out = nn.Linear(d, d), nn.Linear(d, d)
        self.linear_pos = nn.Linear(d, d, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.dk))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.dk))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.dk)
        k = self.linear_k(x).view(b, t, self.h, self.dk).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.dk).transpose(1, 2)
        p = self.linear_pos(pos).view(1, -1, self.h, self.dk).transpose(1, 2)  # [1,h,2t-1,dk]
        ac = (q + self.pos_bias_u).transpose(1, 2) @ k.transpose(-2, -1)
        bd = (q + self.pos_bias_v).transpose(1, 2) @ p.transpose(-2, -1)  # [b,h,t,2t-1]
        # score for key j at query i uses relative offset i - j: column (t-1) - (i - j)
        idx = (t - 1) - torch.arange(t)[:, None] + torch.arange(t)[None, :]
        bd = bd.gather(-1, idx.expand(b, self.h, t, t))
        scores = (ac + bd) / math.sqrt(self.dk)
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
        out = torch.softmax(scores, -1) @ v
        return self.linear_out(out.transpose(1, 2).reshape(b, t, -1))


class _FeedForward(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-norm attention + feed-forward (the released config has no conv module, no macaron)."""

    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = _RelPosSelfAttention(d, heads)
        self.feed_forward = _FeedForward(d, hidden)
        self.norm_ff = nn.LayerNorm(d, eps=1e-5)
        self.norm_mha = nn.LayerNorm(d, eps=1e-5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), mask, pos)
        return x + self.feed_forward(self.norm_ff(x))


class LinearEmbed(nn.Module):
    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(d_in, d), nn.LayerNorm(d, eps=1e-5))


class BlockConformerEncoder(nn.Module):
    """Unit embeddings ``[B, T, input_size]`` -> ``[B, T, output_size]``, block-causal."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        d = cfg.encoder_output_size
        self.d, self.block = d, cfg.block_size
        self.embed = LinearEmbed(cfg.input_size, d)
        self.encoders = nn.ModuleList(
            ConformerLayer(d, cfg.attention_heads, cfg.linear_units) for _ in range(cfg.num_blocks)
        )
        self.after_norm = nn.LayerNorm(d, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        x = self.embed.out(x) * math.sqrt(self.d)
        pos = rel_positions(t, self.d).to(x)
        mask = block_causal_mask(t, self.block).to(x.device)[None]
        for layer in self.encoders:
            x = layer(x, mask, pos)
        return self.after_norm(x)


class InterpolateRegulator(nn.Module):
    """Nearest-neighbour resampling of encoder frames to mel frames, then convs."""

    def __init__(self, channels: int, ratios: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in ratios:
            layers += [nn.Conv1d(channels, channels, 3, 1, 1), nn.GroupNorm(1, channels), nn.Mish()]
        layers.append(nn.Conv1d(channels, channels, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:
        """``[B, T, C]`` -> ``[B, frames, C]``."""
        x = F.interpolate(h.transpose(1, 2), size=frames, mode="nearest")
        return self.model(x).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# estimator: the conditional 1-D U-Net (Matcha-TTS components, diffusers transformer blocks)


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
    arg = scale * t.reshape(-1, 1).float() * freqs[None]
    return torch.cat([arg.sin(), arg.cos()], -1)


class TimeMLP(nn.Module):
    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(d_in, d), nn.Linear(d, d)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(t)))


class _Block1D(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(d_in, d_out, 3, padding=1), nn.GroupNorm(8, d_out), nn.Mish()
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class ResnetBlock1D(nn.Module):
    def __init__(self, d_in: int, d_out: int, d_time: int, block: type = _Block1D) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(d_time, d_out))
        self.block1, self.block2 = block(d_in, d_out), block(d_out, d_out)
        self.res_conv = nn.Conv1d(d_in, d_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.mlp(temb)[..., None]
        return self.block2(h, mask) + self.res_conv(x * mask)


class Downsample1D(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d, d, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1D(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(d, d, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Attention(nn.Module):
    """diffusers ``Attention``: q/k/v without bias, ``to_out.0`` with bias."""

    def __init__(self, d: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.h = heads
        self.to_q = nn.Linear(d, inner, bias=False)
        self.to_k = nn.Linear(d, inner, bias=False)
        self.to_v = nn.Linear(d, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, d), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (
            f(x).view(b, t, self.h, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.to_out[0](out.transpose(1, 2).reshape(b, t, -1))


class _GELUProj(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class _TransformerFF(nn.Module):
    def __init__(self, d: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GELUProj(d, d * mult), nn.Dropout(0.0), nn.Linear(d * mult, d)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class TransformerBlock(nn.Module):
    """diffusers/Matcha ``BasicTransformerBlock`` with self-attention only (norm1, attn1, norm3, ff)."""

    def __init__(self, d: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn1 = _Attention(d, heads, head_dim)
        self.norm3 = nn.LayerNorm(d)
        self.ff = _TransformerFF(d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), bias)
        return x + self.ff(self.norm3(x))


def _attn_bias(mask: torch.Tensor) -> torch.Tensor:
    """Upstream passes ``mask^T @ mask`` (1.0 / 0.0) to diffusers, which *adds* it to the scores;
    a constant +1 over a row changes nothing, so only padded keys (0) differ. Same here."""
    m = mask.transpose(1, 2) @ mask  # [B, T, T]
    return m[:, None].to(mask.dtype)


class ConditionalDecoder(nn.Module):
    """The flow-matching estimator: (x, mu, speaker, cond) at time t -> velocity, ``[B, 80, T]``.

    Subclasses swap the conv block (``block``), the stride-1 conv that ends the last down / up
    level (``edge_conv``) and the attention bias (``attn_bias``); CosyVoice2's causal variant
    does (see :mod:`opens2s.audio.cosyvoice2_flow`).
    """

    block: type = _Block1D

    @staticmethod
    def edge_conv(channels: int) -> nn.Module:
        return nn.Conv1d(channels, channels, 3, padding=1)

    @staticmethod
    def attn_bias(mask: torch.Tensor) -> torch.Tensor:
        return _attn_bias(mask)

    def __init__(self, cfg: FlowConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        ch = tuple(cfg.channels)
        self.in_channels = in_channels
        d_time = ch[0] * 4
        self.time_mlp = TimeMLP(in_channels, d_time)

        def tblocks(d: int) -> nn.ModuleList:
            return nn.ModuleList(
                TransformerBlock(d, cfg.num_heads, cfg.attention_head_dim)
                for _ in range(cfg.n_blocks)
            )

        self.down_blocks = nn.ModuleList()
        out_c = in_channels
        for i, c in enumerate(ch):
            in_c, out_c = out_c, c
            last = i == len(ch) - 1
            down = self.edge_conv(out_c) if last else Downsample1D(out_c)
            self.down_blocks.append(
                nn.ModuleList(
                    [ResnetBlock1D(in_c, out_c, d_time, self.block), tblocks(out_c), down]
                )
            )
        self.mid_blocks = nn.ModuleList(
            nn.ModuleList([ResnetBlock1D(ch[-1], out_c, d_time, self.block), tblocks(out_c)])
            for _ in range(cfg.num_mid_blocks)
        )
        up_ch = ch[::-1] + (ch[0],)
        self.up_blocks = nn.ModuleList()
        for i in range(len(up_ch) - 1):
            last = i == len(up_ch) - 2
            c = up_ch[i + 1]
            up = self.edge_conv(c) if last else Upsample1D(c)
            self.up_blocks.append(
                nn.ModuleList([ResnetBlock1D(up_ch[i] * 2, c, d_time, self.block), tblocks(c), up])
            )
        self.final_block = self.block(up_ch[-1], up_ch[-1])
        self.final_proj = nn.Conv1d(up_ch[-1], out_channels, 1)

    def _run(self, blocks: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bias = self.attn_bias(mask)
        x = x.transpose(1, 2)
        for blk in blocks:
            x = blk(x, bias)
        return x.transpose(1, 2)

    def forward(self, x, mask, mu, t, spks, cond) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.in_channels).to(x.dtype))
        x = torch.cat([x, mu, spks[..., None].expand(-1, -1, x.shape[-1]), cond], 1)
        hiddens, masks = [], [mask]
        for resnet, blocks, down in self.down_blocks:
            m = masks[-1]
            x = self._run(blocks, resnet(x, m, temb), m)
            hiddens.append(x)
            x = down(x * m)
            masks.append(m[:, :, ::2])
        masks = masks[:-1]
        m = masks[-1]
        for resnet, blocks in self.mid_blocks:
            x = self._run(blocks, resnet(x, m, temb), m)
        for resnet, blocks, up in self.up_blocks:
            m = masks.pop()
            skip = hiddens.pop()
            x = torch.cat([x[:, :, : skip.shape[-1]], skip], 1)
            x = self._run(blocks, resnet(x, m, temb), m)
            x = up(x * m)
        x = self.final_block(x, m)
        return self.final_proj(x * m) * mask


class ConditionalCFM(nn.Module):
    """Euler integration of the estimator's velocity from noise (t=0) to mel (t=1)."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.output_size
        self.estimator = ConditionalDecoder(cfg, in_channels=4 * n, out_channels=n)

    def forward(self, z, mu, mask, spks, cond) -> torch.Tensor:
        c = self.cfg
        t_span = torch.linspace(0, 1, c.n_timesteps + 1, device=mu.device, dtype=torch.float32)
        if c.t_scheduler == "cosine":
            t_span = 1 - torch.cos(t_span * 0.5 * math.pi)
        x = z
        for i in range(c.n_timesteps):
            t, dt = t_span[i], t_span[i + 1] - t_span[i]
            if c.inference_cfg_rate > 0:  # conditioned and unconditioned in one batch
                v = self.estimator(
                    torch.cat([x, x]),
                    torch.cat([mask, mask]),
                    torch.cat([mu, torch.zeros_like(mu)]),
                    t.expand(2),
                    torch.cat([spks, torch.zeros_like(spks)]),
                    torch.cat([cond, torch.zeros_like(cond)]),
                )
                vc, vu = v.chunk(2)
                v = (1.0 + c.inference_cfg_rate) * vc - c.inference_cfg_rate * vu
            else:
                v = self.estimator(x, mask, mu, t[None], spks, cond)
            x = x + dt.to(x.dtype) * v
        return x


class MaskedDiffWithXvec(nn.Module):
    """The flow module of ``flow.pt``: units (+ prompt units and prompt mel) -> mel frames."""

    NOISE_FRAMES = 15000  # ~174 s of mel; longer sequences reuse the table cyclically

    def __init__(self, cfg: FlowConfig, noise_seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = BlockConformerEncoder(cfg)
        self.encoder_proj = nn.Linear(cfg.encoder_output_size, cfg.output_size)
        self.length_regulator = InterpolateRegulator(cfg.regulator_channels, cfg.sampling_ratios)
        self.decoder = ConditionalCFM(cfg)
        gen = torch.Generator().manual_seed(noise_seed)
        noise = torch.randn(cfg.output_size, self.NOISE_FRAMES, generator=gen)
        self.register_buffer("noise", noise, persistent=False)

    def start_noise(self, frames: int) -> torch.Tensor:
        """The fixed start noise of frames ``0..frames-1``: ``[1, 80, frames]``."""
        reps = -(-frames // self.NOISE_FRAMES)
        return self.noise.repeat(1, reps)[None, :, :frames]

    @torch.inference_mode()
    def inference(
        self,
        units: torch.Tensor,
        prompt_units: torch.Tensor,
        prompt_mel: torch.Tensor,
        speaker: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mel ``[1, 80, F]`` of ``units`` ``[1, N]`` following ``prompt_units`` ``[1, P]`` whose
        mel ``[1, 80, Fp]`` is given; ``F = frames_for(P + N) - Fp``."""
        c = self.cfg
        dtype = self.input_embedding.weight.dtype
        if speaker is None:
            speaker = torch.zeros(1, c.spk_embed_dim, device=units.device, dtype=dtype)
        spks = self.spk_embed_affine_layer(F.normalize(speaker, dim=1))
        tokens = torch.cat([prompt_units, units], 1).clamp(min=0)
        h = self.encoder_proj(self.encoder(self.input_embedding(tokens)))
        frames = c.frames_for(tokens.shape[1])
        mu = self.length_regulator(h, frames).transpose(1, 2)  # [1, 80, F]
        n_prompt = prompt_mel.shape[2]
        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt] = prompt_mel.to(dtype)
        mask = torch.ones(1, 1, frames, device=mu.device, dtype=dtype)
        z = self.start_noise(frames).to(device=mu.device, dtype=dtype)
        mel = self.decoder(z, mu, mask, spks, cond)
        return mel[:, :, n_prompt:]
