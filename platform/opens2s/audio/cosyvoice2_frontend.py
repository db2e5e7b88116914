"""CosyVoice2's frontend: text -> token ids, and a prompt recording -> speech tokens, a speaker
embedding and a prompt mel.

- Text: ``CosyVoice-BlankEN``'s Qwen2 tokenizer (read locally) with the special tokens upstream
  adds for CosyVoice2 (``<|endofprompt|>`` ends an instruction; ``[breath]``, ``[laughter]`` ...
  are spoken events), no BOS/EOS added.
- Speech tokens (25/s): Whisper's 128-bin log-mel of the 16 kHz wave (openai-whisper's
  ``log_mel_spectrogram``: 400-point Hann STFT, hop 160, Slaney mel, log10 floored 8 decades
  below the peak, ``(x + 4) / 4``, no padding) -> ``speech_tokenizer_v2.onnx`` with inputs
  ``[feats [1, 128, T] float32, feats_length [1] int32]``; at most 30 s, as upstream.
- Speaker embedding (192-d): Kaldi fbank of the 16 kHz wave (80 bins, 25 ms Povey window every
  10 ms, pre-emphasis 0.97, DC removed, no dither, log power; written here, torchaudio is not a
  dependency), minus its mean over time -> ``campplus.onnx`` (input ``[1, T, 80]`` float32).
- Prompt mel (50 frames/s): the yaml's ``feat_extractor`` (Matcha-TTS ``mel_spectrogram``: 24 kHz,
  n_fft 1920, hop 480, Hann 1920, 80 Slaney mel bins 0-8000 Hz, reflect padding of
  ``(n_fft - hop) / 2`` each side, magnitude ``sqrt(re^2 + im^2 + 1e-9)``, ``log(max(x, 1e-5))``).

ONNX inputs are passed by position, as upstream does, and checked for rank and type on load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from opens2s.audio.features import mel_filters
from opens2s.audio.glm4voice_decoder import DecoderLoadError
from opens2s.audio.io import AudioError, mono_wave, resample

TOKENIZER_RATE = 16000
MAX_PROMPT_SECONDS = 30.0  # speech_tokenizer_v2 refuses longer audio upstream
SPEECH_TOKEN_RATE = 25
SPEAKER_DIM = 192
ENDOFPROMPT = "<|endofprompt|>"
# The special tokens upstream's CosyVoice2Tokenizer adds (cosyvoice/tokenizer/tokenizer.py).
COSYVOICE2_SPECIALS = (
    "<|im_start|>",
    "<|im_end|>",
    ENDOFPROMPT,
    "[breath]",
    "<strong>",
    "</strong>",
    "[noise]",
    "[laughter]",
    "[cough]",
    "[clucking]",
    "[accent]",
    "[quick_breath]",
    "<laughter>",
    "</laughter>",
    "[hissing]",
    "[sigh]",
    "[vocalized-noise]",
    "[lipsmack]",
    "[mn]",
)


class CosyVoice2Error(AudioError):
    """A CosyVoice2 request that cannot be rendered: ``source`` names the input, ``problem`` why."""


# ---------------------------------------------------------------------------------------------
# features


def _wave_tensor(wave: np.ndarray | torch.Tensor, name: str, min_samples: int) -> torch.Tensor:
    arr = mono_wave(np.asarray(wave, dtype=np.float32), name, finite=True)
    if arr.size < min_samples:
        raise CosyVoice2Error(name, f"{arr.size} samples, need at least {min_samples}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _kaldi_mel(n_bins: int, n_fft: int, sr: int, low: float, high: float) -> torch.Tensor:
    """Kaldi's triangular mel filters on the mel scale 1127 ln(1 + f/700), ``[n_bins, n_fft/2+1]``
    (no area normalisation; the Nyquist bin gets no weight)."""

    lo = 1127.0 * math.log(1.0 + low / 700.0)
    step = (1127.0 * math.log(1.0 + high / 700.0) - lo) / (n_bins + 1)
    left = lo + step * torch.arange(n_bins, dtype=torch.float32)[:, None]
    centre, right = left + step, left + 2 * step
    freqs = sr / n_fft * torch.arange(n_fft // 2, dtype=torch.float32)
    bins = (1127.0 * torch.log(1.0 + freqs / 700.0))[None, :]
    up = (bins - left) / (centre - left)
    down = (right - bins) / (right - centre)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(weights, (0, 1))


def kaldi_fbank(wave16k: np.ndarray | torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """Kaldi log-mel filterbank ``[frames, num_mel_bins]`` of a 16 kHz wave, with the settings
    upstream uses for CAM++ (torchaudio ``compliance.kaldi.fbank`` defaults, dither 0)."""
    x = _wave_tensor(wave16k, "fbank input", 400)
    length, shift, n_fft = 400, 160, 512  # 25 ms, 10 ms, next power of two
    frames = x.unfold(0, length, shift)  # snip edges: only whole frames
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - 0.97 * prev
    povey = torch.hann_window(length, periodic=False, dtype=torch.float32).pow(0.85)
    frames = F.pad(frames * povey, (0, n_fft - length))
    power = torch.fft.rfft(frames).abs().pow(2)
    energies = power @ _kaldi_mel(num_mel_bins, n_fft, TOKENIZER_RATE, 20.0, 8000.0).T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


@lru_cache(maxsize=4)
def _filters(sr: int, n_fft: int, n_mels: int, fmax: float) -> torch.Tensor:
    return torch.tensor(mel_filters(sr, n_fft, n_mels, fmax).T, dtype=torch.float32)


def whisper_log_mel(wave16k: np.ndarray | torch.Tensor, n_mels: int = 128) -> torch.Tensor:
    """openai-whisper's ``log_mel_spectrogram`` ``[n_mels, samples // 160]`` (no padding)."""
    x = _wave_tensor(wave16k, "whisper log-mel input", 201)
    stft = torch.stft(x, 400, 160, window=torch.hann_window(400), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(_filters(16000, 400, n_mels, 8000.0) @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@dataclass(frozen=True)
class MelConfig:
    """The yaml's ``feat_extractor`` (Matcha-TTS mel_spectrogram) parameters."""

    n_fft: int = 1920
    num_mels: int = 80
    sampling_rate: int = 24000
    hop_size: int = 480
    win_size: int = 1920
    fmin: float = 0.0
    fmax: float = 8000.0
    center: bool = False


def mel_config(cfg: dict, path: str = "cosyvoice2.yaml") -> MelConfig:
    """The ``feat_extractor:`` section of a parsed cosyvoice2.yaml."""
    sec = cfg.get("feat_extractor")
    if not isinstance(sec, dict):
        raise DecoderLoadError(f"{path}: missing 'feat_extractor' section")
    d = MelConfig()
    try:
        out = MelConfig(
            n_fft=int(sec.get("n_fft", d.n_fft)),
            num_mels=int(sec.get("num_mels", d.num_mels)),
            sampling_rate=int(sec.get("sampling_rate", d.sampling_rate)),
            hop_size=int(sec.get("hop_size", d.hop_size)),
            win_size=int(sec.get("win_size", d.win_size)),
            fmin=float(sec.get("fmin", d.fmin)),
            fmax=float(sec.get("fmax", d.fmax)),
            center=bool(sec.get("center", d.center)),
        )
    except (TypeError, ValueError) as e:
        raise DecoderLoadError(f"{path}: feat_extractor holds a non-number ({e})") from e
    if out.center or out.fmin != 0.0 or out.win_size != out.n_fft:
        raise DecoderLoadError(
            f"{path}: feat_extractor must have center False, fmin 0 and win_size == n_fft "
            f"(the released values), got {out}"
        )
    return out


def matcha_mel(wave: np.ndarray | torch.Tensor, cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """Matcha-TTS ``mel_spectrogram`` (``center=False``): ``[num_mels, samples // hop]``."""
    pad = (cfg.n_fft - cfg.hop_size) // 2
    x = _wave_tensor(wave, "prompt mel input", pad + 1)
    x = F.pad(x[None, None], (pad, pad), mode="reflect")[0]
    spec = torch.stft(
        x,
        cfg.n_fft,
        hop_length=cfg.hop_size,
        win_length=cfg.win_size,
        window=torch.hann_window(cfg.win_size),
        center=False,
        return_complex=True,
    )
    mag = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
    mel = _filters(cfg.sampling_rate, cfg.n_fft, cfg.num_mels, cfg.fmax) @ mag[0]
    return torch.clamp(mel, min=1e-5).log()


# ---------------------------------------------------------------------------------------------
# ONNX models


def _session(path: Path, expected: list[tuple[str, int, str]]):
    """An onnxruntime CPU session for ``path`` whose inputs (by position) have the expected
    (what, rank, element type); anything else is a :class:`DecoderLoadError` naming the input."""
    import onnxruntime

    if not path.is_file():
        raise DecoderLoadError(f"{path}: missing")
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = onnxruntime.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        raise DecoderLoadError(f"{path}: not a loadable ONNX model ({e})") from e
    inputs = sess.get_inputs()
    if len(inputs) != len(expected):
        raise DecoderLoadError(
            f"{path}: has {len(inputs)} inputs {[i.name for i in inputs]}, expected "
            f"{len(expected)}: {[e[0] for e in expected]}"
        )
    for k, (inp, (what, rank, kind)) in enumerate(zip(inputs, expected, strict=True)):
        if len(inp.shape) != rank or inp.type != kind:
            raise DecoderLoadError(
                f"{path}: input {k} ({inp.name!r}) is {inp.type} of rank {len(inp.shape)}, "
                f"expected {kind} of rank {rank} ({what})"
            )
    return sess


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) else None


class CosyVoice2Frontend:
    """Text ids and prompt features for CosyVoice2 from a model directory's tokenizer and ONNX
    models."""

    def __init__(self, model_dir: str | Path, mel: MelConfig = MelConfig()) -> None:
        model_dir = Path(model_dir)
        self.mel_cfg = mel
        self.tokenizer = _text_tokenizer(model_dir / "CosyVoice-BlankEN")
        self.campplus = _session(
            model_dir / "campplus.onnx", [("fbank [batch, frames, 80]", 3, "tensor(float)")]
        )
        self.speech_tokenizer = _session(
            model_dir / "speech_tokenizer_v2.onnx",
            [
                ("feats [batch, 128 mel bins, frames]", 3, "tensor(float)"),
                ("feats_length [batch]", 1, "tensor(int32)"),
            ],
        )
        bins = _static(self.campplus.get_inputs()[0].shape[2])
        if bins not in (None, 80):
            raise DecoderLoadError(
                f"{model_dir / 'campplus.onnx'}: takes {bins} fbank bins, not 80"
            )
        mels = _static(self.speech_tokenizer.get_inputs()[0].shape[1])
        if mels not in (None, 128):
            raise DecoderLoadError(
                f"{model_dir / 'speech_tokenizer_v2.onnx'}: takes {mels} mel bins, not 128"
            )

    # -- text -----------------------------------------------------------------------------------

    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens such as ``<|endofprompt|>`` as one id each)."""
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    # -- prompt audio ---------------------------------------------------------------------------

    def speech_tokens(self, wave: np.ndarray, sr: int = TOKENIZER_RATE) -> list[int]:
        """Speech tokens (25/s) of a prompt recording at most 30 s long."""
        wave = mono_wave(wave, "prompt wave", finite=True)
        seconds = wave.size / sr
        if seconds > MAX_PROMPT_SECONDS:
            raise CosyVoice2Error(
                "prompt wave",
                f"{seconds:.2f} s is too long: speech tokens are extracted from at most "
                f"{MAX_PROMPT_SECONDS:.0f} s",
            )
        feats = whisper_log_mel(resample(wave, sr, TOKENIZER_RATE))[None]
        feed = [feats.numpy(), np.array([feats.shape[2]], dtype=np.int32)]
        names = [i.name for i in self.speech_tokenizer.get_inputs()]
        tokens = self.speech_tokenizer.run(None, dict(zip(names, feed, strict=True)))[0]
        return [int(t) for t in np.asarray(tokens).reshape(-1)]

    def speaker_embedding(self, wave: np.ndarray, sr: int = TOKENIZER_RATE) -> torch.Tensor:
        """CAM++ speaker embedding ``[1, 192]`` of a prompt recording."""
        feat = kaldi_fbank(resample(mono_wave(wave, "prompt wave", finite=True), sr, 16000))
        feat = feat - feat.mean(dim=0, keepdim=True)
        name = self.campplus.get_inputs()[0].name
        out = np.asarray(self.campplus.run(None, {name: feat[None].numpy()})[0], np.float32)
        emb = torch.from_numpy(out.reshape(1, -1).copy())
        if emb.shape[1] != SPEAKER_DIM:
            raise DecoderLoadError(f"campplus.onnx: gives {emb.shape[1]} values, not {SPEAKER_DIM}")
        return emb

    def prompt_mel(self, wave: np.ndarray, sr: int | None = None) -> torch.Tensor:
        """The flow's prompt mel ``[1, frames, 80]`` (50 frames/s) of a prompt recording."""
        rate = self.mel_cfg.sampling_rate
        wave = resample(mono_wave(wave, "prompt wave", finite=True), sr or rate, rate)
        return matcha_mel(wave, self.mel_cfg).T[None].contiguous()


def _text_tokenizer(blank_dir: Path):
    """CosyVoice-BlankEN's tokenizer (local files only) with CosyVoice2's special tokens."""
    from transformers import AutoTokenizer

    if not blank_dir.is_dir():
        raise DecoderLoadError(f"{blank_dir}: missing (the Qwen2 config and tokenizer)")
    try:
        tok = AutoTokenizer.from_pretrained(str(blank_dir), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise DecoderLoadError(f"{blank_dir}: no readable tokenizer ({e})") from e
    tok.add_special_tokens(
        {
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "additional_special_tokens": list(COSYVOICE2_SPECIALS),
        }
    )
    return tok


__all__ = [
    "COSYVOICE2_SPECIALS",
    "CosyVoice2Error",
    "CosyVoice2Frontend",
    "ENDOFPROMPT",
    "MelConfig",
    "kaldi_fbank",
    "matcha_mel",
    "mel_config",
    "whisper_log_mel",
]
