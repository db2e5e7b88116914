"""Stage 2 (LLM writer): an instruct LLM writes each dialogue as JSON; malformed or invalid
answers are asked again, then quarantined with the reason and the start of the last answer.

Two backends share the prompt (:func:`script_messages`), the parser (:func:`parse_script`) and
the retry loop (:func:`write_with_retries`), each run inside the Ray actor that holds the model:

- ``transformers`` (CPU): :class:`TransformersScriptWriter`, batched sampling; the model is a
  local HF directory, or the random-init tiny LLM of ``opens2s.model`` when none is given (its
  output is garbage: it exercises retry and quarantine).
- ``vllm`` (GPU clusters): :class:`VLLMScriptWriter`, a ``vllm.LLM`` engine per actor, guided
  JSON (structured outputs with :data:`SCRIPT_SCHEMA`), ``workers`` actors of
  ``gpus_per_worker`` GPUs each.

Why the vLLM backend is not a ``ray.data.llm`` processor (Ray 2.60, vLLM 0.32, read in the
installed sources): a processor cannot feed a bad answer back to its engine, so retries were one
``build_processor`` per attempt, chained. Each processor builds its own stages, among them a vLLM
engine stage with its own pool of ``concurrency`` actors
(``ray/llm/_internal/batch/processor/vllm_engine_proc.py``), and Ray Data runs every operator of
a dataset at once, so ``max_attempts x workers`` engines were alive together (measured: 2 with
one worker and two attempts; with fewer GPUs than that the pools cannot all be scheduled). The
alternatives weighed: asking for ``n`` candidates per request cannot work there, as the engine
stage keeps only ``outputs[0]`` (``ray/llm/_internal/batch/stages/vllm_engine_stage.py``), and it
would pay ``n`` times the tokens of the (usual) first valid answer; a second pass over the failed
rows loads the model again per attempt and holds those rows back from rendering and shard
commits; ``ServeDeploymentProcessorConfig`` (``ray/data/llm.py``) lets chained processors share
the engines of a Ray Serve LLM deployment, but needs ``ray[llm]`` (it pulls the CUDA vLLM) and a
Serve application started and stopped around the corpus job. An engine per actor bounds the GPUs to what
``workers`` asks for, spends tokens only on the rows that need another answer and keeps the
dataset streaming; what it gives up is ray.data.llm's asynchronous engine stage, which keeps
requests of several batches queued (up to ``1.1 x max_num_seqs``) and tokenizes in separate CPU
actors: here an engine runs one batch (then its retries) at a time, so ``batch_size`` near the
engine's ``max_num_seqs`` keeps it busy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from opens2s.config.data import ScenarioSettings, ValidationSettings, WriterSettings
from opens2s.data.sample import Sample, Turn, batch_to_samples, samples_to_batch
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


def write_with_retries(
    samples: list[Sample],
    generate: Callable[[list[Sample], int], list[str]],
    *,
    writer_name: str,
    max_attempts: int,
    validation: ValidationSettings,
    scen: ScenarioSettings,
) -> list[Sample]:
    """Write scripts for the live samples: ``generate(samples, attempt)`` answers each, and the
    samples whose answer is not a valid script are asked again, up to ``max_attempts``; those
    still without one are quarantined with the last problem and answer. An exception from
    ``generate`` (an engine error) counts as a failed attempt of every sample it was asked for."""
    todo = [s for s in samples if s.ok]
    last: dict[str, tuple[str, str]] = {}
    for attempt in range(1, max_attempts + 1):
        if not todo:
            break
        try:
            answers = generate(todo, attempt)
        except Exception as e:  # the batch's samples retry; the job goes on
            answers, error = [""] * len(todo), f"engine error: {type(e).__name__}: {e}"
        else:
            error = ""
        retry = []
        for s, answer in zip(todo, answers, strict=True):
            s.attempts = attempt
            s.writer = writer_name
            problem = error or accept_answer(s, answer, validation, scen)
            if problem:
                last[s.id] = (problem, answer)
                retry.append(s)
        todo = retry
    for s in todo:
        _quarantine(s, s.attempts, *last[s.id])
    return samples


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
        return write_with_retries(
            samples,
            self.generate,
            writer_name="llm:transformers",
            max_attempts=self.writer.max_attempts,
            validation=self.validation,
            scen=self.scen,
        )


# ---------------------------------------------------------------------------------------------
# vLLM: one engine per Ray Data actor, the retry loop inside it


def check_engine_gpus(gpus_per_worker: float, engine_kwargs: dict[str, Any], section: str) -> None:
    """Refuse an engine that spans more GPUs than its actor holds: vLLM (its ``mp`` executor, the
    default outside a Ray placement group) runs a ``tensor_parallel_size x pipeline_parallel_size``
    engine on the GPUs the actor sees, which Ray sets to ``gpus_per_worker``."""
    width = int(engine_kwargs.get("tensor_parallel_size", 1)) * int(
        engine_kwargs.get("pipeline_parallel_size", 1)
    )
    if gpus_per_worker > 0 and width > gpus_per_worker:
        raise ValueError(
            f"{section}.vllm_engine_kwargs asks for an engine over {width} GPUs (tensor x "
            f"pipeline parallel) but {section}.gpus_per_worker is {gpus_per_worker}: set "
            f"gpus_per_worker to {width}"
        )


def vllm_sampling_seed(seed: int, index: int, attempt: int) -> int:
    """The vLLM sampling seed of one sample's attempt (a rerun writes the same answers)."""
    return (seed * 1_000_003 + index * 31 + attempt) % (2**31)


