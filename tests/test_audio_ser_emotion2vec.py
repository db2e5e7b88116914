"""The SER slot takes emotion2vec in FunASR's release layout: a tiny random directory (config.yaml,
model.pt, tokens.txt, names written from upstream's module tree) loads strictly and gives
probabilities over tokens.txt's labels; a missing, stray or mis-shaped tensor, a missing
tokens.txt and a config field that is missing or wrong are each refused naming it; the corpus
filters and the eval use the same loader and drop / score by what the model hears."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from emotion2vec_tiny import CONVS, EXTRA, LABELS, state_shapes, write_tiny_emotion2vec
from opens2s.audio.emotion2vec import Emotion2vecError, load_emotion2vec
from opens2s.audio.io import AudioError
from opens2s.audio.ser import EmotionRecognizer, SERFileMissing, corpus_emotion


def _tone(seconds: float, sr: int = 16000, hz: float = 180.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * hz * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def e2v_dir(tmp_path_factory) -> Path:
    return write_tiny_emotion2vec(tmp_path_factory.mktemp("e2v"))


def _edit_state(path: Path, edit) -> None:
    ckpt = torch.load(path / "model.pt", weights_only=True)
    edit(ckpt["model"])
    torch.save(ckpt, path / "model.pt")


def _edit_config(path: Path, edit) -> None:
    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    edit(config)
    (path / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


def test_loads_strictly_and_gives_probabilities_over_the_tokens_labels(e2v_dir):
    model = load_emotion2vec(e2v_dir)
    assert set(model.state_dict()) == set(state_shapes())  # every released name, nothing else
    rec = EmotionRecognizer(e2v_dir)
    assert rec.format == "emotion2vec" and rec.sample_rate == 16000
    probs, labels = rec.probabilities(_tone(1.0), 16000)
    assert labels == LABELS and probs.shape == (len(LABELS),)
    assert abs(float(probs.sum()) - 1.0) < 1e-5 and (probs > 0).all()
    a, b = rec.recognize(_tone(1.0), 16000), rec.recognize(_tone(1.0), 16000)
    assert a == b and a.label in LABELS and a.emotion == corpus_emotion(a.label)
    assert a.probability == round(float(probs.max()), 4)
    other = rec.probabilities(_tone(1.3, hz=300.0), 16000)[0]
    assert np.abs(other - probs).max() > 1e-4  # the wave matters
    resampled = rec.probabilities(_tone(1.0, sr=22050), 22050)[0]  # any rate, resampled to 16 kHz
    assert abs(float(resampled.sum()) - 1.0) < 1e-5
    mapped = {label: corpus_emotion(label) for label in LABELS}
    assert mapped["生气/angry"] == "angry" and mapped["中立/neutral"] == "neutral"
    assert mapped["其他/other"] is None and mapped["<unk>"] is None


def test_frames_follow_the_conv_stack_and_drop_the_extra_tokens(e2v_dir):
    model = load_emotion2vec(e2v_dir)
    n = 16000
    for _, k, s in CONVS:
        n = (n - k) // s + 1
    frames = model.frames(torch.from_numpy(_tone(1.0))[None])
    assert frames.shape == (1, n, 32) and EXTRA > 0
    embedding, logits = model.utterance(_tone(1.0))
    assert np.allclose(embedding, frames[0].mean(0).detach().numpy(), atol=1e-6)
    assert logits.shape == (len(LABELS),)


def test_a_label_favoured_by_the_head_is_heard_and_unuse_labels_take_nothing(tmp_path):
    angry = EmotionRecognizer(write_tiny_emotion2vec(tmp_path / "angry", favour="生气/angry"))
    heard = angry.recognize(_tone(0.8), 16000)
    assert (heard.label, heard.emotion) == ("生气/angry", "angry") and heard.probability > 0.99
    labels = ["unuse_0" if x == "生气/angry" else x for x in LABELS]
    unuse = write_tiny_emotion2vec(tmp_path / "unuse", favour="unuse_0", labels=labels)
    probs, kept = EmotionRecognizer(unuse).probabilities(_tone(0.8), 16000)
    assert "unuse_0" not in kept and len(kept) == len(LABELS) - 1
    assert abs(float(probs.sum()) - 1.0) < 1e-5


def _missing(state):
    del state["modality_encoders.AUDIO.relative_positional_encoder.2.0.bias"]


def _stray(state):
    state["blocks.1.attn.rotary.weight"] = torch.zeros(4)


def _misshaped(state):
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(48, 32)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_missing, r"missing tensors: modality_encoders\.AUDIO\.relative_positional_encoder\.2\.0"),
        (_stray, r"unexpected tensors: blocks\.1\.attn\.rotary\.weight"),
        (_misshaped, r"mis-shaped tensors: blocks\.1\.mlp\.fc1\.weight \(48, 32\)"),
    ],
)
def test_a_missing_stray_or_misshaped_tensor_is_refused_naming_it(tmp_path, edit, message):
    path = write_tiny_emotion2vec(tmp_path / "e2v")
    _edit_state(path, edit)
    with pytest.raises(Emotion2vecError, match=message):
        EmotionRecognizer(path)


def test_training_only_decoder_tensors_are_set_aside_and_labels_must_fit_the_head(tmp_path):
    path = write_tiny_emotion2vec(tmp_path / "e2v")
    clean = EmotionRecognizer(path).probabilities(_tone(0.5), 16000)[0]

    def add_decoder(state):  # a pre-training checkpoint also holds the target decoder
        state["modality_encoders.AUDIO.decoder.proj.weight"] = torch.randn(32, 16)
        state["modality_encoders.AUDIO.decoder.blocks.0.0.weight"] = torch.randn(16, 8, 3)

    _edit_state(path, add_decoder)
    assert np.array_equal(EmotionRecognizer(path).probabilities(_tone(0.5), 16000)[0], clean)
    (path / "tokens.txt").write_text("".join(f"{t}\n" for t in LABELS[:-1]), encoding="utf-8")
    with pytest.raises(Emotion2vecError, match=r"proj\.weight \(9, 32\) .*\(8, 32\)"):
        EmotionRecognizer(path)


def test_missing_files_and_config_fields_are_refused_naming_them(tmp_path):
    no_tokens = write_tiny_emotion2vec(tmp_path / "no_tokens")
    (no_tokens / "tokens.txt").unlink()
    with pytest.raises(SERFileMissing, match="no tokens.txt"):
        EmotionRecognizer(no_tokens)
    with pytest.raises(Emotion2vecError, match="no tokens.txt"):
        load_emotion2vec(no_tokens)
    no_weights = write_tiny_emotion2vec(tmp_path / "no_weights")
    (no_weights / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no model.pt"):
        EmotionRecognizer(no_weights)

    def drop_width(c):
        del c["model_conf"]["modalities"]["audio"]["conv_pos_width"]

    def bad_spec(c):
        c["model_conf"]["modalities"]["audio"]["feature_encoder_spec"] = "__import__('os')"

    for name, edit, message in [
        ("width", drop_width, r"no model_conf\.modalities\.audio\.conv_pos_width"),
        ("depth", lambda c: c["model_conf"].pop("depth"), r"no model_conf\.depth"),
        ("heads", lambda c: c["model_conf"].update(num_heads="two"), r"num_heads is 'two'"),
        ("spec", bad_spec, r"feature_encoder_spec .* not a list"),
        ("model", lambda c: c.update(model="Paraformer"), r"model is 'Paraformer'"),
        ("prenorm", lambda c: c["model_conf"].update(layer_norm_first=True), "layer_norm_first"),
    ]:
        path = write_tiny_emotion2vec(tmp_path / name)
        _edit_config(path, edit)
        with pytest.raises(Emotion2vecError, match=message):
            EmotionRecognizer(path)
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "model.pt").write_bytes(b"")
    with pytest.raises(AudioError, match="neither config.yaml nor config.json.*model: Emotion2vec"):
        EmotionRecognizer(neither)


def test_filter_drops_a_turn_the_model_hears_as_another_emotion(tmp_path):
    from opens2s.config.audio import AudioSection
    from opens2s.config.data import FilterSettings
    from opens2s.data.filters import AudioFilter
    from opens2s.data.render import TurnRenderer
    from opens2s.data.sample import Sample, Scenario, Turn

    path = write_tiny_emotion2vec(tmp_path / "angry", favour="生气/angry")
    audio = AudioSection()
    samples = []
    for i, emotion in enumerate(("happy", "angry", "sad")):
        sc = Scenario(emotion, 1.0, "school", "parent", "us-m1", 1)
        turns = [
            Turn("user", "The letter from the school came today."),
            Turn("assistant", "I see."),
        ]
        samples.append(Sample(f"d{i}", i, 0, sc, turns))
    TurnRenderer(audio)(samples)
    settings = FilterSettings(verify_prosody=False, ser_model_path=str(path))
    out = AudioFilter(settings, audio)(samples)
    assert [s.ok for s in out] == [False, True, False]
    assert out[1].checks["ser_agrees"] == 1.0
    for s in (out[0], out[2]):
        assert s.dropped_reason.startswith("ser: turn 0 (user) sounds angry")


def test_eval_takes_the_emotion2vec_format_through_the_same_loader(tmp_path):
    from opens2s.evaluation.emotion import SpeechEmotionRecognizer

    ser = SpeechEmotionRecognizer(write_tiny_emotion2vec(tmp_path / "e2v", favour="难过/sad"))
    assert ser.labels[6] == "sad" and ser.labels[5] == "其他/other"
    label, p = ser.predict(_tone(0.6, sr=24000), 24000)
    assert label == "sad" and p > 0.99
    broken = write_tiny_emotion2vec(tmp_path / "broken")
    (broken / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"eval\.ser_model_path.*no model\.pt"):
        SpeechEmotionRecognizer(broken)
