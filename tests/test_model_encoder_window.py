"""The encoder window is a property of the encoder config (2 * max_source_positions mel frames):
released-style configs keep Whisper's 30 s / 3000-frame windows, and a short-window model splits
a long utterance into several windows and gets the embeddings of each."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opens2s.audio.features import log_mel
from opens2s.model import OpenS2SConfig, build_model, build_tokenizer
from opens2s.model.presets import preset_config
from opens2s.model.streaming import StreamingDecoder


def _wave(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)


def test_released_layouts_keep_30s_windows():
    assert preset_config("opens2s-8b").audio_window_frames == 3000
    # An encoder config without max_source_positions takes the Qwen2-Audio default (1500).
    lm = {"model_type": "qwen3", "hidden_size": 64, "num_attention_heads": 2, "head_dim": 32}
    released = OpenS2SConfig(
        audio_encoder_config={"model_type": "qwen2_audio_encoder", "num_mel_bins": 128},
        llm_config=dict(lm, vocab_size=256),
        tts_lm_config=dict(lm, vocab_size=16384 + 2),
    )
    assert released.audio_window_frames == 3000
    # Features for such a model are the default (Whisper-equal) 30 s features, bit for bit.
    wave = _wave(2.0)
    feats, valid = log_mel(wave, window_frames=released.audio_window_frames)
    ref, ref_valid = log_mel(wave)
    assert feats.shape == (128, 3000) and valid == ref_valid == 200
    np.testing.assert_array_equal(feats, ref)


def test_tiny_preset_window_is_shorter_and_fits_its_encoder():
    model = build_model("tiny")
    window = model.config.audio_window_frames
    assert window < 3000 and window % 4 == 0
    # transformers' encoder checks its input is exactly one window long.
    enc = model.audio_encoder_model
    assert window == enc.config.max_source_positions * enc.conv1.stride[0] * enc.conv2.stride[0]


def _expected_embeddings(valid_frames: int, window: int, n_adapter_convs: int) -> int:
    """Embeddings of ``valid_frames`` mel frames: per window, conv stride 2 then avg-pool stride 2
    (Qwen2-Audio), summed over windows, then the adapter's stride-2 convs."""
    total = 0
    for start in range(0, valid_frames, window):
        f = min(window, valid_frames - start)
        conv = (f - 1) // 2 + 1
        total += (conv - 2) // 2 + 1
    for _ in range(n_adapter_convs):
        total = (total - 1) // 2 + 1
    return total


@pytest.mark.parametrize("seconds", [1.3, 9.7])
def test_short_window_model_encodes_long_audio_window_by_window(seconds):
    model = build_model("tiny", seed=1)
    window = model.config.audio_window_frames
    wave = _wave(seconds, seed=2)
    dec = StreamingDecoder(model, build_tokenizer("tiny"))
    values, mask = dec.features(wave, None)
    n_windows = -(-wave.size // (window * 160))
    assert values.shape == (1, 128, window * n_windows)
    assert int(mask.sum()) == -(-wave.size // 160)
    if seconds * 100 > window:
        assert n_windows > 1
    with torch.no_grad():
        (emb,) = model.encode_audio(values, mask)
    expected = _expected_embeddings(int(mask.sum()), window, len(model.config.kernel_sizes))
    assert emb.shape == (expected, model.config.llm_config.hidden_size)
    assert abs(expected - 6.25 * seconds) <= 1.5  # ~6.25 embeddings per second of audio
    assert torch.isfinite(emb).all()


def test_features_of_another_window_length_are_rejected():
    model = build_model("tiny")
    dec = StreamingDecoder(model, build_tokenizer("tiny"))
    feats_30s = log_mel(_wave(1.0))  # 3000 frames: not a whole number of tiny windows
    assert feats_30s[0].shape[1] % model.config.audio_window_frames
    with pytest.raises(ValueError, match="audio_window_frames"):
        dec.features(None, feats_30s)
