"""CosyVoice2's LM, frontend and assembled model from a tiny random-init directory in the
released layout: strict loading names what is wrong, the frontend's rates and sizes, seeded and
bounded LM generation equal to an uncached replay, and instruct TTS end to end."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cosyvoice2_tiny import SPEECH_TOKENS, write_tiny_cosyvoice2
from onnx import TensorProto, helper
from opens2s.audio.cosyvoice2 import CosyVoice2Model, split_text
from opens2s.audio.cosyvoice2_frontend import (
    COSYVOICE2_SPECIALS,
    CosyVoice2Error,
    CosyVoice2Frontend,
    kaldi_fbank,
    whisper_log_mel,
)
from opens2s.audio.cosyvoice2_llm import load_lm, ras_sample
from opens2s.audio.glm4voice_decoder import DecoderLoadError, read_config
from opens2s.audio.io import AudioError


def _voice(seconds: float, sr: int, f0: float, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a little noise: a stand-in recording with a pitch."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (0.2 * wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_cosyvoice2(tmp_path_factory.mktemp("cosyvoice2") / "CosyVoice2-0.5B")


@pytest.fixture(scope="module")
def model(tiny) -> CosyVoice2Model:
    return CosyVoice2Model(tiny)


def _copy(tiny: Path, dest: Path) -> Path:
    shutil.copytree(tiny, dest)
    return dest


# -- strict loading ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "llm.pt",
        "flow.pt",
        "campplus.onnx",
        "speech_tokenizer_v2.onnx",
        "CosyVoice-BlankEN/config.json",
    ],
)
def test_a_missing_file_is_named(tiny, tmp_path, name):
    d = _copy(tiny, tmp_path / "m")
    (d / name).unlink()
    with pytest.raises(DecoderLoadError, match=name.replace(".", r"\.")):
        CosyVoice2Model(d)


def _llm_pt_error(tiny: Path, tmp_path: Path, edit) -> str:
    d = _copy(tiny, tmp_path / "m")
    state = torch.load(d / "llm.pt", weights_only=True)
    edit(state)
    torch.save(state, d / "llm.pt")
    with pytest.raises(DecoderLoadError) as err:
        load_lm(d, read_config(d / "cosyvoice2.yaml"))
    return str(err.value)


def test_llm_pt_with_a_stray_tensor_is_refused_naming_it(tiny, tmp_path):
    msg = _llm_pt_error(
        tiny, tmp_path, lambda s: s.__setitem__("text_encoder.weight", s["llm_embedding.weight"])
    )
    assert "unexpected ['text_encoder.weight']" in msg


def test_llm_pt_missing_a_tensor_is_refused_naming_it(tiny, tmp_path):
    msg = _llm_pt_error(
        tiny, tmp_path, lambda s: s.pop("llm.model.model.layers.1.mlp.up_proj.weight")
    )
    assert "missing ['llm.model.model.layers.1.mlp.up_proj.weight']" in msg


def test_llm_pt_with_a_mis_shaped_tensor_is_refused_naming_it(tiny, tmp_path):
    def edit(s):
        s["speech_embedding.weight"] = s["speech_embedding.weight"][:-1]

    msg = _llm_pt_error(tiny, tmp_path, edit)
    assert f"speech_embedding.weight ({SPEECH_TOKENS + 2}, 32) != ({SPEECH_TOKENS + 3}, 32)" in msg


def test_an_onnx_input_of_the_wrong_rank_is_refused_naming_it(tiny, tmp_path):
    d = _copy(tiny, tmp_path / "m")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "P"], ["output"])],
        "flat_campplus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["T", 80])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["T", 192])],
        [onnx.numpy_helper.from_array(np.zeros((80, 192), np.float32), "P")],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d / "campplus.onnx"
    )
    with pytest.raises(
        DecoderLoadError, match=r"campplus\.onnx: input 0 \('input'\) .* rank 2, expected .* rank 3"
    ):
        CosyVoice2Frontend(d)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("        top_k: 25\n", "", "missing 'llm.sampling.top_k'"),
        (
            "speech_token_size: 6561",
            "speech_token_size: 'all'",
            "'llm.speech_token_size' must be a number",
        ),
        ("llm_input_size: 32", "llm_input_size: 48", "must equal CosyVoice-BlankEN hidden_size"),
        ("    top_p: 0.8", "    top_p: 1.5", "top_p must lie in"),
    ],
)
def test_a_bad_llm_field_in_the_yaml_is_refused_naming_it(tiny, tmp_path, old, new, message):
    d = _copy(tiny, tmp_path / "m")
    text = (d / "cosyvoice2.yaml").read_text()
    assert old in text
    (d / "cosyvoice2.yaml").write_text(text.replace(old, new, 1))
    with pytest.raises(DecoderLoadError, match=re.escape(message)):
        CosyVoice2Model(d)


def test_a_tokenizer_larger_than_the_qwen2_embedding_is_refused(tiny, tmp_path):
    d = _copy(tiny, tmp_path / "m")
    cfg = (d / "CosyVoice-BlankEN" / "config.json").read_text()
    (d / "CosyVoice-BlankEN" / "config.json").write_text(
        cfg.replace('"vocab_size": 352', '"vocab_size": 310')
    )
    state = torch.load(d / "llm.pt", weights_only=True)
    for k in ("llm.model.model.embed_tokens.weight", "llm.model.lm_head.weight"):
        state[k] = state[k][:310]
    torch.save(state, d / "llm.pt")
    with pytest.raises(DecoderLoadError, match="the Qwen2 embedding only 310"):
        CosyVoice2Model(d)


# -- frontend ------------------------------------------------------------------------------------


def test_the_tokenizer_keeps_endofprompt_and_cosyvoice2_specials_as_one_token_each(model):
    tok = model.frontend
    for special in COSYVOICE2_SPECIALS:
        assert len(tok.text_ids(special)) == 1, special
    ids = tok.text_ids("Speak happily.<|endofprompt|>")
    assert ids[-1] == tok.tokenizer.convert_tokens_to_ids("<|endofprompt|>")
    assert ids[:-1] == tok.text_ids("Speak happily.")  # no BOS/EOS added


def test_speech_tokens_come_at_25_per_second_from_any_rate(model):
    assert len(model.frontend.speech_tokens(_voice(2.0, 16000, 140.0))) == 50
    tokens = model.frontend.speech_tokens(_voice(3.0, 24000, 140.0), 24000)
    assert len(tokens) == 75 and all(0 <= t < SPEECH_TOKENS for t in tokens)


def test_speech_tokens_refuse_a_prompt_over_30_seconds(model):
    with pytest.raises(CosyVoice2Error, match="30.50 s is too long"):
        model.frontend.speech_tokens(np.zeros(int(30.5 * 16000), np.float32))


def test_speaker_embedding_is_192_values_that_depend_on_the_voice(model):
    low = model.frontend.speaker_embedding(_voice(2.0, 16000, 110.0))
    high = model.frontend.speaker_embedding(_voice(2.0, 22050, 260.0), 22050)
    assert low.shape == high.shape == (1, 192)
    assert torch.isfinite(low).all() and not torch.allclose(low, high, atol=1e-3)


def test_prompt_mel_has_50_frames_per_second_and_80_bins(model):
    assert model.frontend.prompt_mel(_voice(2.0, 24000, 140.0)).shape == (1, 100, 80)
    assert model.frontend.prompt_mel(_voice(1.5, 16000, 140.0), 16000).shape == (1, 75, 80)


def test_fbank_and_whisper_mel_frame_counts_follow_kaldi_and_whisper():
    wave = _voice(1.0, 16000, 140.0)[:15999]
    assert kaldi_fbank(wave).shape == (1 + (15999 - 400) // 160, 80)
    assert whisper_log_mel(wave).shape == (128, 15999 // 160)
    with pytest.raises(AudioError, match="need at least 400"):
        kaldi_fbank(wave[:399])


# -- LM --------------------------------------------------------------------------------------------


def _text(model) -> tuple[list[int], list[int]]:
    return (
        model.frontend.text_ids("Hello world, this is a small test."),
        model.frontend.text_ids("Speak sadly.<|endofprompt|>"),
    )


def test_generation_is_reproducible_with_a_seed_and_differs_across_seeds(model):
    text, prompt = _text(model)
    runs = [
        model.lm.generate(text, prompt, generator=torch.Generator().manual_seed(s))
        for s in (7, 7, 8)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_generation_stays_within_upstreams_length_bounds(model):
    text, prompt = _text(model)
    low, high = model.lm.length_bounds(len(text))
    assert (low, high) == (2 * len(text), 20 * len(text))
    for seed in range(4):
        out = model.lm.generate(text, prompt, generator=torch.Generator().manual_seed(seed))
        assert low <= len(out) <= high
        assert all(0 <= t < SPEECH_TOKENS for t in out)
    # end-of-speech is likely in the tiny LM: without the floor it stops earlier than 2 x text
    early = [
        len(
            model.lm.generate(
                text, prompt, generator=torch.Generator().manual_seed(s), min_token_text_ratio=0.0
            )
        )
        for s in range(4)
    ]
    assert min(early) < low
    capped = model.lm.generate(
        text,
        prompt,
        generator=torch.Generator().manual_seed(0),
        min_token_text_ratio=1.0,
        max_token_text_ratio=1.0,
    )
    assert len(capped) == len(text)


def test_cached_generation_equals_a_replay_without_the_cache(model):
    text, prompt = _text(model)
    out = model.lm.generate(text, prompt, generator=torch.Generator().manual_seed(3))
    low, _ = model.lm.length_bounds(len(text))
    gen = torch.Generator().manual_seed(3)
    x = model.lm.lm_input(text, prompt)
    replay: list[int] = []
    with torch.inference_mode():
        for step in range(len(out) + 1):
            scores = model.lm.logits(x)[0, -1].log_softmax(-1)
            if step < low:
                scores[model.lm.cfg.eos] = -float("inf")
            token = ras_sample(scores, replay, model.lm.cfg, gen)
            if token >= SPEECH_TOKENS:
                break
            replay.append(token)
            x = torch.cat([x, model.lm.speech_embedding.weight[token].reshape(1, 1, -1)], 1)
    assert replay == out


# -- assembled model ------------------------------------------------------------------------------


def test_instruct_returns_24khz_audio_of_960_samples_per_speech_token(model):
    prompt = _voice(2.0, 16000, 140.0)
    text, how = "Hello world, this is a small test.", "Speak happily."
    wave = model.instruct(text, how, prompt, 16000, seed=5)
    tokens = model.speech_token_pieces(text, how, seed=5)
    assert model.sample_rate == 24000
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all()
    assert wave.size == 480 * 2 * sum(len(t) for t in tokens)
    assert np.abs(wave).max() > 1e-3
    again = model.instruct(text, how, prompt, 16000, seed=5)
    np.testing.assert_array_equal(wave, again)


def test_different_instructions_change_the_speech(model):
    prompt = _voice(2.0, 16000, 140.0)
    text = "Hello world, this is a small test."
    a = model.speech_token_pieces(text, "Speak happily.", seed=1)
    b = model.speech_token_pieces(text, "Speak sadly, slowly and softly.", seed=1)
    assert a != b
    wa = model.instruct(text, "Speak happily.", prompt, 16000, seed=1)
    wb = model.instruct(text, "Speak sadly, slowly and softly.", prompt, 16000, seed=1)
    assert wa.shape != wb.shape or not np.allclose(wa, wb)


def test_instruct_refuses_empty_text_and_bad_prompts_clearly(model):
    prompt = _voice(2.0, 16000, 140.0)
    with pytest.raises(CosyVoice2Error, match="text: empty text"):
        model.instruct("   ", "Speak happily.", prompt, 16000)
    with pytest.raises(CosyVoice2Error, match="instruction: empty instruction"):
        model.instruct("Hello.", "", prompt, 16000)
    with pytest.raises(CosyVoice2Error, match="prompt wave: 31.00 s long"):
        model.instruct("Hello.", "Speak happily.", np.zeros(31 * 16000, np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        model.instruct("Hello.", "Speak happily.", np.full(16000, np.nan, np.float32), 16000)
    with pytest.raises(AudioError, match="mono"):
        model.instruct("Hello.", "Speak happily.", np.zeros((2, 16000), np.float32), 16000)


def test_long_text_is_split_at_sentence_ends_as_upstream_splits_it():
    def words(s: str) -> int:
        return len(s.split())

    sentence = " ".join(["word"] * 30) + "."
    text = " ".join([sentence] * 7) + ' He said "stop!" ok'
    pieces = split_text(text, words)
    assert "".join(pieces) == text + "."  # nothing lost, a final full stop added
    # a piece is cut once it has over 60 tokens and the next sentence would pass 80
    assert [words(p) for p in pieces] == [90, 90, 34]
    assert split_text(sentence + " Short one.", words) == [sentence + " Short one."]
    assert split_text("Hi. ...", words) == ["Hi. ..."] and split_text("?!", words) == []
    assert split_text("<|im_start|>a. b", words) == ["<|im_start|>a. b"]
