"""A record names its audio and speaker embedding relative to the corpus root; absolute paths,
``../`` and other buckets are refused unless ``model.record_roots`` allows them."""

from __future__ import annotations

import numpy as np
import pytest
from opens2s import storage
from opens2s.audio.io import write_audio
from opens2s.config.model import ModelSection
from opens2s.model import build_model, build_tokenizer
from opens2s.model.records import PathOutsideCorpusError, RecordEncoder, parse_record


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return build_model("tiny"), build_tokenizer()


def _record(audio: str, spk: str = "") -> dict:
    return {
        "id": "r1",
        "messages": [
            {"role": "user", "content": [{"text": "", "audio": audio, "speech_units": ""}]},
            {
                "role": "assistant",
                "content": [
                    {"text": "I hear you.", "audio": "", "speech_units": "<|audio_1|>",
                     "spk_emb": spk}
                ],
            },
        ],
    }  # fmt: skip


def _wav_bytes(tmp_path) -> bytes:
    wave = (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32)
    write_audio(tmp_path / "w.wav", wave, 16000)
    return (tmp_path / "w.wav").read_bytes()


def test_local_records_cannot_reach_outside_the_corpus_root(tmp_path, model_and_tokenizer):
    model, tok = model_and_tokenizer
    root, outside = tmp_path / "corpus", tmp_path / "elsewhere"
    (root / "audio").mkdir(parents=True)
    outside.mkdir()
    data = _wav_bytes(tmp_path)
    for path in (root / "audio" / "ok.wav", outside / "secret.wav"):
        path.write_bytes(data)
    np.save(outside / "spk.npy", np.zeros(256, dtype=np.float32))
    (root / "audio" / "link.wav").symlink_to(outside / "secret.wav")
    encoder = RecordEncoder(tok, model.config, root)

    encoder.encode(parse_record(_record("audio/ok.wav")))
    encoder.encode(parse_record(_record(str(root / "audio" / "ok.wav"))))  # absolute, inside
    for bad in (str(outside / "secret.wav"), "../elsewhere/secret.wav", "audio/link.wav"):
        with pytest.raises(PathOutsideCorpusError, match=r"outside the corpus root"):
            encoder.encode(parse_record(_record(bad)))
    with pytest.raises(PathOutsideCorpusError, match=r"spk_emb"):
        encoder.encode(parse_record(_record("audio/ok.wav", spk=str(outside / "spk.npy"))))

    allowed = RecordEncoder(tok, model.config, root, ModelSection(record_roots=[str(outside)]))
    allowed.encode(parse_record(_record(str(outside / "secret.wav"))))
    allowed.encode(parse_record(_record("../elsewhere/secret.wav")))


def test_s3_records_cannot_name_another_prefix_or_bucket(s3_bucket, tmp_path, model_and_tokenizer):
    model, tok = model_and_tokenizer
    root = f"s3://{s3_bucket}/corpus"
    data = _wav_bytes(tmp_path)
    storage.write_bytes(f"{root}/audio/ok.wav", data)
    storage.write_bytes(f"s3://{s3_bucket}/private/secret.wav", data)
    encoder = RecordEncoder(tok, model.config, root)

    encoder.encode(parse_record(_record("audio/ok.wav")))
    encoder.encode(parse_record(_record(f"{root}/audio/ok.wav")))
    for bad in (
        f"s3://{s3_bucket}/private/secret.wav",
        "../private/secret.wav",
        "audio/../../private/secret.wav",
    ):
        with pytest.raises(PathOutsideCorpusError, match=r"model.record_roots"):
            encoder.encode(parse_record(_record(bad)))

    section = ModelSection(record_roots=[f"s3://{s3_bucket}/private"])
    RecordEncoder(tok, model.config, root, section).encode(
        parse_record(_record("../private/secret.wav"))
    )
