"""Stage 2 (LLM writer): an instruct LLM writes each dialogue as JSON; malformed answers are
retried, then quarantined with the reason and the start of the last answer.

Two backends share the prompt (:func:`script_messages`) and the parser (:func:`parse_script`):

- ``transformers`` (CPU): :class:`TransformersScriptWriter`, one model per Ray actor, batched
  sampling; the model is a local HF directory, or the random-init tiny LLM of ``opens2s.model``
  when none is given (its output is garbage: it exercises retry and quarantine).
- ``vllm`` (GPU clusters): ``ray.data.llm.build_processor`` with a vLLM engine and guided JSON
  (structured outputs with :data:`SCRIPT_SCHEMA`); one processor per attempt, where rows already
  written pass through with a 1-token request.
"""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Any

from opens2s.config.data import ScenarioSettings, ValidationSettings, WriterSettings
from opens2s.data.sample import Sample, Turn, from_row, to_row
from opens2s.data.validation import normalise_text, problem_with_turns

STAGE = "writer"

SCRIPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "turns": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": ["user", "assistant"]},
                    "text": {"type": "string"},
                },
                "required": ["role", "text"],
            },
        }
    },
    "required": ["turns"],
}

SYSTEM_PROMPT = (
    "You write short spoken dialogues between a user and an empathetic voice assistant. "
    "The assistant acknowledges the user's feeling, validates it, offers one concrete helpful "
    "step and may ask a gentle question. Plain spoken English, no emojis, no lists, no stage "
    "directions. Answer with JSON only."
)


class ScriptFormatError(ValueError):
    """An LLM answer that is not a usable dialogue script; the message says why."""


