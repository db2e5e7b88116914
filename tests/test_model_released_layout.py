"""A directory in the released OpenS2S layout (built by tests/released_layout.py from the facts in
docs/model.md, with a non-zero units_bias and the TTS eos before or after the unit tokens) loads
strictly, decodes greedily as the no-cache reference does with units reported as the N of
<|audio_N|>, builds the upstream worker's prompt, trains on records with <|audio_N|> strings
through the tts/ tokenizer's ids, and survives export -> load bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from opens2s.model import load_model
from opens2s.model.layout import save_model_dir
from opens2s.model.records import RecordEncoder, collate, parse_record
from opens2s.model.reference_decode import reference_decode
from opens2s.model.streaming import SamplingParams, StreamingDecoder, UnitChunk
from released_layout import build_released_dir
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

AUDIO_TOKEN_INDEX = -200  # upstream's placeholder id (src/constants.py)


@pytest.fixture(scope="module", params=[False, True], ids=["eos_before_units", "eos_after_units"])
def released(request, tmp_path_factory):
    return build_released_dir(
        tmp_path_factory.mktemp("released") / "OpenS2S", eos_after_units=request.param
    )


def _wave(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(
        np.float32
    )


def test_released_directory_loads_strictly_with_units_from_the_tts_folder(released):
    model, tokenizer = load_model(released.path)
    state = model.state_dict()
    assert set(state) == set(released.state_dict)
    assert all(torch.equal(state[k], released.state_dict[k]) for k in state)
    c = model.config
    assert c.units_bias == released.units_bias != 0
    assert c.unit_vocab_size == released.units
    assert c.tts_eos_token_id == released.tts_eos_id
    assert c.audio_token_id == tokenizer.convert_tokens_to_ids("<|im_audio|>")
    # the root generation_config.json's eos ids end the text
    assert set(model.generation_config.eos_token_id) == {
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    }


@pytest.mark.parametrize(
    "rename", [("llm_ln.bias", None), ("audio_adapter.ln.weight", "audio_adapter.norm.weight")]
)
def test_a_missing_or_misnamed_tensor_is_an_error_that_names_it(released, tmp_path, rename):
    import shutil

    path = tmp_path / "broken"
    shutil.copytree(released.path, path)
    old, new = rename
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shard = path / index["weight_map"][old]
    tensors = load_file(str(shard))
    value = tensors.pop(old)
    del index["weight_map"][old]
    if new is not None:
        tensors[new] = value
        index["weight_map"][new] = shard.name
    save_file(tensors, str(shard), metadata={"format": "pt"})
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError) as err:
        load_model(path)
    assert old in str(err.value)
    if new is not None:
        assert new in str(err.value)


def test_greedy_decode_equals_the_reference_with_units_as_audio_numbers(released):
    model, tokenizer = load_model(released.path)
    tts_tok = AutoTokenizer.from_pretrained(str(released.path / "tts"))
    # Make a non-unit, non-eos TTS id the most likely pick everywhere: only unit ids and the
    # end of speech may ever be sampled, so it must never come out.
    trap = next(i for i in range(released.units_bias) if i != released.tts_eos_id)
    with torch.no_grad():
        model.tts_lm_model.lm_head.weight[trap] = 50 * model.tts_lm_model.lm_head.weight[trap]
    decoder = StreamingDecoder(model, tokenizer)
    sampling = SamplingParams(max_text_tokens=10, max_units=40)
    wave = _wave()
    units, events = [], list(decoder.decode(wave, sampling=sampling))
    for e in events:
        if isinstance(e, UnitChunk):
            units.extend(e.units)
    prompt = decoder.prompt_embeds(wave)
    ref_text, ref_units = reference_decode(
        model, prompt, decoder.speaker_embeds(None), decoder.end_tokens, sampling
    )
    assert units == ref_units and len(units) > 0
    assert all(0 <= u < released.units for u in units)
    # unit N is the tts tokenizer's <|audio_N|>
    names = tts_tok.convert_ids_to_tokens([released.units_bias + u for u in units])
    assert names == [f"<|audio_{u}|>" for u in units]


def test_sampled_units_stay_in_unit_ids_and_follow_their_own_settings(released):
    model, tokenizer = load_model(released.path)
    decoder = StreamingDecoder(model, tokenizer)
    wave = _wave(seed=1)
    greedy_text = SamplingParams(max_text_tokens=8, max_units=40, unit_temperature=1.0, seed=3)
    events = list(decoder.decode(wave, sampling=greedy_text))
    units = [u for e in events if isinstance(e, UnitChunk) for u in e.units]
    assert units and all(0 <= u < released.units for u in units)
    ref_text, ref_units = reference_decode(
        model,
        decoder.prompt_embeds(wave),
        decoder.speaker_embeds(None),
        decoder.end_tokens,
        greedy_text,
    )
    assert units == ref_units
    all_greedy = SamplingParams(max_text_tokens=8, max_units=40, seed=3)
    greedy_units = [
        u
        for e in decoder.decode(wave, sampling=all_greedy)
        if isinstance(e, UnitChunk)
        for u in e.units
    ]
    assert greedy_units != units  # unit_temperature, not temperature, drove the unit draws


def test_prompt_ids_equal_the_upstream_worker_prompt(released):
    model, tokenizer = load_model(released.path)
    decoder = StreamingDecoder(model, tokenizer)
    history = [
        {"role": "user", "content": "I had a long day."},
        {"role": "assistant", "content": "That sounds hard."},
    ]
    ours = decoder.prompt_ids(history)
    # upstream model_worker.py: string contents, system prompt first, chat template with
    # enable_thinking=False and a generation prompt, + <|im_tts_start|>, split at <|im_audio|>.
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        history[0],
        {"role": "assistant", "content": "<|im_tts_start|>That sounds hard.<|im_tts_end|>"},
        {"role": "user", "content": "<|im_audio_start|><|im_audio|><|im_audio_end|>"},
    ]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, enable_thinking=False
    )
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    prompt += "<|im_tts_start|>"
    theirs: list[int] = []
    for i, segment in enumerate(prompt.split("<|im_audio|>")):
        if i:
            theirs.append(AUDIO_TOKEN_INDEX)
        theirs += tokenizer.encode(segment, add_special_tokens=False)
    audio_id = model.config.audio_token_id
    assert [AUDIO_TOKEN_INDEX if t == audio_id else t for t in ours] == theirs


def _record(tmp_path, units: list[int]) -> dict:
    import soundfile as sf

    sf.write(tmp_path / "q.wav", _wave(1.2, seed=4), 16000)
    return {
        "id": "r1",
        "messages": [
            {"role": "user", "content": [{"audio": "q.wav"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "text": "That sounds hard.",
                        "speech_units": "".join(f"<|audio_{u}|>" for u in units),
                    }
                ],
            },
        ],
    }


def test_a_record_with_audio_units_trains_on_the_release_ids(released, tmp_path):
    model, tokenizer = load_model(released.path)
    units = [3, 17, 0, released.units - 1, 8, 8, 21]
    obj = _record(tmp_path, units)
    record = parse_record(obj, unit_vocab_size=model.config.unit_vocab_size)
    sample = RecordEncoder(tokenizer, model.config, tmp_path).encode(record)
    # upstream instruction_dataset.py: tts_tokenizer.encode(units) + [tts_tokenizer.eos_token_id]
    tts_tok = AutoTokenizer.from_pretrained(str(released.path / "tts"))
    unit_string = obj["messages"][1]["content"][0]["speech_units"]
    expected = tts_tok.encode(unit_string, add_special_tokens=False) + [tts_tok.eos_token_id]
    assert sample["speech_units"][0].tolist() == expected
    batch = collate([sample])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        out = model(**batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.tts_loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]


def test_export_then_load_is_bit_exact_in_the_same_layout(released, tmp_path):
    model, tokenizer = load_model(released.path)
    out = save_model_dir(model, tokenizer, tmp_path / "export", max_shard_size="200KB")
    assert (out / "model.safetensors.index.json").is_file()  # sharded like the release
    for part in ("tts/tokenizer.json", "tts/generation_config.json", "generation_config.json"):
        assert (out / part).is_file(), part
    assert (out / "audio" / "preprocessor_config.json").is_file()
    again, tok2 = load_model(out)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for field in ("units_bias", "unit_vocab_size", "tts_eos_token_id", "unit_stop_ids"):
        assert getattr(again.config, field) == getattr(model.config, field), field
    # the exported tts/ tokenizer gives the release's ids for a unit string, and its eos
    ours = AutoTokenizer.from_pretrained(str(out / "tts"))
    theirs = AutoTokenizer.from_pretrained(str(released.path / "tts"))
    s = f"<|audio_0|><|audio_5|><|audio_{released.units - 1}|>"
    assert ours.encode(s, add_special_tokens=False) == theirs.encode(s, add_special_tokens=False)
    assert ours.eos_token_id == theirs.eos_token_id
    assert tok2.get_vocab() == tokenizer.get_vocab()
    assert tok2.chat_template == tokenizer.chat_template


def test_the_training_data_pipeline_encodes_with_the_release_unit_ids(released, tmp_path):
    """What a Ray training stage starting from a released directory encodes records with."""
    from opens2s.config import AudioSection, ModelSection
    from opens2s.train.model_source import config_and_tokenizer

    config, tokenizer = config_and_tokenizer(
        ModelSection(checkpoint=str(released.path)), AudioSection()
    )
    assert config.units_bias == released.units_bias
    assert config.tts_eos_token_id == released.tts_eos_id
    record = parse_record(_record(tmp_path, [1, 2]), unit_vocab_size=config.unit_vocab_size)
    sample = RecordEncoder(tokenizer, config, tmp_path).encode(record)
    bias, eos = released.units_bias, released.tts_eos_id
    assert sample["speech_units"][0].tolist() == [bias + 1, bias + 2, eos]


@pytest.mark.parametrize("remove", ["tokenizer.json", "model.safetensors.index.json", "tts"])
def test_a_directory_missing_a_part_says_which(released, tmp_path, remove):
    import shutil

    path = tmp_path / "partial"
    shutil.copytree(released.path, path)
    target = path / remove
    if target.is_dir():  # tts/ without its tokenizer
        for f in target.glob("tokenizer*"):
            f.unlink()
    else:
        target.unlink()
        if remove.startswith("model."):
            for shard in path.glob("model-*.safetensors"):
                shard.unlink()
    with pytest.raises((FileNotFoundError, ValueError)) as err:
        load_model(path)
    message = str(err.value)
    assert "sentencepiece" not in message and "Repo id" not in message
    assert (
        ("tokenizer" in message)
        if remove != "model.safetensors.index.json"
        else ("weights" in message)
    )
