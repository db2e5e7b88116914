"""Audio I/O: every supported format loads to mono float32 at the target rate; bad input is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from opens2s.audio.io import AudioError, load_audio, validate_audio, write_audio


def _tone(sr: int, seconds: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_each_format_round_trips_to_mono_float32_at_target_rate(tmp_path: Path, suffix: str):
    wave = _tone(22050)
    path = write_audio(tmp_path / f"tone{suffix}", wave, 22050)
    back = load_audio(path, sr=16000)
    assert back.dtype == np.float32 and back.ndim == 1
    # MP3 adds encoder delay/padding; the others keep the length exactly after resampling.
    assert abs(back.size - 8000) <= (2000 if suffix == ".mp3" else 1)
    spectrum = np.abs(np.fft.rfft(back))
    assert abs(np.argmax(spectrum) * 16000 / back.size - 440.0) < 5.0
    assert 0.3 < np.abs(back).max() <= 1.0


def test_stereo_is_averaged_and_bytes_are_accepted(tmp_path: Path):
    left = _tone(16000, hz=300.0)
    stereo = np.stack([left, 0.5 * left], axis=1)
    sf.write(tmp_path / "st.wav", stereo, 16000, subtype="FLOAT")
    data = (tmp_path / "st.wav").read_bytes()
    back = load_audio(data, sr=16000)
    np.testing.assert_allclose(back, 0.75 * left, atol=1e-6)


def test_missing_empty_and_non_audio_files_raise_named_errors(tmp_path: Path):
    with pytest.raises(AudioError) as e:
        load_audio(tmp_path / "nope.wav")
    assert e.value.source.endswith("nope.wav") and "does not exist" in e.value.problem
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError) as e:
        load_audio(tmp_path / "empty.wav")
    assert "empty" in e.value.problem and "empty.wav" in str(e.value)
    (tmp_path / "text.wav").write_text("this is text, not audio\n" * 20)
    with pytest.raises(AudioError) as e:
        load_audio(tmp_path / "text.wav")
    assert "not a readable audio file" in e.value.problem and e.value.source.endswith("text.wav")
    with pytest.raises(AudioError, match="0 bytes"):
        load_audio(b"")


def test_zero_sample_file_raises(tmp_path: Path):
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError) as e:
        load_audio(tmp_path / "zero.wav")
    assert "0 samples" in e.value.problem


@pytest.mark.parametrize(
    ("wave", "sr", "kwargs", "problem"),
    [
        (np.zeros(0, np.float32), 16000, {}, "empty"),
        (np.array([0.1, np.nan, 0.2], np.float32), 16000, {}, "NaN/inf"),
        (np.array([0.1, np.inf], np.float32), 16000, {}, "NaN/inf"),
        (np.full(1600, 1.0, np.float32), 16000, {}, "clipped"),
        (np.array([0.2, 1.7], np.float32), 16000, {}, "beyond full scale"),
        (np.zeros(16000 * 3, np.float32), 16000, {"max_seconds": 2.0}, "too long"),
        (np.zeros(160, np.float32), 16000, {"min_seconds": 0.5}, "too short"),
        (np.zeros(1600, np.float32), 22050, {"expected_sr": 16000}, "wrong sample rate"),
        (np.zeros(1600, np.float32), 0, {}, "sample rate"),
        (np.zeros(1600, np.int16), 16000, {}, "float samples"),
        (np.zeros((2, 1600), np.float32), 16000, {}, "mono"),
    ],
)
def test_validate_audio_names_input_and_problem(wave, sr, kwargs, problem):
    with pytest.raises(AudioError) as e:
        validate_audio(wave, sr, name="clip-7.flac", **kwargs)
    assert e.value.source == "clip-7.flac"
    assert problem in e.value.problem


def test_validate_audio_accepts_clean_speech_like_signal():
    validate_audio(_tone(16000, 1.0), 16000, name="ok", max_seconds=2.0, expected_sr=16000)
