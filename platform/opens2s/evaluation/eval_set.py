"""Eval sets: spoken questions with, where known, the answer expected and the user's emotion.

Two sources (docs/eval.md):

- a corpus root: its held-out split (``held_out/``, split ``held_out``), plus up to
  ``eval.train_questions`` training questions (split ``train``: what the model memorised); the
  question is the first user turn, the reference the assistant's answer;
- a JSONL file of ``{"audio": PATH, "question"?: TEXT, "reference"?: TEXT, "emotion"?: NAME,
  "id"?: STR, "voice"?: NAME}`` per line (local copies of public sets, e.g. VoiceBench exported to
  WAV files); ``audio`` is relative to the file's folder unless absolute or a URI.

A line that cannot be used becomes an item with ``error`` set: the job reports it as failed with
that reason instead of dropping it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from opens2s import storage

SPLITS = ("held_out", "train", "set")


@dataclass
class EvalItem:
    """One spoken question to ask."""

    item_id: str
    audio: str
    """URI of the question audio (any rate; resampled to 16 kHz)."""
    split: str
    question: str | None = None
    """The question's words, when the set has them (else the judge reads its ASR transcript)."""
    reference: str | None = None
    """The expected answer, when the set has one."""
    emotion: str | None = None
    """The user's emotion, when the set has one."""
    voice: str | None = None
    """A voice this item asks for (else ``eval.voice``)."""
    error: str | None = None
    """Why the item cannot be asked (it is reported as failed with this reason)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_corpus(uri: str) -> bool:
    """Whether ``uri`` is a corpus root (it has a ``summary.json`` or a ``shards/`` folder)."""
    from opens2s.data import output

    return storage.exists(storage.join(uri, output.SUMMARY)) or bool(
        storage.list_prefix(storage.join(uri, output.SHARDS_DIR))
    )


def corpus_items(root: str, train_questions: int) -> list[EvalItem]:
    """The held-out split of a corpus and up to ``train_questions`` training questions."""
    from opens2s.data import output

    meta = output.manifest_rows(root)
    items = []
    for split, limit in (("held_out", None), ("train", train_questions)):
        if limit == 0:
            continue
        for ex in output.first_exchanges(root, split, limit=limit):
            row = meta.get(ex["id"], {})
            items.append(
                EvalItem(
                    item_id=f"{split}/{ex['id']}",
                    audio=ex["question_audio"],
                    split=split,
                    reference=ex["answer_text"],
                    emotion=row.get("emotion"),
                )
            )
    return items


def _str_field(line: dict[str, Any], key: str) -> str | None:
    value = line.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    return value.strip() or None


def read_jsonl_set(uri: str) -> list[EvalItem]:
    """Items of a JSONL eval set (see the module docstring); bad lines become failed items."""
    from opens2s.audio.tts import EMOTIONS

    if not storage.exists(uri):
        raise FileNotFoundError(f"eval set {uri} does not exist")
    base = uri.rsplit("/", 1)[0] if "/" in uri else "."
    items: list[EvalItem] = []
    for n, text in enumerate(storage.read_text(uri).splitlines(), start=1):
        if not text.strip():
            continue
        item_id = f"line{n}"
        try:
            line = json.loads(text)
            if not isinstance(line, dict):
                raise ValueError(f"a line must be a JSON object, got {type(line).__name__}")
            item_id = str(line.get("id") or item_id)
            audio = _str_field(line, "audio")
            if not audio:
                raise ValueError("no 'audio' (the path of the spoken question)")
            if not (audio.startswith("/") or "://" in audio):
                audio = storage.join(base, audio)
            emotion = _str_field(line, "emotion")
            if emotion is not None and emotion.lower() not in EMOTIONS:
                raise ValueError(f"unknown emotion {emotion!r}; known: {', '.join(EMOTIONS)}")
            items.append(
                EvalItem(
                    item_id=item_id,
                    audio=audio,
                    split="set",
                    question=_str_field(line, "question"),
                    reference=_str_field(line, "reference"),
                    emotion=emotion.lower() if emotion else None,
                    voice=_str_field(line, "voice"),
                )
            )
        except (ValueError, json.JSONDecodeError) as e:
            items.append(EvalItem(item_id, "", "set", error=f"{uri} line {n}: {e}"))
    if not items:
        raise ValueError(f"eval set {uri} holds no line")
    return items


def load_eval_set(
    spec: str, train_questions: int = 0, max_items: int | None = None
) -> list[EvalItem]:
    """The items of ``spec``: a ``.jsonl`` file or a corpus root. Raises ValueError naming the
    spec when it is neither, or when it yields no item."""
    if spec.endswith(".jsonl"):
        items = read_jsonl_set(spec)
    elif is_corpus(spec):
        items = corpus_items(spec, train_questions)
        if not items:
            raise ValueError(
                f"corpus {spec} has no held-out dialogue (data.output.held_out_fraction is 0) and "
                "eval.train_questions is 0: nothing to ask"
            )
    else:
        raise ValueError(
            f"eval set {spec!r} is neither a .jsonl file nor a corpus root (no summary.json or "
            "shards/ there)"
        )
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            item.error = item.error or f"duplicate id {item.item_id!r}"
            item.item_id = f"{item.item_id}#dup{len(seen)}"
        seen.add(item.item_id)
    return items[:max_items] if max_items else items
