"""Bad records raise a typed RecordError naming the record and the field; good ones encode to the
chat template's ids with labels only on assistant text."""

from __future__ import annotations

import numpy as np
import pytest
from opens2s.audio.io import write_audio
from opens2s.config.model import ModelSection
from opens2s.model import build_model, build_tokenizer
from opens2s.model.modeling import IGNORE_INDEX
from opens2s.model.records import (
    AudioTooShortError,
    BadUnitsError,
    MissingAudioError,
    RecordEncoder,
    SchemaError,
    TooLongError,
    collate,
    parse_record,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    write_audio(root / "ok.wav", (0.1 * rng.standard_normal(24000)).astype(np.float32), 16000)
    write_audio(root / "short.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000)
    (root / "not_audio.wav").write_text("hello")
    np.save(root / "spk.npy", rng.standard_normal(256).astype(np.float32))
    model = build_model("tiny")
    return root, RecordEncoder(build_tokenizer(), model.config, root), model


def _record(audio="ok.wav", units="<|audio_1|><|audio_2|>", text="I hear you.", spk="spk.npy"):
    return {
        "id": "r1",
        "messages": [
            {"role": "user", "content": [{"text": "", "audio": audio, "speech_units": ""}]},
            {
                "role": "assistant",
                "content": [{"text": text, "audio": "", "speech_units": units, "spk_emb": spk}],
            },
        ],
    }


@pytest.mark.parametrize(
    "obj, error, field",
    [
        ({"id": "r1"}, SchemaError, "messages"),
        ({"id": "r1", "messages": [{"role": "bot", "content": "hi"}]}, SchemaError, "role"),
        ({"id": "r1", "messages": [{"role": "user", "content": "hi"}]}, SchemaError, "messages"),
        (_record(units="<|audio_1|>oops<|audio_2|>"), BadUnitsError, "speech_units"),
        (_record(units="<|audio_5000|>"), BadUnitsError, "speech_units"),
    ],
    ids=["no-messages", "bad-role", "no-assistant", "unparsable-units", "unit-out-of-range"],
)
def test_parse_record_rejects(obj, error, field):
    """Each schema problem is reported with the record id and the field at fault."""
    with pytest.raises(error) as info:
        parse_record(obj, unit_vocab_size=1024)
    assert info.value.record_id == "r1" and field in info.value.field
    assert "r1" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, error, field",
    [
        ({"audio": "missing.wav"}, MissingAudioError, "messages[0].content[0].audio"),
        ({"audio": "not_audio.wav"}, MissingAudioError, "messages[0].content[0].audio"),
        ({"audio": "short.wav"}, AudioTooShortError, "messages[0].content[0].audio"),
        ({"text": "word " * 2000}, TooLongError, "messages"),
        ({"spk": [0.5] * 7}, SchemaError, "messages[1].content[0].spk_emb"),
    ],
    ids=["missing-audio", "unreadable-audio", "audio-under-0.5s", "text-too-long", "spk-dim"],
)
def test_encoder_rejects(corpus, kwargs, error, field):
    _, encoder, _ = corpus
    with pytest.raises(error) as info:
        encoder.encode(parse_record(_record(**kwargs)))
    assert info.value.record_id == "r1" and info.value.field == field


def test_encoding_matches_chat_template_and_labels_only_assistant_text(corpus):
    root, encoder, model = corpus
    obj = _record()
    sample = encoder.encode(parse_record(obj))
    tok = encoder.tokenizer
    expected = tok.apply_chat_template(obj["messages"], tokenize=True, return_dict=False)
    assert sample["input_ids"].tolist() == list(expected)
    labelled = sample["input_ids"][sample["labels"] != IGNORE_INDEX]
    assert tok.decode(labelled) == "<|im_tts_start|>I hear you.<|im_tts_end|><|im_end|>"
    span = sample["input_ids"][sample["token_types"] == 1]
    assert tok.decode(span) == "<|im_tts_start|>I hear you.<|im_tts_end|>"
    assert sample["speech_units"].tolist() == [[1, 2, model.config.tts_eos_token_id]]
    assert sample["spk_embs"].shape == (1, 256)
    assert sample["speech_mask"].sum() == 150  # 1.5 s at 100 frames/s


def test_collate_pads_and_the_model_takes_the_batch(corpus):
    _, encoder, model = corpus
    a = encoder.encode(parse_record(_record()))
    b = encoder.encode(parse_record(_record(text="That sounds hard, I am here for you.")))
    batch = collate([a, b])
    assert batch["input_ids"].shape[0] == 2 and batch["speech_values"].shape[0] == 2
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    out = model(**batch)
    assert out.loss > 0 and out.llm_loss > 0 and out.tts_loss > 0


def test_max_text_tokens_comes_from_the_model_section(corpus):
    root, encoder, model = corpus
    tight = RecordEncoder(encoder.tokenizer, model.config, root, ModelSection(max_text_tokens=16))
    with pytest.raises(TooLongError):
        tight.encode(parse_record(_record()))


def test_a_record_that_is_not_an_object_is_a_schema_error():
    with pytest.raises(SchemaError, match="expected a JSON object, got list"):
        parse_record([1, 2], record_id="line-7")


def test_audio_longer_than_the_model_section_allows_is_refused_from_its_header(corpus, tmp_path):
    import soundfile as sf

    root, encoder, model = corpus
    # 3 s of audio where the section allows 2 s: the header says so before any decoding.
    with sf.SoundFile(tmp_path / "long.wav", "w", samplerate=8000, channels=1) as f:
        f.write(np.zeros(8000 * 3, np.float32))
    tight = RecordEncoder(
        encoder.tokenizer, model.config, tmp_path, ModelSection(max_audio_seconds=2.0)
    )
    with pytest.raises(TooLongError, match="too long"):
        tight.encode(parse_record(_record(audio="long.wav")))