class VLLMScriptWriter:
    """The GPU backend: a ``vllm.LLM`` engine held by one Ray Data actor (``gpus_per_worker``
    GPUs), answering a batch at a time with guided JSON (:data:`SCRIPT_SCHEMA`); the samples
    whose answer is not a valid script are asked again in the same engine."""

    def __init__(
        self, writer: WriterSettings, scenarios: ScenarioSettings, validation: ValidationSettings
    ) -> None:
        from vllm import LLM

        self.writer, self.scen, self.validation = writer, scenarios, validation
        kwargs = {"seed": scenarios.seed, **writer.vllm_engine_kwargs}
        self.llm = LLM(model=writer.model_path, **kwargs)

    def generate(self, samples: list[Sample], attempt: int) -> list[str]:
        """One guided-JSON answer per sample (seeded by corpus seed, sample index, attempt)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        w = self.writer
        params = [
            SamplingParams(
                max_tokens=w.max_new_tokens,
                temperature=w.temperature,
                seed=vllm_sampling_seed(self.scen.seed, s.index, attempt),
                structured_outputs=StructuredOutputsParams(json=SCRIPT_SCHEMA),
            )
            for s in samples
        ]
        messages = [script_messages(s, self.scen.seed) for s in samples]
        outputs = self.llm.chat(messages, params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A Ray Data batch of sample rows in, the same rows with their scripts (or drops) out."""
        samples = write_with_retries(
            batch_to_samples(batch),
            self.generate,
            writer_name="llm:vllm",
            max_attempts=self.writer.max_attempts,
            validation=self.validation,
            scen=self.scen,
        )
        return samples_to_batch(samples)


def apply_vllm_writer(ds, spec, workers: int, worker_retries: int = 0):
    """Run the vLLM writer on a Dataset of sample rows: a pool of ``workers`` actors, each holding
    one engine for every attempt (see the module docstring for why not ray.data.llm). A batch
    whose actor dies is retried ``worker_retries`` times, as the other stages' batches are."""
    import ray.data

    writer: WriterSettings = spec.kwargs["writer"]
    if not writer.model_path:
        raise ValueError("data.writer.model_path is required for the vllm backend (a local dir)")
    check_engine_gpus(writer.gpus_per_worker, writer.vllm_engine_kwargs, "data.writer")
    return ds.map_batches(
        VLLMScriptWriter,
        fn_constructor_kwargs=dict(spec.kwargs),
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=writer.batch_size,
        batch_format="numpy",
        num_cpus=1,
        num_gpus=writer.gpus_per_worker,
        max_task_retries=worker_retries,
    )


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
