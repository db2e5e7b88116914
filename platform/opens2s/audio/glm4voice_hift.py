"""GLM-4-Voice's vocoder: HiFT (neural source filter + HiFiGAN upsampler + iSTFT), mel -> wave.
CosyVoice2's 24 kHz vocoder is the same network at other sizes with upstream's frame-rate phase
source (:attr:`HiftConfig.frame_rate_phase`); :mod:`cosyvoice2_flow` uses it from here.

80-bin mel at 22,050 Hz / hop 256 in. An F0 predictor (weight-normed convs + linear) gives F0 per
frame; F0 upsampled to samples drives a sine source (fundamental + ``nb_harmonics``); the
source's STFT is injected at every upsampling stage; the last layer predicts a small STFT
(``n_fft`` 16, hop 4: log-magnitude and phase) that the iSTFT turns into samples.

Parameter names follow the released ``hift.pt`` (``torch.nn.utils.weight_norm``: ``weight_g`` /
``weight_v``). The random parts of the source are fixed: harmonic phases from a seed, and the
additive noise read from a seeded table by absolute sample index, so streamed blocks and a
whole-utterance decode use the same noise at the same samples. The sine phase is carried across
calls (``phase0``), so a block continues the previous block's oscillation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HiftConfig:
    """The ``hift:`` section of the decoder's config.yaml (released sizes as defaults)."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 8)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16)
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512

    @property
    def hop(self) -> int:
        """Samples per mel frame (256 released; CosyVoice2's 24 kHz HiFT: 480)."""
        return int(np.prod(self.upsample_rates)) * self.hop_len

    @property
    def frame_rate_phase(self) -> bool:
        """Whether the sine source integrates its phase at frame rate and interpolates it to
        samples (upstream's ``SineGen2``), as upstream does for any rate other than 22,050 Hz
        (CosyVoice2's 24 kHz); at 22,050 Hz the phase is a per-sample running sum (``SineGen``)."""
        return self.sampling_rate != 22050


