"""The LLM script writer: prompt, JSON parsing and repair, retry, and quarantine of garbage from a
random-init tiny model (transformers backend on CPU, no download)."""

from __future__ import annotations

import json

import pytest
from opens2s.config.audio import AudioSection
from opens2s.config.data import ScenarioSettings, ValidationSettings, WriterSettings
from opens2s.data.sample import from_row, to_row
from opens2s.data.scenarios import make_scenarios, resolve_scenario_settings
from opens2s.data.writer_llm import (
    ScriptFormatError,
    TransformersScriptWriter,
    _vllm_answer,
    _vllm_request,
    accept_answer,
    parse_script,
    script_messages,
)

SCEN = resolve_scenario_settings(
    ScenarioSettings(num_dialogues=8, min_exchanges=1, max_exchanges=1), audio=AudioSection()
)
GOOD = {
    "turns": [
        {"role": "user", "text": "I lost my job today and I feel awful about it."},
        {"role": "assistant", "text": "I am so sorry. That is a hard thing to go through."},
    ]
}


def test_prompt_names_the_scenario_and_asks_for_json() -> None:
    sample = make_scenarios([0], SCEN, 4)[0]
    system, user = script_messages(sample)
    assert system["role"] == "system" and "JSON" in system["content"]
    assert sample.scenario.emotion in user["content"] and "2 turns" in user["content"]


def test_parser_repairs_fences_and_trailing_commas_and_names_what_is_wrong() -> None:
    fenced = "Sure!\n```json\n" + json.dumps(GOOD)[:-2] + ",]}\n```"
    turns = parse_script(fenced)
    assert [t.role for t in turns] == ["user", "assistant"]
    bare = json.dumps([{"speaker": "User", "content": "hi there friend"}])
    assert parse_script(bare)[0].role == "user"
    for text, reason in [
        ("no json here", "no '{'"),
        ('{"turns": [{"role": "user", "text": "cut', "never closed"),
        ('{"turns": []}', "no non-empty"),
        ('{"turns": [{"role": "narrator", "text": "x"}]}', "role user/assistant"),
        ("{'turns': 1}", "not JSON"),
    ]:
        with pytest.raises(ScriptFormatError, match=reason):
            parse_script(text)


def test_a_parsed_script_must_also_pass_validation() -> None:
    # a dialogue whose words may carry its emotion (minimal-pair members must say given words)
    sample = next(s for s in make_scenarios(list(range(7)), SCEN, 4) if s.scenario.pair < 0)
    assert accept_answer(sample, json.dumps(GOOD), ValidationSettings(), SCEN) is None
    assert len(sample.turns) == 2
    two = {"turns": GOOD["turns"] * 2}
    problem = accept_answer(
        make_scenarios([1], SCEN, 4)[0], json.dumps(two), ValidationSettings(), SCEN
    )
    assert problem.startswith("invalid script: 2 exchanges")


def test_random_init_tiny_model_output_is_retried_then_quarantined_without_crash() -> None:
    writer = WriterSettings(kind="llm", max_new_tokens=12, max_attempts=2, temperature=1.0)
    stage = TransformersScriptWriter(writer, SCEN, ValidationSettings())
    samples = make_scenarios(list(range(3)), SCEN, 4)
    samples[2].drop("scenarios", "already out")
    out = stage(samples)
    assert [s.dropped_stage for s in out] == ["writer", "writer", "scenarios"]
    for s in out[:2]:
        assert s.attempts == 2 and s.writer == "llm:transformers"
        assert "after 2 attempts; last answer:" in s.dropped_reason
        assert s.dropped_reason.split(";")[0]  # the parse/validation problem comes first


def test_vllm_rows_carry_guided_json_and_parse_back_into_samples() -> None:
    writer = WriterSettings(kind="llm", backend="vllm", model_path="/models/x", max_attempts=2)
    sample = make_scenarios([5], SCEN, 4)[0]
    req = _vllm_request(to_row(sample), writer=writer, attempt=1, seed=0)
    assert req["sampling_params"]["structured_outputs"]["json"]["required"] == ["turns"]
    assert req["messages"][1]["role"] == "user"
    ok = _vllm_answer(
        {**req, "generated_text": json.dumps(GOOD)},
        attempt=1,
        last_attempt=False,
        validation=ValidationSettings(),
        scen=SCEN,
    )
    back = from_row(ok)
    assert back.ok and back.writer == "llm:vllm" and len(back.turns) == 2
    # A row already written asks for one token only on the next attempt and stays as it is.
    again = _vllm_request(ok, writer=writer, attempt=2, seed=0)
    assert again["sampling_params"]["max_tokens"] == 1
    # Every row carries the same keys (Ray Data merges the rows' dicts into one struct column).
    assert again["sampling_params"].keys() == req["sampling_params"].keys()
    bad = _vllm_answer(
        {**req, "generated_text": "garbage"},
        attempt=2,
        last_attempt=True,
        validation=ValidationSettings(),
        scen=SCEN,
    )
    assert from_row(bad).dropped_stage == "writer"
