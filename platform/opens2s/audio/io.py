"""Audio files in and out: any of WAV/FLAC/OGG/MP3 to mono float32 at a target rate, and checks.

Reading goes through libsndfile (soundfile), resampling through soxr. Every problem raises
:class:`AudioError`, which names the input (a path, or "<bytes>") and what is wrong with it.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from opens2s.config.audio import AudioSection

_DEFAULTS = AudioSection()
_FULL_SCALE = 0.999


class AudioError(ValueError):
    """Audio that cannot be used: ``source`` names the input, ``problem`` says what is wrong."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


def mono_wave(wave: np.ndarray, name: str, *, finite: bool = False) -> np.ndarray:
    """``wave`` as a float32 1-D array, or :class:`AudioError` naming ``name`` when it is not a
    non-empty mono wave (or, with ``finite``, when it holds NaN/inf samples)."""
    arr = np.asarray(wave, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise AudioError(name, f"expected a non-empty mono wave, got shape {arr.shape}")
    if finite and not np.isfinite(arr).all():
        raise AudioError(name, "wave holds NaN/inf samples")
    return arr


def _source_name(src: str | Path | bytes) -> str:
    if isinstance(src, bytes | bytearray | memoryview):
        return f"<bytes: {len(src)}>"
    return str(src)


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a mono float wave from ``sr_in`` to ``sr_out`` Hz (soxr, high quality)."""
    wave = np.asarray(wave, dtype=np.float32)
    if sr_in == sr_out or wave.size == 0:
        return wave
    return soxr.resample(wave, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


MIN_FILE_RATE = 8000
MAX_FILE_RATE = 192000
MAX_CHANNELS = 8
MAX_FILE_SECONDS = 600.0
"""Longest file :func:`load_audio` decodes when the caller names no limit (ten minutes: above the
corpus's ``model.max_audio_seconds``, so that records too long for it still reach its own check)."""
DECODE_BLOCK_FRAMES = 65536
"""Frames decoded at a time: with at most ``MAX_CHANNELS`` channels a block is at most 2 MiB of
float32, so a file's peak memory is its output wave plus a few blocks, never the decoded file."""


def _readable_error(e: Exception) -> str:
    # libsndfile's message embeds the repr of a BytesIO ("<_io.BytesIO object at 0x...>").
    text = getattr(e, "error_string", None) or str(e)
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the data", text)


UNKNOWN_FRAMES = 2**63 - 1
"""libsndfile's frame count for a stream whose header does not say its length (a FLAC written by
a streaming encoder has total samples 0). libsndfile cannot decode such a file to its end (its
last read fails with a seek error and returns nothing), so it is refused by name."""


def check_header(
    info: sf._SoundFileInfo | sf.SoundFile,
    name: str,
    *,
    max_seconds: float | None,
    max_channels: int = MAX_CHANNELS,
) -> None:
    """Refuse, before any sample is decoded, a file whose header declares a rate outside
    8–192 kHz, more than ``max_channels`` channels, no frames, or more than ``max_seconds``."""
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if not MIN_FILE_RATE <= rate <= MAX_FILE_RATE:
        raise AudioError(
            name,
            f"header declares a sample rate of {rate} Hz, expected "
            f"{MIN_FILE_RATE}-{MAX_FILE_RATE} Hz",
        )
    if not 1 <= channels <= max_channels:
        raise AudioError(name, f"header declares {channels} channels, expected 1 to {max_channels}")
    if frames <= 0:
        raise AudioError(name, "audio file holds 0 samples")
    if frames == UNKNOWN_FRAMES:
        raise AudioError(
            name,
            "header does not declare the length (e.g. a FLAC from a streaming encoder, total "
            "samples 0); re-encode it with its length (e.g. `ffmpeg -i IN OUT.flac`) or send WAV",
        )
    if max_seconds is not None and frames / rate > max_seconds:
        raise AudioError(
            name, f"too long: {frames / rate:.1f} s, at most {max_seconds:g} s allowed"
        )


def load_audio(
    src: str | Path | bytes,
    sr: int | None = None,
    *,
    max_seconds: float | None = None,
    max_channels: int = MAX_CHANNELS,
) -> np.ndarray:
    """Read an audio file (path or encoded bytes) as mono float32 in [-1, 1] at ``sr`` Hz.

    The header is checked first (:func:`check_header`: rate 8–192 kHz, at most ``max_channels``
    channels, at most ``max_seconds``, default ``MAX_FILE_SECONDS``), then the file is
    decoded and resampled in blocks of ``DECODE_BLOCK_FRAMES``, so memory stays bounded by the
    output (``max_seconds * sr`` float32 samples) plus a few blocks. Channels are averaged.
    Raises :class:`AudioError` for a missing file, data that is not audio, or a file out of bounds.
    """
    sr = _DEFAULTS.sample_rate if sr is None else sr
    max_seconds = MAX_FILE_SECONDS if max_seconds is None else max_seconds
    name = _source_name(src)
    if sr <= 0:
        raise AudioError(name, f"target sample rate must be positive, got {sr}")
    if isinstance(src, bytes | bytearray | memoryview):
        if len(src) == 0:
            raise AudioError(name, "empty input (0 bytes), expected an encoded audio file")
        handle: object = io.BytesIO(bytes(src))
    else:
        path = Path(src)
        if not path.exists():
            raise AudioError(name, "file does not exist")
        if path.is_dir():
            raise AudioError(name, "is a directory, expected an audio file")
        if path.stat().st_size == 0:
            raise AudioError(name, "empty file (0 bytes), expected WAV/FLAC/OGG/MP3 audio")
        handle = str(path)
    try:
        f = sf.SoundFile(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(
            name, f"not a readable audio file (WAV/FLAC/OGG/MP3): {_readable_error(e)}"
        ) from e
    with f:
        check_header(f, name, max_seconds=max_seconds, max_channels=max_channels)
        file_sr = int(f.samplerate)
        stream = None if file_sr == sr else soxr.ResampleStream(file_sr, sr, 1, "float32", "HQ")
        parts: list[np.ndarray] = []
        total = 0
        # A lying header (more data than declared) is cut at max_seconds as it decodes.
        budget = int(max_seconds * file_sr) + 1
        try:
            while total < budget:
                block = f.read(
                    min(DECODE_BLOCK_FRAMES, budget - total), dtype="float32", always_2d=True
                )
                if block.shape[0] == 0:
                    break
                total += block.shape[0]
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                mono = np.ascontiguousarray(mono, dtype=np.float32)
                parts.append(mono if stream is None else stream.resample_chunk(mono))
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(name, f"cannot decode audio: {_readable_error(e)}") from e
        if stream is not None:
            parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    if total == 0:
        raise AudioError(name, "audio file holds 0 samples")
    if total >= budget:
        raise AudioError(name, f"too long: more than {max_seconds:g} s of audio decoded")
    return np.concatenate(parts).astype(np.float32, copy=False)


def write_audio(path: str | Path, wave: np.ndarray, sr: int) -> Path:
    """Write a mono float wave; the format follows the suffix (.wav, .flac, .ogg, .mp3).

    WAV is 16-bit PCM, FLAC 16-bit. The file appears atomically (written aside, then renamed).
    """
    path = Path(path)
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise AudioError(str(path), f"expected a mono 1-D wave, got shape {wave.shape}")
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(str(path), "unknown suffix, expected .wav, .flac, .ogg or .mp3")
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(wave, -1.0, 1.0), sr, format=fmt, subtype=subtype)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def validate_audio(
    wave: np.ndarray,
    sr: int,
    *,
    name: str,
    max_seconds: float | None = None,
    expected_sr: int | None = None,
    min_seconds: float = 0.0,
    max_clipped_fraction: float | None = None,
) -> None:
    """Check a decoded wave; raise :class:`AudioError` naming ``name`` at the first problem.

    Problems: not a 1-D float array, empty, NaN/inf samples, clipped (more than
    ``max_clipped_fraction`` of samples at full scale, or any beyond [-1, 1]), shorter than
    ``min_seconds``, longer than ``max_seconds``, sample rate not positive or not ``expected_sr``.
    """
    max_seconds = _DEFAULTS.max_seconds if max_seconds is None else max_seconds
    if max_clipped_fraction is None:
        max_clipped_fraction = _DEFAULTS.max_clipped_fraction
    if not isinstance(sr, int | np.integer) or sr <= 0:
        raise AudioError(name, f"sample rate must be a positive integer, got {sr!r}")
    if expected_sr is not None and sr != expected_sr:
        raise AudioError(name, f"wrong sample rate {sr} Hz, expected {expected_sr} Hz")
    arr = np.asarray(wave)
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(name, f"expected float samples, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise AudioError(name, f"expected mono 1-D samples, got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError(name, "empty audio (0 samples)")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argmax(bad))
        raise AudioError(name, f"{int(bad.sum())} NaN/inf samples (first at {first / sr:.3f} s)")
    seconds = arr.size / sr
    if seconds < min_seconds:
        raise AudioError(name, f"too short: {seconds:.3f} s, at least {min_seconds} s needed")
    if seconds > max_seconds:
        raise AudioError(name, f"too long: {seconds:.1f} s, at most {max_seconds} s allowed")
    peak = float(np.abs(arr).max())
    if peak > 1.0:
        raise AudioError(name, f"clipped: peak {peak:.3f} is beyond full scale [-1, 1]")
    clipped = float(np.mean(np.abs(arr) >= _FULL_SCALE))
    if clipped > max_clipped_fraction:
        raise AudioError(
            name,
            f"clipped: {clipped:.2%} of samples at full scale "
            f"(at most {max_clipped_fraction:.2%} allowed)",
        )


def duration_seconds(wave: np.ndarray, sr: int) -> float:
    """Length of a wave in seconds."""
    return float(np.asarray(wave).shape[-1]) / sr
