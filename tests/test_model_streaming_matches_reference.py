"""StreamingDecoder equals the naive no-cache reference token for token (text and units), greedy
and sampled, and sessions decoded together in one batched step equal each decoded alone."""

from __future__ import annotations

import numpy as np
import pytest
from opens2s.model import build_model, build_tokenizer, streaming
from opens2s.model.reference_decode import reference_decode
from opens2s.model.streaming import Done, SamplingParams, StreamingDecoder, TextDelta, UnitChunk


@pytest.fixture(scope="module")
def decoder() -> StreamingDecoder:
    return StreamingDecoder(build_model("tiny", seed=3), build_tokenizer("tiny"))


def _wave(seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)


def _run_alone(decoder, wave, sampling):
    state = decoder.start(wave, sampling=sampling)
    events = []
    while not state.done:
        events += decoder.step([state])[0]
    return state, events


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingParams(max_text_tokens=12, max_units=40),
        SamplingParams(temperature=0.8, top_p=0.9, seed=7, max_text_tokens=9, max_units=50),
    ],
    ids=["greedy", "sampled"],
)
def test_streaming_equals_reference(decoder, sampling):
    wave = _wave(1, 1.5)
    state, events = _run_alone(decoder, wave, sampling)
    text, units = reference_decode(
        decoder.model,
        decoder.prompt_embeds(wave),
        decoder.speaker_embeds(None),
        decoder.end_tokens,
        sampling,
    )
    assert state.text_tokens == text
    assert [u for e in events if isinstance(e, UnitChunk) for u in e.units] == units
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed == decoder.tokenizer.decode(text, skip_special_tokens=True)
    assert isinstance(events[-1], Done) and sum(isinstance(e, Done) for e in events) == 1
    assert len(units) > 0


@pytest.mark.parametrize("temperature", [0.0, 0.9], ids=["greedy", "sampled"])
def test_batched_sessions_of_different_lengths_equal_each_alone(decoder, temperature):
    waves = [_wave(s, 1.0 + 1.3 * s) for s in range(3)]
    params = [
        SamplingParams(
            temperature=temperature, seed=s, max_text_tokens=6 + 4 * s, max_units=20 + 9 * s
        )
        for s in range(3)
    ]
    alone = [_run_alone(decoder, w, p) for w, p in zip(waves, params, strict=True)]
    states = [decoder.start(w, sampling=p) for w, p in zip(waves, params, strict=True)]
    assert len({s.llm_len for s in states}) == 3  # prompts of different lengths
    got = [[] for _ in states]
    while not all(s.done for s in states):
        for i, ev in enumerate(decoder.step(states)):
            got[i] += ev
    for (solo_state, solo_events), state, events in zip(alone, states, got, strict=True):
        assert state.text_tokens == solo_state.text_tokens
        assert events == solo_events


def test_prompt_is_prefilled_once_and_each_step_feeds_only_new_positions(decoder, monkeypatch):
    """Every forward the decoder runs is recorded (then run for real): one prompt pass, then one
    new LLM position per text token and at most one unit + one chunk of t states per TTS pass."""
    seen = {"llm": [], "tts": []}
    real = streaming.decode_step

    def recording(lm, x, caches, **kw):
        seen["llm" if lm is decoder.model.llm_model else "tts"].append(x.shape[1])
        return real(lm, x, caches, **kw)

    monkeypatch.setattr(streaming, "decode_step", recording)
    sampling = SamplingParams(max_text_tokens=10, max_units=60)
    state, events = _run_alone(decoder, _wave(2, 1.0), sampling)
    prompt = seen["llm"][0]
    assert prompt > 20 and all(n == 1 for n in seen["llm"][1:])
    assert len(seen["llm"]) == 1 + len(state.text_tokens) + (state.text_reason == "complete")
    assert seen["tts"][0] == decoder.text_span + 1  # speaker slot + first t states
    assert max(seen["tts"]) <= decoder.text_span + 1
    assert state.llm_len == sum(seen["llm"]) and state.tts_len == sum(seen["tts"])
