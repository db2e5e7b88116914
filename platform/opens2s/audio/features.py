"""Log-mel features: the audio encoder's input (Whisper / Qwen2-Audio) and the unit tokenizer's frames.

``log_mel`` reproduces ``transformers.WhisperFeatureExtractor(feature_size=n_mels)`` (16 kHz, 400-point
Hann STFT, hop 160, Slaney mel filters up to 8 kHz, log10 with an 8-decade floor below the window's
peak, scaled by (x + 4) / 4) without importing transformers. Audio is cut into encoder windows
(30 s by default, the released encoders'; a model with a shorter encoder window passes its own
``OpenS2SConfig.audio_window_frames``); each window is padded with zeros to its full length and
featurised on its own, exactly as the extractor does with a 30 s input, and the windows are
concatenated along time.

``speech_mel`` is the invertible mel spectrogram the unit tokenizer quantizes and the vocoder turns
back into a wave (natural-log magnitude mel, 10 ms hop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from opens2s.audio.io import AudioError, mono_wave
from opens2s.config.audio import AudioSection

_DEFAULTS = AudioSection()

WHISPER_SR = 16000
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * WHISPER_SR
WINDOW_FRAMES = WINDOW_SAMPLES // WHISPER_HOP  # 3000


def _hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    mels[log_region] = 15.0 + np.log(freq[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mels


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    freq[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels[log_region] - 15.0))
    return freq


@lru_cache(maxsize=16)
def mel_filters(sr: int, n_fft: int, n_mels: int, fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape ``[n_fft // 2 + 1, n_mels]`` (float64)."""
    fmax = sr / 2 if fmax is None else fmax
    mel_max = _hz_to_mel_slaney(np.array([fmax]))[0]
    mel_pts = np.linspace(0.0, mel_max, n_mels + 2)
    filter_freqs = _mel_to_hz_slaney(mel_pts)
    fft_freqs = np.linspace(0, sr // 2, n_fft // 2 + 1)
    diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    enorm = 2.0 / (filter_freqs[2 : n_mels + 2] - filter_freqs[:n_mels])
    filters = filters * enorm[None, :]
    filters.flags.writeable = False  # cached: callers share one array
    return filters


def _check_wave(wave: np.ndarray, sr: int) -> np.ndarray:
    if sr != WHISPER_SR:
        raise AudioError("log_mel input", f"wrong sample rate {sr} Hz, expected {WHISPER_SR} Hz")
    arr = np.asarray(wave, dtype=np.float32)
    if arr.ndim != 1:
        raise AudioError("log_mel input", f"expected a mono 1-D wave, got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError("log_mel input", "empty audio (0 samples)")
    return arr


def num_windows(n_samples: int, window_frames: int | None = None) -> int:
    """How many encoder windows (default 30 s) audio of ``n_samples`` (16 kHz) occupies (>= 1)."""
    window_samples = _window_frames(window_frames) * WHISPER_HOP
    return max(1, -(-n_samples // window_samples))


def _window_frames(window_frames: int | None) -> int:
    if window_frames is None:
        return WINDOW_FRAMES
    if int(window_frames) <= 0:
        raise ValueError(f"window_frames={window_frames}: expected a positive frame count")
    return int(window_frames)


def valid_frames(n_samples: int) -> int:
    """Frames of a 16 kHz wave of ``n_samples`` that hold audio (the extractor's mask sum)."""
    return -(-n_samples // WHISPER_HOP)


@lru_cache(maxsize=4)
def _whisper_filters(n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Hann window, mel filters ``[n_mels, n_fft // 2 + 1]``) of the Whisper features, built once."""
    filt = mel_filters(WHISPER_SR, WHISPER_N_FFT, n_mels, 8000.0)
    return torch.hann_window(WHISPER_N_FFT), torch.tensor(filt.T, dtype=torch.float32)


def _whisper_windows(windows: torch.Tensor, n_mels: int, audio_frames: int | None = None):
    """[W, S] zero-padded windows -> [W, n_mels, S // 160] features, as the extractor computes.

    ``audio_frames``: frames of the *last* window whose analysis window (400 samples, centred)
    touches audio; the frames after it see only zero padding, so their log-mel is the silence
    value ``max(-10, peak - 8)`` and is filled in without an STFT (equal to computing it, and
    most of the work for a short utterance in a 30 s window).
    """
    frames = windows.shape[-1] // WHISPER_HOP
    if audio_frames is None or audio_frames >= frames:
        return _log_mel_frames(windows, n_mels, frames, frames)
    last = windows[-1:, : audio_frames * WHISPER_HOP + WHISPER_N_FFT // 2]
    tail = _log_mel_frames(last, n_mels, audio_frames, frames)
    if windows.shape[0] == 1:
        return tail
    return torch.cat([_log_mel_frames(windows[:-1], n_mels, frames, frames), tail])


def _log_mel_frames(x: torch.Tensor, n_mels: int, computed: int, frames: int) -> torch.Tensor:
    """Normalised log-mel of the first ``computed`` frames of ``x``, silence up to ``frames``."""
    hann, filt = _whisper_filters(n_mels)
    stft = torch.stft(x, WHISPER_N_FFT, WHISPER_HOP, window=hann, return_complex=True)
    power = torch.view_as_real(stft[..., :computed]).pow(2).sum(-1)
    log_spec = torch.clamp(filt @ power, min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    if computed < frames:
        peak = torch.clamp(peak, min=-10.0)  # the silent frames' log10(1e-10) count in the peak
        silence = torch.maximum(torch.full_like(peak, -10.0), peak - 8.0)
        log_spec = torch.cat([log_spec, silence.expand(-1, n_mels, frames - computed)], dim=2)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


def log_mel(
    wave: np.ndarray,
    sr: int = WHISPER_SR,
    n_mels: int | None = None,
    window_frames: int | None = None,
) -> tuple[np.ndarray, int]:
    """Encoder features of a 16 kHz mono wave: ``([n_mels, window_frames * k] float32, valid)``.

    ``window_frames`` is the encoder window in 10 ms frames (default 3000 = 30 s; a model passes
    ``config.audio_window_frames``); ``k`` is the number of windows the audio needs and frames past
    ``valid`` are padding. With the default window this equals (to float32 rounding)
    ``WhisperFeatureExtractor(feature_size=n_mels)`` applied to each 30 s window.
    """
    n_mels = _DEFAULTS.n_mels if n_mels is None else n_mels
    frames = _window_frames(window_frames)
    samples = frames * WHISPER_HOP
    arr = _check_wave(wave, sr)
    k = num_windows(arr.size, frames)
    padded = np.zeros(k * samples, dtype=np.float32)
    padded[: arr.size] = arr
    # frames of the last window whose centred 400-sample analysis window reaches the audio
    in_last = arr.size - (k - 1) * samples
    audio_frames = -(-(in_last + WHISPER_N_FFT // 2) // WHISPER_HOP)
    with torch.inference_mode():
        feats = _whisper_windows(torch.from_numpy(padded).view(k, samples), n_mels, audio_frames)
    out = feats.permute(1, 0, 2).reshape(n_mels, k * frames).numpy()
    return np.ascontiguousarray(out, dtype=np.float32), valid_frames(arr.size)


def log_mel_batch(
    waves: Sequence[np.ndarray],
    sr: int = WHISPER_SR,
    n_mels: int | None = None,
    window_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of several waves, padded to the longest: ``([B, n_mels, T] float32, lengths[B])``.

    ``window_frames`` as in ``log_mel``. Padding past a wave's own windows is the feature value of
    silence (what a zero window gives).
    """
    if len(waves) == 0:
        raise AudioError("log_mel_batch input", "no waves given")
    feats = [log_mel(w, sr, n_mels, window_frames) for w in waves]
    t_max = max(f.shape[1] for f, _ in feats)
    n = feats[0][0].shape[0]
    out = np.empty((len(feats), n, t_max), dtype=np.float32)
    silence = None
    for i, (f, _) in enumerate(feats):
        out[i, :, : f.shape[1]] = f
        if f.shape[1] < t_max:
            if silence is None:
                silence = log_mel(np.zeros(1, np.float32), sr, n, window_frames)[0][:, :1]
            out[i, :, f.shape[1] :] = silence
    lengths = np.array([v for _, v in feats], dtype=np.int64)
    return out, lengths


@dataclass(frozen=True)
class SpeechMelSpec:
    """Parameters of the invertible mel the unit tokenizer and vocoder share (10 ms frames)."""

    sr: int = 16000
    n_fft: int = 1024
    win_length: int = 640
    hop: int = 160
    n_mels: int = 80
    floor: float = 1e-5

    def to_dict(self) -> dict[str, int | float]:
        """The parameters as a plain dict (stored beside a codebook)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def speech_mel(wave: np.ndarray, spec: SpeechMelSpec) -> np.ndarray:
    """Natural-log magnitude mel of a wave at ``spec.sr``: ``[frames, n_mels]`` float32.

    Frames are centred (reflect padding); a wave of n samples gives ``n // hop + 1`` frames.
    """
    arr = mono_wave(wave, "speech_mel input")
    if arr.size <= spec.n_fft // 2:
        arr = np.pad(arr, (0, spec.n_fft // 2 + 1 - arr.size))
    with torch.inference_mode():
        x = torch.from_numpy(arr)
        window = torch.hann_window(spec.win_length)
        stft = torch.stft(
            x, spec.n_fft, spec.hop, spec.win_length, window=window, return_complex=True
        )
        mag = stft.abs()
        filt = torch.tensor(mel_filters(spec.sr, spec.n_fft, spec.n_mels), dtype=torch.float32)
        mel = filt.T @ mag
        out = torch.log(torch.clamp(mel, min=spec.floor)).T.contiguous()
    return out.numpy()
