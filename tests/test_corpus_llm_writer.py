"""The LLM script writer: prompt, JSON parsing and repair, retry, and quarantine of garbage from a
random-init tiny model (transformers backend on CPU, no download)."""

from __future__ import annotations

import json

import pytest
from opens2s.config.audio import AudioSection
from opens2s.config.data import ScenarioSettings, ValidationSettings, WriterSettings
from opens2s.data.scenarios import make_scenarios, resolve_scenario_settings
from opens2s.data.writer_llm import (
    ScriptFormatError,
    TransformersScriptWriter,
    accept_answer,
    check_engine_gpus,
    parse_script,
    script_messages,
    write_with_retries,
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


def test_a_sample_rejected_once_is_accepted_on_its_second_attempt() -> None:
    # The loop both backends share, over answers given per attempt (what an LM might write).
    samples = make_scenarios([2, 3, 4], SCEN, 4)  # none a minimal pair
    answers = {
        1: ["not json at all", json.dumps(GOOD), '{"turns": []}'],
        2: [json.dumps(GOOD), "still nothing"],
    }
    asked: list[tuple[int, list[int]]] = []

    def generate(todo, attempt):
        asked.append((attempt, [s.index for s in todo]))
        return answers[attempt]

    out = write_with_retries(
        samples,
        generate,
        writer_name="llm:vllm",
        max_attempts=2,
        validation=ValidationSettings(),
        scen=SCEN,
    )
    assert asked == [(1, [2, 3, 4]), (2, [2, 4])]  # only the rejected ones are asked again
    first, second, third = out
    assert first.ok and first.attempts == 2 and len(first.turns) == 2
    assert second.ok and second.attempts == 1
    assert third.dropped_stage == "writer" and third.attempts == 2
    assert third.dropped_reason.startswith("not JSON")
    assert "after 2 attempts; last answer: 'still nothing'" in third.dropped_reason
    assert {s.writer for s in out} == {"llm:vllm"}


def test_an_engine_error_is_a_failed_attempt_and_quarantines_after_the_last() -> None:
    samples = make_scenarios([4, 5], SCEN, 4)

    def generate(todo, attempt):
        if attempt == 1:
            raise RuntimeError("KV cache full")
        return [json.dumps(GOOD)] * len(todo)

    out = write_with_retries(
        samples,
        generate,
        writer_name="llm:vllm",
        max_attempts=2,
        validation=ValidationSettings(),
        scen=SCEN,
    )
    assert all(s.ok and s.attempts == 2 for s in out)
    out = write_with_retries(
        make_scenarios([6], SCEN, 4),
        lambda todo, a: 1 / 0,
        writer_name="llm:vllm",
        max_attempts=3,
        validation=ValidationSettings(),
        scen=SCEN,
    )
    assert out[0].dropped_stage == "writer" and out[0].attempts == 3
    assert out[0].dropped_reason.startswith("engine error: ZeroDivisionError")


def test_an_engine_wider_than_its_workers_gpus_is_refused_naming_the_settings() -> None:
    check_engine_gpus(2, {"tensor_parallel_size": 2}, "data.writer")
    check_engine_gpus(0, {"tensor_parallel_size": 4}, "data.writer")  # CPU: vLLM decides
    with pytest.raises(ValueError, match=r"data.writer.gpus_per_worker is 2: set .* to 4"):
        check_engine_gpus(
            2, {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, "data.writer"
        )
