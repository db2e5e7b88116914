"""The speech-emotion-recognition slot: a transformers audio-classification directory with tiny
random weights, written in its real format (save_pretrained), loads strictly and classifies; a
directory with a missing or mis-shaped weight, no id2label or no feature extractor is refused
naming what is wrong; the filters stage drops a turn the model hears as another emotion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from opens2s.audio.io import AudioError
from opens2s.audio.ser import EmotionRecognizer, corpus_emotion
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

LABELS = {0: "neu", 1: "hap", 2: "ang", 3: "sad"}  # the SUPERB emotion-recognition label set


def write_tiny_ser(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    Wav2Vec2ForSequenceClassification(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ser_dir(tmp_path_factory) -> Path:
    return write_tiny_ser(tmp_path_factory.mktemp("ser"))


def test_loads_and_classifies_deterministically(ser_dir):
    rec = EmotionRecognizer(ser_dir)
    wave = 0.1 * np.sin(2 * np.pi * 180 * np.arange(22050) / 22050).astype(np.float32)
    a, b = rec.recognize(wave, 22050), rec.recognize(wave, 22050)
    assert a == b and a.label in LABELS.values()
    assert a.emotion == corpus_emotion(a.label) and 0.25 <= a.probability <= 1.0
    assert corpus_emotion("生气/angry") == "angry" and corpus_emotion("<unk>") is None


def test_broken_directories_are_refused_naming_the_problem(ser_dir, tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        EmotionRecognizer(tmp_path / "nowhere")
    # one weight removed: strict loading names it instead of initialising it at random
    missing = write_tiny_ser(tmp_path / "missing")
    state = load_file(missing / "model.safetensors")
    key = next(k for k in state if k.startswith("classifier."))
    del state[key]
    save_file(state, missing / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(AudioError, match=key.replace(".", r"\.")):
        EmotionRecognizer(missing)
    # labels that name no emotion
    nolabels = write_tiny_ser(tmp_path / "nolabels")
    cfg = json.loads((nolabels / "config.json").read_text())
    cfg["id2label"] = {str(k): f"class{k}" for k in LABELS}
    cfg["label2id"] = {f"class{k}": k for k in LABELS}
    (nolabels / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AudioError, match="names a corpus emotion"):
        EmotionRecognizer(nolabels)
    noextractor = write_tiny_ser(tmp_path / "noextractor")
    (noextractor / "preprocessor_config.json").unlink()
    with pytest.raises(AudioError, match="preprocessor_config"):
        EmotionRecognizer(noextractor)


def test_filter_drops_a_turn_heard_as_another_emotion(ser_dir):
    from opens2s.config.audio import AudioSection
    from opens2s.config.data import FilterSettings
    from opens2s.data.filters import AudioFilter
    from opens2s.data.render import TurnRenderer
    from opens2s.data.sample import Sample, Scenario, Turn

    audio = AudioSection()
    heard = None
    samples = []
    for i, emotion in enumerate(("happy", "sad", "angry", "neutral")):
        sc = Scenario(emotion, 1.0, "school", "parent", "us-m1", 1)
        turns = [
            Turn("user", "The letter from the school came today."),
            Turn("assistant", "I see."),
        ]
        samples.append(Sample(f"d{i}", i, 0, sc, turns))
    TurnRenderer(audio)(samples)
    rec = EmotionRecognizer(ser_dir)
    heard = [rec.recognize(s.waves[0], s.sample_rate).emotion for s in samples]
    settings = FilterSettings(verify_prosody=False, ser_model_path=str(ser_dir))
    out = AudioFilter(settings, audio)(samples)
    for s, h in zip(out, heard, strict=True):
        if h == s.scenario.emotion:
            assert s.ok and s.checks["ser_agrees"] == 1.0
        else:
            assert s.dropped_reason.startswith(f"ser: turn 0 (user) sounds {h}")
    assert len({s.ok for s in out}) == 2 or len(set(heard)) == 1
