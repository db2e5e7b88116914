"""Audio files are judged by their header before a sample is decoded, and decoded in blocks.

The bomb uploads of issue 18 (a 64 KB WAV claiming 1 Hz x 32,000 samples, a FLAC of one hour of
silence) are refused with the header's numbers, and a real process's peak RSS grows by less than
the bound docs/serving.md states while it refuses them or decodes a full-length turn.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from opens2s.audio.io import AudioError, load_audio

# docs/serving.md: "Peak memory of reading one upload", with the default limits.
RSS_BOUND_BYTES = 32 * 2**20


def _encoded(data: np.ndarray, sr: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def _hour_of_silence_flac(path: Path) -> Path:
    """One hour of 48 kHz stereo silence as FLAC, written a block at a time (~0.7 MB)."""
    block = np.zeros((480_000, 2), np.int16)
    with sf.SoundFile(path, "w", 48000, 2, format="FLAC", subtype="PCM_16") as f:
        for _ in range(360):
            f.write(block)
    return path


def test_a_one_hertz_header_is_refused_naming_the_rate() -> None:
    body = _encoded(np.zeros(32_000, np.float32), 1)
    assert len(body) < 70_000
    with pytest.raises(AudioError, match=r"sample rate of 1 Hz, expected 8000-192000 Hz"):
        load_audio(body, 16000, max_seconds=30)


def test_a_thousand_channel_header_is_refused_naming_the_count() -> None:
    body = _encoded(np.zeros((10, 1000), np.float32), 16000)
    with pytest.raises(AudioError, match=r"1000 channels, expected 1 to 8"):
        load_audio(body, 16000)


def test_an_hour_long_flac_is_refused_from_its_header(tmp_path: Path) -> None:
    body = _hour_of_silence_flac(tmp_path / "hour.flac").read_bytes()
    with pytest.raises(AudioError, match=r"too long: 3600.0 s, at most 30 s allowed"):
        load_audio(body, 16000, max_seconds=30)


def test_random_bytes_get_a_message_without_object_reprs() -> None:
    with pytest.raises(AudioError) as e:
        load_audio(np.random.default_rng(0).bytes(5000), 16000)
    assert "not a readable audio file" in e.value.problem
    assert "BytesIO" not in str(e.value) and "0x" not in str(e.value)


def test_block_decoding_equals_a_whole_file_resample() -> None:
    from opens2s.audio.io import resample

    rng = np.random.default_rng(1)
    stereo = rng.uniform(-0.5, 0.5, (44100 * 4, 2)).astype(np.float32)
    body = _encoded(stereo, 44100)
    whole, _ = sf.read(io.BytesIO(body), dtype="float32")
    expected = resample(whole.mean(axis=1), 44100, 16000)
    got = load_audio(body, 16000)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 1e-3


_MEASURE = """
import resource, sys
from opens2s.audio.io import AudioError, load_audio
body = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_audio(body, 16000, max_seconds=30)
    outcome = "decoded"
except AudioError as e:
    outcome = "refused: " + e.problem
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(outcome)
print((after - before) * 1024)
"""


def _peak_growth(path: Path) -> tuple[str, int]:
    """(outcome, peak RSS growth in bytes) of a fresh process reading ``path`` once."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.splitlines()
    return out[0], int(out[1])


def test_bomb_uploads_and_a_full_turn_stay_under_the_stated_memory_bound(tmp_path: Path) -> None:
    one_hertz = tmp_path / "one_hertz.wav"
    one_hertz.write_bytes(_encoded(np.zeros(32_000, np.float32), 1))
    hour = _hour_of_silence_flac(tmp_path / "hour.flac")
    # The largest turn accepted: 30 s of 48 kHz stereo noise (FLAC, ~11 MB decoded as float32).
    full = tmp_path / "full.flac"
    noise = np.random.default_rng(2).uniform(-0.5, 0.5, (48000 * 29, 2)).astype(np.float32)
    sf.write(full, noise, 48000, format="FLAC", subtype="PCM_16")
    results = {p.name: _peak_growth(p) for p in (one_hertz, hour, full)}
    print({k: (o, f"{g / 2**20:.1f} MiB") for k, (o, g) in results.items()})
    assert results["one_hertz.wav"][0].startswith("refused: header declares a sample rate of 1 Hz")
    assert results["hour.flac"][0].startswith("refused: too long: 3600.0 s")
    assert results["full.flac"][0] == "decoded"
    for name, (_, growth) in results.items():
        assert growth < RSS_BOUND_BYTES, f"{name}: peak RSS grew {growth} bytes"


def _flac_without_length(seconds: float) -> bytes:
    """A FLAC whose STREAMINFO says 0 total samples, as streaming encoders write it."""
    import io as _io

    buf = _io.BytesIO()
    rng = np.random.default_rng(0)
    sf.write(
        buf,
        (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32),
        16000,
        format="FLAC",
    )
    data = bytearray(buf.getvalue())
    # STREAMINFO: 20 bits rate, 3 channels, 5 bits per sample, 36 bits total samples (bytes 18-25).
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def test_a_flac_that_does_not_declare_its_length_is_refused_with_that_reason():
    # Not "too long: 576460752303423.5 s" (the sentinel frame count divided by the rate).
    with pytest.raises(AudioError, match=r"does not declare the length"):
        load_audio(_flac_without_length(3.0), 16000, max_seconds=10)
