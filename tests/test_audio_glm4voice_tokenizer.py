"""GLM-4-Voice tokenizer (Whisper encoder + VQ) from a released-format directory: strict load,
encode shape and rate, batching, and a corpus build with ``unit_tokenizer: glm4voice``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from glm4voice_tiny import write_tiny_tokenizer
from opens2s.audio.units import (
    GLM4VoiceTokenizer,
    UnitError,
    UnitTokenizer,
    build_unit_tokenizer,
    load_unit_tokenizer,
)
from opens2s.config import AudioSection


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(tmp_path_factory.mktemp("glm-4-voice-tokenizer"))


@pytest.fixture(scope="module")
def tok(tok_dir) -> GLM4VoiceTokenizer:
    return load_unit_tokenizer(tok_dir)


def _noise(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * sr)) * 0.1).astype(np.float32)


def test_loads_strictly_as_a_unit_tokenizer(tok, tok_dir, tmp_path):
    assert isinstance(tok, UnitTokenizer)
    assert (tok.unit_rate, tok.codebook_size) == (12.5, 16384)
    cfg = AudioSection(unit_tokenizer="glm4voice", glm4voice_tokenizer_path=str(tok_dir))
    assert isinstance(build_unit_tokenizer(cfg), GLM4VoiceTokenizer)
    pointer = tok.save(tmp_path / "tokenizer.json")
    assert load_unit_tokenizer(pointer).model_dir == tok_dir


def test_a_wrong_tensor_is_a_named_error(tok_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("config.json", "preprocessor_config.json"):
        (bad / f).write_bytes((tok_dir / f).read_bytes())
    state = load_file(str(tok_dir / "model.safetensors"))
    state["model.encoder.codebooks.weight"] = state.pop("model.encoder.codebook.weight")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(UnitError) as e:
        GLM4VoiceTokenizer(bad)
    assert "missing ['codebook.weight']" in e.value.problem
    assert "unexpected ['codebooks.weight']" in e.value.problem
    cfg = json.loads((tok_dir / "config.json").read_text()) | {"num_mel_bins": 80}
    (bad / "config.json").write_text(json.dumps(cfg))
    save_file(load_file(str(tok_dir / "model.safetensors")), str(bad / "model.safetensors"))
    with pytest.raises(UnitError, match="conv1.weight"):
        GLM4VoiceTokenizer(bad)


def test_encode_gives_12_5_units_per_second_over_16384_codes(tok):
    for seconds in (0.08, 1.0, 2.37, 31.0):  # 31 s: two 30 s segments, concatenated
        units = tok.encode(_noise(seconds), 16000)
        assert units.dtype == np.int64 and units.shape == (math.ceil(seconds * 12.5),)
        assert 0 <= units.min() and units.max() < 16384
    assert tok.encode(_noise(2.0, 22050), 22050).shape == (25,)  # resampled to 16 kHz first
    assert len(set(tok.encode(_noise(4.0), 16000).tolist())) > 10  # not one code for everything


def test_a_batch_encodes_as_each_wave_alone(tok):
    waves = [
        (_noise(1.3, seed=1), 16000),
        (_noise(0.4, seed=2), 16000),
        (_noise(2.0, 22050), 22050),
    ]
    for (w, sr), units in zip(waves, tok.encode_batch(waves), strict=True):
        np.testing.assert_array_equal(units, tok.encode(w, sr))


@pytest.mark.timeout(400)
def test_corpus_build_with_glm4voice_units(ray_local, tmp_path, tok_dir):
    import yaml
    from opens2s import storage
    from opens2s.config import load_config
    from opens2s.data import output
    from opens2s.data.pipeline import build_corpus

    corpus = str(tmp_path / "corpus")
    raw = {
        "run_dir": str(tmp_path / "run"),
        "audio": {
            "unit_tokenizer": "glm4voice",
            "glm4voice_tokenizer_path": str(tok_dir),
            "unit_rate": 12.5,
            "codebook_size": 16384,
        },
        "data": {
            "cpus_per_worker": 0.25,
            "scenarios": {"num_dialogues": 3},
            "output": {"uri": corpus, "shard_size": 3},
        },
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    summary = build_corpus(load_config(tmp_path / "c.yaml"))
    assert summary["dialogues_written"] >= 2
    assert not storage.exists(storage.join(corpus, output.UNIT_TOKENIZER))  # nothing was fitted
    n_items = 0
    for uri in storage.list_prefix(storage.join(corpus, output.SHARDS_DIR)):
        for line in storage.read_text(uri).splitlines():
            for m in json.loads(line)["messages"]:
                if m["role"] != "assistant":
                    continue
                for item in m["content"] if isinstance(m["content"], list) else [m["content"]]:
                    if not isinstance(item, dict) or not item.get("speech_units"):
                        continue
                    ids = [int(x) for x in re.findall(r"<\|audio_(\d+)\|>", item["speech_units"])]
                    assert ids
                    assert all(0 <= u < 16384 for u in ids)
                    n_items += 1
    assert n_items >= 2