class WNConv1d(nn.Module):
    """Conv1d (or ConvTranspose1d) with weight normalisation over dim 0, stored as released:
    ``weight_g`` (norms), ``weight_v`` (directions), ``bias``."""

    def __init__(self, c_in, c_out, k, stride=1, padding=0, dilation=1, transpose=False) -> None:
        super().__init__()
        shape = (c_in, c_out, k) if transpose else (c_out, c_in, k)
        v = torch.randn(shape) * 0.01
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.flatten(1).norm(dim=1).reshape(-1, 1, 1).clone())
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.stride, self.padding, self.dilation, self.transpose = (
            stride,
            padding,
            dilation,
            transpose,
        )

    def weight(self) -> torch.Tensor:
        v = self.weight_v
        return v * (self.weight_g / v.flatten(1).norm(dim=1).reshape(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            return F.conv_transpose1d(x, self.weight(), self.bias, self.stride, self.padding)
        return F.conv1d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha, per channel (linear-scale alpha, as released)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha[None, :, None]
        return x + torch.sin(x * a).pow(2) / (a + 1e-9)


class ResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            WNConv1d(ch, ch, k, dilation=d, padding=(k * d - d) // 2) for d in dilations
        )
        self.convs2 = nn.ModuleList(WNConv1d(ch, ch, k, padding=(k - 1) // 2) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(ch) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(ch) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(
            self.convs1, self.convs2, self.activations1, self.activations2, strict=True
        ):
            x = x + c2(a2(c1(a1(x))))
        return x


class ConvRNNF0Predictor(nn.Module):
    """Mel ``[B, 80, T]`` -> F0 in Hz ``[B, T]`` (five weight-normed convs with ELU, a linear)."""

    def __init__(self, in_channels: int, cond_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [
                WNConv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1),
                nn.ELU(),
            ]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.condnet(mel).transpose(1, 2)).squeeze(-1).abs()


class _SourceModule(nn.Module):
    def __init__(self, n_harm: int) -> None:
        super().__init__()
        self.l_linear = nn.Linear(n_harm + 1, 1)


class HiFTGenerator(nn.Module):
    """The vocoder of ``hift.pt``: mel ``[1, 80, T]`` -> ``T * hop`` samples."""

    NOISE_SAMPLES = 1 << 16  # the additive source noise repeats every ~3 s (inaudible at -50 dB)

    def __init__(self, cfg: HiftConfig, noise_seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        base = cfg.base_channels
        self.m_source = _SourceModule(cfg.nb_harmonics)
        self.conv_pre = WNConv1d(cfg.in_channels, base, 7, padding=3)
        self.ups = nn.ModuleList(
            WNConv1d(
                base // 2**i,
                base // 2 ** (i + 1),
                k,
                stride=u,
                padding=(k - u) // 2,
                transpose=True,
            )
            for i, (u, k) in enumerate(
                zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)
            )
        )
        down_rates = [1] + list(cfg.upsample_rates[::-1][:-1])
        cum = np.cumprod(down_rates)[::-1]
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k, d) in enumerate(
            zip(
                cum,
                cfg.source_resblock_kernel_sizes,
                cfg.source_resblock_dilation_sizes,
                strict=True,
            )
        ):
            ch = base // 2 ** (i + 1)
            u = int(u)
            conv = (
                nn.Conv1d(cfg.n_fft + 2, ch, 1, 1)
                if u == 1
                else nn.Conv1d(cfg.n_fft + 2, ch, u * 2, u, padding=u // 2)
            )
            self.source_downs.append(conv)
            self.source_resblocks.append(ResBlock(ch, k, tuple(d)))
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = base // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
                self.resblocks.append(ResBlock(ch, k, tuple(d)))
        self.conv_post = WNConv1d(ch, cfg.n_fft + 2, 7, padding=3)
        self.f0_predictor = ConvRNNF0Predictor(cfg.in_channels, cfg.f0_cond_channels)
        gen = torch.Generator().manual_seed(noise_seed)
        n_h = cfg.nb_harmonics + 1
        phase = (torch.rand(n_h, 1, generator=gen) * 2 - 1) * np.pi
        phase[0] = 0.0
        self.register_buffer("harmonic_phase", phase, persistent=False)
        self.register_buffer(
            "source_noise", torch.randn(n_h, self.NOISE_SAMPLES, generator=gen), persistent=False
        )
        self.register_buffer("stft_window", torch.hann_window(cfg.n_fft), persistent=False)

    def _source(
        self, f0: torch.Tensor, offset: int, phase0: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Harmonic source ``[1, 1, L]`` of frame-rate F0 ``[1, T]`` starting at absolute sample
        ``offset``, and the cumulative phase (in cycles) after each sample ``[n_h, L]``."""
        c = self.cfg
        if c.frame_rate_phase:
            return self._source_frame_rate_phase(f0, offset, phase0)
        f0 = f0.float().repeat_interleave(c.hop, dim=1)[0]  # [L]
        n_h = c.nb_harmonics + 1
        cycles = f0[None] * torch.arange(1, n_h + 1, device=f0.device)[:, None] / c.sampling_rate
        cum = torch.cumsum(cycles, dim=1)
        if phase0 is not None:
            cum = cum + phase0[:, None]
        cum = cum % 1.0
        sines = c.nsf_alpha * torch.sin(2 * np.pi * cum + self.harmonic_phase)
        return self._merge(f0, sines, offset), cum

    def _source_frame_rate_phase(
        self, f0: torch.Tensor, offset: int, phase0: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The source as upstream's ``SineGen2`` makes it: per-harmonic phase increments (in
        cycles, wrapped to [0, 1)) averaged to frame rate by linear resampling, summed per frame,
        scaled back to samples and linearly interpolated. The operations and their order follow
        upstream so that float32 rounding of the large phases agrees. Upstream's random start
        phase sits on sample 0 only, which the frame-rate resampling never reads (it averages
        samples ``hop/2 - 1`` and ``hop/2`` of each frame), so there is none here."""
        c = self.cfg
        hop = c.hop
        n_h = c.nb_harmonics + 1
        f0 = f0.float().repeat_interleave(hop, dim=1)  # [1, L]
        harmonics = torch.arange(1, n_h + 1, device=f0.device, dtype=f0.dtype)
        step = (f0[..., None] * harmonics / c.sampling_rate) % 1  # [1, L, n_h] cycles/sample
        step = F.interpolate(step.transpose(1, 2), scale_factor=1 / hop, mode="linear")
        phase = torch.cumsum(step.transpose(1, 2), dim=1) * 2 * np.pi  # [1, T, n_h]
        phase = F.interpolate(phase.transpose(1, 2) * hop, scale_factor=hop, mode="linear")[0]
        if phase0 is not None:
            phase = phase + 2 * np.pi * phase0[:, None]
        sines = c.nsf_alpha * torch.sin(phase)  # [n_h, L]
        return self._merge(f0[0], sines, offset), (phase / (2 * np.pi)) % 1.0

    def _merge(self, f0: torch.Tensor, sines: torch.Tensor, offset: int) -> torch.Tensor:
        """Voiced samples keep the harmonics plus weak noise, unvoiced ones get noise only; the
        harmonics are merged into one channel (linear + tanh): ``[1, 1, L]``."""
        c = self.cfg
        uv = (f0 > c.nsf_voiced_threshold).float()[None]
        idx = (torch.arange(f0.shape[0], device=f0.device) + offset) % self.NOISE_SAMPLES
        noise = (uv * c.nsf_sigma + (1 - uv) * c.nsf_alpha / 3) * self.source_noise[:, idx]
        sines = sines * uv + noise
        w = self.m_source.l_linear
        merged = torch.tanh(sines.T.to(w.weight.dtype) @ w.weight.T + w.bias)  # [L, 1]
        return merged.T[None]

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        spec = torch.stft(
            x.float(), c.n_fft, c.hop_len, c.n_fft, window=self.stft_window, return_complex=True
        )
        return torch.cat([spec.real, spec.imag], 1)

    @torch.inference_mode()
    def inference(
        self,
        mel: torch.Tensor,
        cache_source: torch.Tensor | None = None,
        offset: int = 0,
        phase0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Wave ``[1, T*hop]``, its source ``[1, 1, T*hop]`` and the source's phase per sample.

        ``cache_source`` (the previous call's last source samples) replaces the start of this
        call's source, as upstream's streaming does; ``offset`` is the absolute sample index of
        the first sample (noise table position); ``phase0`` the phase the sine starts from.
        """
        c = self.cfg
        f0 = self.f0_predictor(mel)
        s, cum = self._source(f0, offset, phase0)
        if cache_source is not None and cache_source.shape[2]:
            s[:, :, : cache_source.shape[2]] = cache_source.to(s.dtype)
        s_stft = self._stft(s[:, 0]).to(mel.dtype)
        x = self.conv_pre(mel)
        n_k = len(c.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, c.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s_stft))
            x = sum(self.resblocks[i * n_k + j](x) for j in range(n_k)) / n_k
        x = self.conv_post(F.leaky_relu(x)).float()
        half = c.n_fft // 2 + 1
        mag = torch.exp(x[:, :half]).clamp(max=1e2)
        phase = torch.sin(x[:, half:])
        wave = torch.istft(
            torch.polar(mag, phase), c.n_fft, c.hop_len, c.n_fft, window=self.stft_window
        )
        return wave.clamp(-c.audio_limit, c.audio_limit), s, cum
