"""Encoder features equal transformers' WhisperFeatureExtractor(feature_size=128), window by window."""

from __future__ import annotations

import numpy as np
import pytest
from opens2s.audio.features import SpeechMelSpec, log_mel, log_mel_batch, speech_mel
from opens2s.audio.io import AudioError
from transformers import WhisperFeatureExtractor


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    carrier = np.sin(2 * np.pi * 140 * t) + 0.3 * rng.standard_normal(n)
    return (0.3 * carrier * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def extractor() -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor(feature_size=128)


@pytest.mark.parametrize("n", [1000, 16000 * 7 + 37, 480000, 480001, 16000 * 45])
def test_log_mel_equals_whisper_extractor_per_30s_window(extractor, n):
    wave = _speechlike(n)
    feats, valid = log_mel(wave)
    k = -(-n // 480000)
    assert feats.shape == (128, 3000 * k) and feats.dtype == np.float32
    ref = np.concatenate(
        [
            extractor(
                wave[i * 480000 : (i + 1) * 480000], sampling_rate=16000, return_tensors="np"
            )["input_features"][0]
            for i in range(k)
        ],
        axis=1,
    )
    np.testing.assert_allclose(feats, ref, atol=1e-5)
    mask = extractor(
        wave,
        sampling_rate=16000,
        return_attention_mask=True,
        truncation=False,
        padding="longest",
        pad_to_multiple_of=480000,
    )["attention_mask"]
    assert valid == int(mask.sum())


def test_log_mel_batch_pads_to_longest_and_reports_lengths():
    waves = [_speechlike(16000, 1), _speechlike(16000 * 31, 2)]
    feats, lengths = log_mel_batch(waves)
    assert feats.shape == (2, 128, 6000)
    assert lengths.tolist() == [100, 3100]
    np.testing.assert_array_equal(feats[0, :, :3000], log_mel(waves[0])[0])
    silence = log_mel(np.zeros(1, np.float32))[0][:, 0]
    np.testing.assert_array_equal(feats[0, :, 4000], silence)


def test_log_mel_rejects_wrong_rate_and_empty():
    with pytest.raises(AudioError, match="expected 16000 Hz"):
        log_mel(np.zeros(100, np.float32), sr=22050)
    with pytest.raises(AudioError, match="0 samples"):
        log_mel(np.zeros(0, np.float32))


def test_speech_mel_has_one_frame_per_10ms():
    spec = SpeechMelSpec()
    mel = speech_mel(_speechlike(16000), spec)
    assert mel.shape == (16000 // 160 + 1, spec.n_mels)
    assert np.isfinite(mel).all()


@pytest.mark.parametrize("n", [1000, 64000, 16000 * 9 + 5])
def test_short_window_equals_whisper_extractor_with_that_chunk_length(n):
    """A 4 s window (400 frames) is the extractor with ``chunk_length=4``, window by window."""
    short = WhisperFeatureExtractor(feature_size=128, chunk_length=4)
    wave = _speechlike(n, seed=1)
    feats, valid = log_mel(wave, window_frames=400)
    k = -(-n // 64000)
    assert feats.shape == (128, 400 * k) and valid == -(-n // 160)
    ref = np.concatenate(
        [
            short(wave[i * 64000 : (i + 1) * 64000], sampling_rate=16000, return_tensors="np")[
                "input_features"
            ][0]
            for i in range(k)
        ],
        axis=1,
    )
    np.testing.assert_allclose(feats, ref, atol=1e-5)
    batch, lengths = log_mel_batch([wave, wave[:100]], window_frames=400)
    assert batch.shape == (2, 128, 400 * k) and lengths.tolist() == [valid, 1]


@pytest.mark.parametrize("n", [1, 159, 161, 6000, 63_839, 63_841, 64_000, 64_001, 100_000])
def test_frames_past_the_audio_get_the_silence_value_without_changing_a_feature(n):
    """log_mel skips the STFT of frames that see only the zero padding (most of a 30 s window for
    a short turn); computing every frame gives the same features."""
    import torch
    from opens2s.audio.features import _whisper_windows

    wave = _speechlike(n)
    window = 400
    feats, _ = log_mel(wave, window_frames=window)
    k = feats.shape[1] // window
    padded = np.zeros(k * window * 160, np.float32)
    padded[:n] = wave
    full = _whisper_windows(torch.from_numpy(padded).view(k, window * 160), 128)
    np.testing.assert_allclose(feats, full.permute(1, 0, 2).reshape(128, -1).numpy(), atol=1e-6)
