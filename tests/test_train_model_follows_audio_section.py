"""Training builds its model and record encoder with the speech tokenizer's unit vocabulary.

A preset's unit vocabulary comes from ``audio.codebook_size``; a training run that ignored the
audio section would train (and export) a model whose TTS LM emits units the vocoder lacks.
"""

from __future__ import annotations

from opens2s.config import load_config
from opens2s.train.model_source import build_initial_model, config_and_tokenizer


def test_training_model_and_encoder_use_the_audio_sections_codebook():
    default = load_config(None)
    cfg = load_config(None, {"audio.codebook_size": default.audio.codebook_size // 2})
    config, _ = config_and_tokenizer(cfg.model, cfg.audio)
    model, _ = build_initial_model(cfg.model, cfg.audio)
    assert config.unit_vocab_size == cfg.audio.codebook_size
    assert model.config.unit_vocab_size == cfg.audio.codebook_size
    default_config, _ = config_and_tokenizer(default.model, default.audio)
    assert default_config.unit_vocab_size == default.audio.codebook_size
    assert config.unit_vocab_size != default_config.unit_vocab_size
