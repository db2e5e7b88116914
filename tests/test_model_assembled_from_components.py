"""``model.components``: an OpenS2S model assembled from a separate audio encoder, LLM and TTS
LM keeps each part's weights, adds OpenS2S's tokens, starts the adapter and bridges fresh, trains,
and saves as a released-layout directory that loads back strictly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from component_dirs import write_component_dirs
from opens2s.config.model import ComponentsSection, ModelSection
from opens2s.model import load_model, model_from_section
from opens2s.model.components import assemble_model
from opens2s.model.layout import save_model_dir
from opens2s.model.records import RecordEncoder, collate, parse_record
from opens2s.model.tokenizer import SPECIAL_TOKENS
from opens2s.train.model_source import config_and_tokenizer
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerFast

FRESH = ("audio_adapter.", "llm2tts.", "llm_ln.", "tts_lm_model.spk2tts.", "tts_lm_model.spk_ln.")


@pytest.fixture(scope="module", params=["qwen2_audio", "whisper"])
def parts(request, tmp_path_factory):
    return write_component_dirs(tmp_path_factory.mktemp(request.param), encoder=request.param)


def _section(parts, **kw) -> ModelSection:
    return ModelSection(components=ComponentsSection(**parts.section()), **kw)


def _record(tmp_path) -> dict:
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "q.wav", (0.1 * rng.standard_normal(19200)).astype(np.float32), 16000)
    units = "".join(f"<|audio_{u}|>" for u in (3, 17, 0, 47, 8))
    return {
        "id": "r1",
        "messages": [
            {"role": "user", "content": [{"audio": "q.wav"}]},
            {
                "role": "assistant",
                "content": [{"text": "That sounds hard.", "speech_units": units}],
            },
        ],
    }


def test_each_part_keeps_its_weights_and_the_bridges_start_fresh(parts):
    model, tokenizer = model_from_section(_section(parts))
    ours = model.state_dict()

    source = load_file(str(parts.audio_encoder / "model.safetensors"))
    prefix = "audio_tower." if parts.audio_encoder.name == "qwen2_audio" else "model.encoder."
    encoder = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
    assert encoder and all(
        torch.equal(ours[f"audio_encoder_model.{k}"], v) for k, v in encoder.items()
    )

    llm_source = load_file(str(parts.llm / "model.safetensors"))
    rows = None
    for k, v in llm_source.items():
        mine = ours[f"llm_model.{k}"]
        if mine.shape != v.shape:  # embeddings / lm_head grew by OpenS2S's tokens
            rows = v.shape[0]
            assert torch.equal(mine[:rows], v), k
        else:
            assert torch.equal(mine, v), k
    assert rows is not None

    tts_source = load_file(str(parts.tts_lm / "model.safetensors"))
    assert all(torch.equal(ours[f"tts_lm_model.{k}"], v) for k, v in tts_source.items())
    assert all(
        k.startswith(("audio_encoder_model.", "llm_model.", "tts_lm_model.", *FRESH)) for k in ours
    )

    # The tokenizer: the LLM's ids unchanged, every OpenS2S token added after them.
    original = PreTrainedTokenizerFast.from_pretrained(str(parts.llm))
    vocab = tokenizer.get_vocab()
    assert all(vocab[t] == i for t, i in original.get_vocab().items())
    assert all(t in vocab for t in SPECIAL_TOKENS)
    assert len(tokenizer) == model.config.llm_config.vocab_size
    assert model.llm_model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    # Units where the TTS tokenizer puts them.
    tts_tok = AutoTokenizer.from_pretrained(str(parts.tts_lm))
    assert model.config.units_bias == tts_tok.convert_tokens_to_ids("<|audio_0|>")
    assert model.config.unit_vocab_size == parts.units
    assert model.config.tts_eos_token_id == tts_tok.eos_token_id

    # Fresh parts follow model.seed: same seed, same weights; another seed, others.
    again = model_from_section(_section(parts))[0].state_dict()
    other = model_from_section(_section(parts, seed=7))[0].state_dict()
    fresh = [k for k in ours if k.startswith(FRESH)]
    assert fresh and all(torch.equal(ours[k], again[k]) for k in ours)
    assert any(not torch.equal(ours[k], other[k]) for k in fresh)


def test_the_assembled_model_trains_and_saves_as_a_released_directory(parts, tmp_path):
    model, tokenizer = assemble_model(ComponentsSection(**parts.section()))
    config, data_tokenizer = config_and_tokenizer(_section(parts), None)
    for field in ("units_bias", "unit_vocab_size", "tts_eos_id", "audio_token_id", "spk_emb_dim"):
        assert getattr(config, field) == getattr(model.config, field), field
    assert config.llm_config.vocab_size == model.config.llm_config.vocab_size
    assert data_tokenizer.get_vocab() == tokenizer.get_vocab()

    record = parse_record(_record(tmp_path), unit_vocab_size=config.unit_vocab_size)
    sample = RecordEncoder(data_tokenizer, config, tmp_path).encode(record)
    assert sample["speech_units"][0].tolist()[:2] == [config.units_bias + 3, config.units_bias + 17]
    batch = collate([sample])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        out = model(**{k: v for k, v in batch.items() if k != "ids"})
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses

    out_dir = save_model_dir(model, tokenizer, tmp_path / "assembled")
    loaded, loaded_tok = load_model(out_dir)
    assert loaded_tok.get_vocab() == tokenizer.get_vocab()
    mine, theirs = model.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert loaded.config.units_bias == model.config.units_bias


def test_a_part_with_a_stray_or_missing_tensor_is_named(parts, tmp_path):
    llm = tmp_path / "llm"
    shutil.copytree(parts.llm, llm)
    weights = load_file(str(llm / "model.safetensors"))
    weights["model.layers.0.extra_gate.weight"] = torch.zeros(2, 2)
    save_file(weights, str(llm / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.components\.llm.*extra_gate"):
        assemble_model(ComponentsSection(**{**parts.section(), "llm": str(llm)}))

    audio = tmp_path / "audio"
    shutil.copytree(parts.audio_encoder, audio)
    weights = load_file(str(audio / "model.safetensors"))
    prefix = "audio_tower." if parts.audio_encoder.name == "qwen2_audio" else "model.encoder."
    dropped = f"{prefix}layers.0.fc1.weight"
    del weights[dropped]
    save_file(weights, str(audio / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"audio_encoder.*missing.*layers\.0\.fc1\.weight"):
        assemble_model(ComponentsSection(**{**parts.section(), "audio_encoder": str(audio)}))

    cfg = json.loads((audio / "config.json").read_text())
    (audio / "config.json").write_text(json.dumps({**cfg, "model_type": "wav2vec2"}))
    with pytest.raises(ValueError, match="model_type 'wav2vec2'"):
        assemble_model(ComponentsSection(**{**parts.section(), "audio_encoder": str(audio)}))

    with pytest.raises(ValueError, match="checkpoint and model.components are both set"):
        ModelSection(checkpoint="x", components=ComponentsSection(**parts.section()))