def script_messages(sample: Sample, seed: int = 0) -> list[dict[str, str]]:
    """The chat prompt asking for ``sample``'s dialogue (``seed``: the corpus seed, which picks a
    minimal pair's shared user words)."""
    sc = sample.scenario
    strength = "strongly" if sc.intensity >= 0.75 else "mildly"
    situation = sc.situation.replace("_", " ")
    user = (
        f"Write a dialogue of exactly {sc.exchanges} exchanges ({2 * sc.exchanges} turns, "
        f"user first, alternating). The user is a {sc.persona} who feels {strength} {sc.emotion} "
        f"about a {situation} situation. Each turn 1 to 3 sentences. "
    )
    if sc.lexically_neutral:
        # A minimal pair: every member gets the same user words; only the voice and the reply
        # differ (the template writer composes the shared words, validation checks them).
        from opens2s.data.writer_template import neutral_user_turns

        given = json.dumps(neutral_user_turns(sample, seed))
        user += (
            "The user's words do not show the emotion: it is heard only in their voice. Use "
            f"exactly these user turns, word for word, in order: {given}. Write the assistant "
            f"turns for a user who sounds {strength} {sc.emotion}. "
        )
    else:
        user += "The user's words show their emotion. "
    user += (
        "Reply as JSON: "
        '{"turns": [{"role": "user", "text": "..."}, {"role": "assistant", "text": "..."}]}'
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _json_candidate(text: str) -> str:
    """The JSON object in an answer: code fences dropped, from the first ``{`` to its match."""
    text = re.sub(r"```(?:json)?", "", text).strip()
    start = text.find("{")
    if start < 0:
        raise ScriptFormatError("not JSON: no '{' in the answer")
    depth, in_str, escape = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    raise ScriptFormatError("not JSON: the object is never closed (answer cut off?)")


def parse_script(text: str) -> list[Turn]:
    """Turns from an LLM answer: ``{"turns": [{"role", "text"}...]}`` (a bare list is accepted,
    as are ``speaker``/``content`` keys; trailing commas are repaired). Raises
    :class:`ScriptFormatError` naming what is wrong."""
    raw = text.strip()
    if raw.startswith("["):
        candidate = raw
    else:
        candidate = _json_candidate(raw)
    candidate = re.sub(r",\s*([}\]])", r"\1", candidate)
    try:
        obj = json.loads(candidate)
    except json.JSONDecodeError as e:
        raise ScriptFormatError(f"not JSON: {e.msg} at char {e.pos}") from e
    turns = obj.get("turns") if isinstance(obj, dict) else obj
    if not isinstance(turns, list) or not turns:
        raise ScriptFormatError("JSON has no non-empty 'turns' list")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise ScriptFormatError(f"turn {i} is not an object")
        role = str(t.get("role", t.get("speaker", ""))).strip().lower()
        body = t.get("text", t.get("content"))
        if role not in ("user", "assistant") or not isinstance(body, str) or not body.strip():
            raise ScriptFormatError(f"turn {i} needs role user/assistant and a non-empty text")
        out.append(Turn(role, normalise_text(body)))
    return out


def accept_answer(
    sample: Sample, answer: str, validation: ValidationSettings, scen: ScenarioSettings
) -> str | None:
    """Set ``sample.turns`` from an answer when it is a valid script; else return the problem."""
    try:
        turns = parse_script(answer)
    except ScriptFormatError as e:
        return str(e)
    problem = problem_with_turns(
        turns, validation, scen, lexically_neutral=sample.scenario.lexically_neutral
    )
    if problem:
        return f"invalid script: {problem}"
    if sample.scenario.lexically_neutral:
        from opens2s.data.writer_template import neutral_user_turns

        given = [normalise_text(t) for t in neutral_user_turns(sample, scen.seed)]
        said = [t.text for t in turns if t.role == "user"]
        if said != given:
            return f"minimal pair: the user turns must be the pair's words {given}, got {said}"
    sample.turns = turns
    return None


def _quarantine(sample: Sample, attempts: int, problem: str, answer: str) -> None:
    snippet = re.sub(r"\s+", " ", answer)[:120]
    sample.drop(STAGE, f"{problem}; after {attempts} attempts; last answer: {snippet!r}")


class TransformersScriptWriter:
    """The CPU backend: a HF causal LM held by one Ray actor, sampling a batch at a time."""

    def __init__(
        self, writer: WriterSettings, scenarios: ScenarioSettings, validation: ValidationSettings
    ) -> None:
        import torch

        self.writer, self.scen, self.validation = writer, scenarios, validation
        if writer.model_path:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(writer.model_path, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(
                writer.model_path, local_files_only=True, torch_dtype=torch.float32
            )
        else:
            from opens2s.model import build_model, build_tokenizer

            self.tokenizer = build_tokenizer("tiny")
            self.model = build_model("tiny", seed=scenarios.seed).llm_model
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def generate(self, samples: list[Sample], attempt: int) -> list[str]:
        """One sampled answer per sample (seeded by corpus seed, first index and attempt)."""
        import torch

        prompts = [
            self.tokenizer.apply_chat_template(
                script_messages(s, self.scen.seed), add_generation_prompt=True, tokenize=False
            )
            for s in samples
        ]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(hash((self.scen.seed, samples[0].index, attempt)) % (2**31))
        w = self.writer
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=w.max_new_tokens,
                do_sample=w.temperature > 0,
                temperature=w.temperature if w.temperature > 0 else None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        width = enc["input_ids"].shape[1]
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        """Write scripts for live samples, retrying malformed answers up to max_attempts."""
        todo = [s for s in samples if s.ok]
        last: dict[str, tuple[str, str]] = {}
        for attempt in range(1, self.writer.max_attempts + 1):
            if not todo:
                break
            answers = self.generate(todo, attempt)
            retry = []
            for s, answer in zip(todo, answers, strict=True):
                s.attempts = attempt
                s.writer = "llm:transformers"
                problem = accept_answer(s, answer, self.validation, self.scen)
                if problem:
                    last[s.id] = (problem, answer)
                    retry.append(s)
            todo = retry
        for s in todo:
            _quarantine(s, s.attempts, *last[s.id])
        return samples


# ---------------------------------------------------------------------------------------------
# vLLM through ray.data.llm


def _vllm_request(
    row: dict[str, Any], *, writer: WriterSettings, attempt: int, seed: int
) -> dict[str, Any]:
    sample = from_row(row)
    pending = sample.ok and not sample.turns
    # Every row carries the same keys: Ray Data merges the rows' dicts into one Arrow struct
    # column, and a key missing from some rows reached vLLM as None there (a TypeError per row).
    params: dict[str, Any] = {
        "max_tokens": writer.max_new_tokens if pending else 1,
        "temperature": writer.temperature,
        "seed": (seed * 1_000_003 + sample.index * 31 + attempt) % (2**31),
        "structured_outputs": {"json": SCRIPT_SCHEMA},
    }
    return {**row, "messages": script_messages(sample, seed), "sampling_params": params}


def _vllm_answer(
    row: dict[str, Any],
    *,
    attempt: int,
    last_attempt: bool,
    validation: ValidationSettings,
    scen: ScenarioSettings,
) -> dict[str, Any]:
    sample = from_row(row)
    if sample.ok and not sample.turns:
        sample.attempts = attempt
        sample.writer = "llm:vllm"
        answer = row.get("generated_text") or ""
        error = row.get("__inference_error__")
        problem = f"engine error: {error}" if error else None
        problem = problem or accept_answer(sample, answer, validation, scen)
        if problem and last_attempt:
            _quarantine(sample, attempt, problem, answer)
    return to_row(sample)


def apply_vllm_writer(ds, spec, workers: int):
    """Run the vLLM writer on a Dataset of sample rows: ``max_attempts`` chained processors."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    writer: WriterSettings = spec.kwargs["writer"]
    scen: ScenarioSettings = spec.kwargs["scenarios"]
    validation: ValidationSettings = spec.kwargs["validation"]
    if not writer.model_path:
        raise ValueError("data.writer.model_path is required for the vllm backend (a local dir)")
    extra: dict[str, Any] = {}
    if writer.gpus_per_worker == 0:
        extra["placement_group_config"] = {"bundles": [{"CPU": 1}]}
    config = vLLMEngineProcessorConfig(
        model_source=writer.model_path,
        engine_kwargs=dict(writer.vllm_engine_kwargs),
        concurrency=workers,
        batch_size=writer.batch_size,
        should_continue_on_error=True,
        log_engine_metrics=False,
        **extra,
    )
    for attempt in range(1, writer.max_attempts + 1):
        processor = build_processor(
            config,
            preprocess=partial(_vllm_request, writer=writer, attempt=attempt, seed=scen.seed),
            postprocess=partial(
                _vllm_answer,
                attempt=attempt,
                last_attempt=attempt == writer.max_attempts,
                validation=validation,
                scen=scen,
            ),
        )
        ds = processor(ds)
    return ds


apply_vllm_writer.applies_to_dataset = True  # type: ignore[attr-defined]


def llm_writer_stage(
    writer: WriterSettings, scen: ScenarioSettings, validation: ValidationSettings
):
    """The writer StageSpec for ``data.writer.kind == "llm"`` and its backend."""
    from opens2s.data.pipeline import StageSpec

    kwargs = {"writer": writer, "scenarios": scen, "validation": validation}
    if writer.backend == "vllm":
        return StageSpec("writer", apply_vllm_writer, kwargs, batch_size=writer.batch_size)
    return StageSpec(
        "writer", TransformersScriptWriter, kwargs, batch_size=writer.batch_size, holds_model=True
    )
