"""The empathy judge: an instruct LLM from a local path scores each reply with a fixed rubric.

The judge answers JSON (``RUBRIC_SCHEMA``); :func:`parse_judgement` reads it. An answer that does
not parse is asked again (sampled) up to ``eval.judge.max_attempts`` times; a reply whose answers
never parse is counted as ``unparseable`` with the start of the last answer, never dropped.

Backends: ``transformers`` (CPU, or one GPU) and ``vllm`` (GPU; the engine's structured outputs
constrain the answer to the schema).
"""

from __future__ import annotations

import json
import re
from typing import Any

from opens2s.config.eval import JudgeSettings

RUBRIC = (
    "You rate replies of an empathetic voice assistant. Read the user's words, the emotion the "
    "user showed, and the assistant's reply. Score two things from 1 (worst) to 5 (best):\n"
    "empathy: 1 = ignores or dismisses the feeling; 3 = names the feeling but generically; "
    "5 = acknowledges and validates the specific feeling and situation warmly.\n"
    "relevance: 1 = unrelated to what the user said; 3 = on topic but unhelpful; "
    "5 = responds to the situation and offers a fitting next step or question.\n"
    'Answer with JSON only: {"empathy": <1-5>, "relevance": <1-5>, "reason": "<one sentence>"}'
)
RUBRIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "empathy": {"type": "integer", "minimum": 1, "maximum": 5},
        "relevance": {"type": "integer", "minimum": 1, "maximum": 5},
        "reason": {"type": "string"},
    },
    "required": ["empathy", "relevance", "reason"],
}
SCORES = ("empathy", "relevance")


class JudgementFormatError(ValueError):
    """A judge answer that is not a usable rubric score; the message says why."""


def judge_messages(question: str, emotion: str | None, reply: str) -> list[dict[str, str]]:
    """The chat prompt asking the judge to score one reply."""
    user = (
        f"User's words: {question.strip() or '(not transcribed)'}\n"
        f"User's emotion: {emotion or 'unknown'}\n"
        f"Assistant's reply: {reply.strip() or '(empty)'}"
    )
    return [{"role": "system", "content": RUBRIC}, {"role": "user", "content": user}]


def parse_judgement(text: str) -> dict[str, Any]:
    """``{"empathy": int, "relevance": int, "reason": str}`` from a judge answer (code fences and
    text around the first JSON object are ignored). Raises :class:`JudgementFormatError`."""
    body = re.sub(r"```(?:json)?", "", text)
    start = body.find("{")
    if start < 0:
        raise JudgementFormatError("not JSON: no '{' in the answer")
    try:
        obj, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as e:
        raise JudgementFormatError(f"not JSON: {e.msg} at char {e.pos}") from e
    if not isinstance(obj, dict):
        raise JudgementFormatError("the JSON is not an object")
    out: dict[str, Any] = {}
    for key in SCORES:
        value = obj.get(key)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
            raise JudgementFormatError(f"{key!r} must be an integer 1-5, got {value!r}")
        out[key] = value
    reason = obj.get("reason", "")
    out["reason"] = reason if isinstance(reason, str) else json.dumps(reason)
    return out


class TransformersJudge:
    """A HF causal LM held by one process; greedy first answer, sampled retries."""

    def __init__(self, settings: JudgeSettings, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = settings.model_path
        self.settings = settings
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32 if device == "cpu" else torch.bfloat16
        ).to(device)
        self.model.eval()
        self.device = device
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        return "\n\n".join(m["content"] for m in messages) + "\n\nJSON: "

    def generate(self, prompts: list[list[dict[str, str]]], attempt: int) -> list[str]:
        """One answer per prompt: greedy on attempt 1, sampled (seeded by attempt) after."""
        import torch

        texts = [self._prompt(m) for m in prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        torch.manual_seed(attempt)
        sample = attempt > 1
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.settings.max_new_tokens,
                do_sample=sample,
                temperature=self.settings.temperature if sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        width = enc["input_ids"].shape[1]
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]


class VLLMJudge:
    """vLLM on a GPU; the answer is constrained to ``RUBRIC_SCHEMA`` by structured outputs."""

    def __init__(self, settings: JudgeSettings) -> None:
        from vllm import LLM

        self.settings = settings
        self.llm = LLM(model=settings.model_path, **dict(settings.vllm_engine_kwargs))

    def _params(self, attempt: int) -> Any:
        from vllm import SamplingParams

        kw: dict[str, Any] = {
            "max_tokens": self.settings.max_new_tokens,
            "temperature": 0.0 if attempt == 1 else self.settings.temperature,
            "seed": attempt,
        }
        try:  # vLLM >= 0.10.2
            from vllm.sampling_params import StructuredOutputsParams

            return SamplingParams(
                **kw, structured_outputs=StructuredOutputsParams(json=RUBRIC_SCHEMA)
            )
        except ImportError:  # older releases name it guided decoding
            from vllm.sampling_params import GuidedDecodingParams

            return SamplingParams(**kw, guided_decoding=GuidedDecodingParams(json=RUBRIC_SCHEMA))

    def generate(self, prompts: list[list[dict[str, str]]], attempt: int) -> list[str]:
        outs = self.llm.chat(prompts, self._params(attempt), use_tqdm=False)
        return [o.outputs[0].text for o in outs]


def build_judge(settings: JudgeSettings, device: str = "cpu") -> Any:
    """The judge backend ``settings`` names, from its local model path."""
    if not settings.model_path:
        raise ValueError("eval.judge.model_path is not set: no judge to build")
    if settings.backend == "vllm":
        return VLLMJudge(settings)
    return TransformersJudge(settings, device=device)


def judge_replies(
    judge: Any, items: list[dict[str, Any]], max_attempts: int
) -> list[dict[str, Any]]:
    """Score ``items`` (``question``, ``emotion``, ``reply``): each gets ``judge_status``
    (``scored`` | ``unparseable``), ``judge_attempts``, the scores or ``judge_error`` and the
    start of the last answer."""
    results: list[dict[str, Any]] = [{} for _ in items]
    todo = list(range(len(items)))
    for attempt in range(1, max_attempts + 1):
        if not todo:
            break
        prompts = [
            judge_messages(items[i]["question"], items[i]["emotion"], items[i]["reply"])
            for i in todo
        ]
        answers = judge.generate(prompts, attempt)
        retry = []
        for i, answer in zip(todo, answers, strict=True):
            try:
                scores = parse_judgement(answer)
            except JudgementFormatError as e:
                results[i] = {
                    "judge_status": "unparseable",
                    "judge_attempts": attempt,
                    "judge_error": str(e),
                    "judge_answer": re.sub(r"\s+", " ", answer)[:200],
                }
                retry.append(i)
                continue
            results[i] = {
                "judge_status": "scored",
                "judge_attempts": attempt,
                "judge_empathy": scores["empathy"],
                "judge_relevance": scores["relevance"],
                "judge_reason": scores["reason"][:300],
                "judge_answer": re.sub(r"\s+", " ", answer)[:200],
            }
        todo = retry
    return results
