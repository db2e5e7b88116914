"""The continuation corpus (speech understanding): ASR/SER audio + an LLM's continuation of its
transcript, as a Ray Data job with the dialogue corpus's shards, resume and quarantine.

As upstream OpenS2S's ``text_generation.py`` (and BLSP-Emo) do: the LLM sees the transcript
("Continue the following sentence in a coherent style: {text}"; with an emotion label: "... that
reflects a '{label}' emotion tone ..."), greedy; the record gives the model the *audio* after an
instruction without the transcript and the LLM's continuation as the answer, so it learns to
continue from speech what the LLM continued from text.

Stages, each a Ray Data map over rows: audio check (header, duration within the model's limits)
-> writer (``transcript``: the transcript itself; ``transformers``: a local LM in actors;
``vllm``: a ``vllm.LLM`` in actors) -> validation of the text + copying the audio into the
corpus. The driver commits a shard as soon as all of its utterances are back
(:func:`opens2s.data.output.commit_shard`).

Layout under the root (the dialogue corpus's, so ``train.corpus`` / the ``understand`` stage read
it with the same reader)::

    shards/shard-00000.jsonl       records: user [instruction text, audio], assistant [text]
    audio/shard-00000/<id>.<ext>   the utterances, copied (records point here, relative)
    parts/..., manifest.parquet, quarantine.jsonl, summary.json, build_config.json
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from opens2s import storage
from opens2s.config import PlatformConfig
from opens2s.config.continuation import ContinuationSection
from opens2s.config.data import ValidationSettings
from opens2s.data import output, summary
from opens2s.data.continuation_manifest import manifest_from_dialogue_corpus, read_asr_manifest
from opens2s.data.validation import normalise_text, problem_with_text

Log = Callable[[str], None]

SYSTEM_PROMPT = "You are a helpful assistant."
"""Upstream's system prompt for generating continuations."""
ASR_PROMPT = "Continue the following sentence in a coherent style: "
"""Upstream's ASR instruction: the LLM sees it + the transcript; the record holds it + audio."""
SER_PROMPT = (
    "Continue the following sentence that reflects a '{emotion}' emotion tone in a coherent style: "
)
SER_INSTRUCTION = (
    "Continue the following sentence based on the conveyed emotion tone in a coherent style: "
)
"""Upstream's SER prompt (LLM, with the label) and training instruction (record, without it)."""
TRANSCRIBE_INSTRUCTION = "Transcribe the following speech: "
"""The ``transcript`` backend's instruction: its target is the transcript itself."""

DIALOGUE_MANIFEST = "asr_manifest.jsonl"
"""The manifest made from the dialogue corpus when ``continuation.manifest`` is unset."""

COLUMNS = {
    "id": pa.string(),
    "index": pa.int64(),
    "shard": pa.int64(),
    "source": pa.string(),
    "source_id": pa.string(),
    "transcript": pa.string(),
    "emotion": pa.string(),
    "seconds": pa.float64(),
    "instruction": pa.string(),
    "target": pa.string(),
    "target_tokens": pa.int64(),
    "writer": pa.string(),
    "attempts": pa.int64(),
    "audio": pa.string(),
    "dropped_stage": pa.string(),
    "dropped_reason": pa.string(),
    "stage_seconds": pa.string(),
}
"""The columns of an utterance row in Ray Data (every stage keeps exactly these)."""

MANIFEST_SCHEMA = pa.schema(
    [
        (name, COLUMNS[name])
        for name in (
            "id",
            "shard",
            "source",
            "source_id",
            "emotion",
            "seconds",
            "writer",
            "transcript",
            "target",
            "target_tokens",
            "audio",
            "stage_seconds",
        )
    ]
)


def utterance_id(index: int, source: str, transcript: str) -> str:
    """Deterministic id of manifest row ``index`` (its audio and transcript in the hash)."""
    digest = hashlib.sha1(f"opens2s-continuation:{source}\n{transcript}".encode()).hexdigest()
    return f"c{index:08d}-{digest[:8]}"


def _drop(row: dict[str, Any], stage: str, reason: str) -> None:
    if not row["dropped_stage"]:
        row["dropped_stage"], row["dropped_reason"] = stage, reason


def _timed(stage: str, row: dict[str, Any], start: float) -> dict[str, Any]:
    timings = json.loads(row["stage_seconds"] or "{}")
    timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - start, 6)
    row["stage_seconds"] = json.dumps(timings)
    return row


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Only the utterance columns, with plain Python values."""
    out = {}
    for name, typ in COLUMNS.items():
        value = row.get(name)
        if pa.types.is_integer(typ):
            out[name] = int(value) if value is not None else 0
        elif pa.types.is_floating(typ):
            out[name] = float(value) if value is not None else 0.0
        else:
            out[name] = "" if value is None else str(value)
    return out


def generation_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The chat prompt asking the LLM to continue ``row``'s transcript (upstream's wording)."""
    if row["emotion"]:
        prompt = SER_PROMPT.format(emotion=row["emotion"]) + row["transcript"]
    else:
        prompt = ASR_PROMPT + row["transcript"]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]


def training_instruction(row: dict[str, Any], backend: str) -> str:
    """The instruction text the record puts before the audio."""
    if backend == "transcript":
        return TRANSCRIBE_INSTRUCTION
    return SER_INSTRUCTION if row["emotion"] else ASR_PROMPT


# ---------------------------------------------------------------------------------------------
# Stages (each a function of one row, or a class called on a batch of rows)


def check_audio(
    row: dict[str, Any], *, min_seconds: float, max_seconds: float, backend: str
) -> dict[str, Any]:
    """Read the utterance's audio (header checks first) and quarantine it when it cannot be read
    or lasts outside ``[min_seconds, max_seconds]`` (the limits training applies)."""
    from opens2s.audio.io import AudioError, load_audio

    start = time.perf_counter()
    row = _clean(row)
    if row["dropped_stage"]:
        return row
    try:
        src = row["source"]
        data = storage.read_bytes(src) if storage.is_s3(src) else src
        wave = load_audio(data, 16000, max_seconds=max_seconds)
        seconds = wave.size / 16000
        if seconds < min_seconds:
            _drop(row, "audio", f"too short: {src} lasts {seconds:.2f} s, need {min_seconds} s")
        row["seconds"] = round(seconds, 3)
    except AudioError as e:
        _drop(row, "audio", f"unusable audio: {row['source']}: {e.problem}")
    except Exception as e:  # storage errors: the row is quarantined, the job goes on
        _drop(row, "audio", f"unreadable audio: {row['source']}: {type(e).__name__}: {e}")
    row["instruction"] = training_instruction(row, backend)
    return _timed("audio", row, start)


def transcript_writer(row: dict[str, Any]) -> dict[str, Any]:
    """The offline backend: the target is the transcript (no LLM; see TRANSCRIBE_INSTRUCTION)."""
    row = _clean(row)
    if not row["dropped_stage"]:
        row["target"], row["writer"] = row["transcript"], "transcript"
    return row


def _rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    n = len(batch["id"])
    return [{k: batch[k][i] for k in batch} for i in range(n)]


def _batch(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in COLUMNS}


def sampling_temperature(settings: ContinuationSection, attempt: int) -> float:
    """The first attempt samples at ``temperature`` (greedy by default, as upstream); a retry at
    least at ``retry_temperature``, since a greedy retry would repeat the rejected answer."""
    if attempt == 1:
        return settings.temperature
    return max(settings.temperature, settings.retry_temperature)


def write_continuations(
    rows: list[dict[str, Any]],
    generate: Callable[[list[dict[str, Any]], int], list[tuple[str, int]]],
    *,
    settings: ContinuationSection,
    writer_name: str,
) -> list[dict[str, Any]]:
    """Write the live rows' targets: ``generate(rows, attempt)`` answers each with (text, token
    count); a row whose answer fails the validation is asked again up to ``max_attempts``, then
    quarantined (stage ``writer``) with the last problem and answer. An exception from
    ``generate`` (an engine error) is a failed attempt of every row it was asked for."""
    start = time.perf_counter()
    todo = [r for r in rows if not r["dropped_stage"]]
    live = list(todo)
    last: dict[str, tuple[str, str]] = {}
    for attempt in range(1, settings.max_attempts + 1):
        if not todo:
            break
        try:
            answers = generate(todo, attempt)
        except Exception as e:  # the batch's rows retry; the job goes on
            answers, error = [("", 0)] * len(todo), f"engine error: {type(e).__name__}: {e}"
        else:
            error = ""
        retry = []
        for r, (text, n_tokens) in zip(todo, answers, strict=True):
            r["writer"], r["attempts"] = writer_name, attempt
            problem = error or problem_with_text(
                normalise_text(text), settings.validation, speakable=False
            )
            if problem:
                last[r["id"]] = (problem if error else f"text {problem}", text)
                retry.append(r)
            else:
                r["target"], r["target_tokens"] = text, n_tokens
        todo = retry
    for r in todo:
        problem, text = last[r["id"]]
        snippet = re.sub(r"\s+", " ", text)[:120]
        _drop(
            r,
            "writer",
            f"{problem} ({r['writer']}); after {r['attempts']} attempts; last answer: {snippet!r}",
        )
    share = time.perf_counter() - start
    for r in live:
        _timed("writer", r, time.perf_counter() - share / len(live))
    return rows


class TransformersContinuationWriter:
    """The CPU backend: a local HF causal LM held by one Ray actor, a batch of prompts at a time,
    bad answers asked again (:func:`write_continuations`)."""

    def __init__(self, settings: ContinuationSection, seed: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings, self.seed = settings, seed
        path = settings.model_path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        ).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def generate(self, rows: list[dict[str, Any]], attempt: int) -> list[tuple[str, int]]:
        """One answer per row (seeded by the model seed, the first row's index and attempt)."""
        import torch

        prompts = [
            self.tokenizer.apply_chat_template(
                generation_messages(r),
                add_generation_prompt=True,
                tokenize=False,
                enable_thinking=False,
            )
            for r in rows
        ]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        temperature = sampling_temperature(self.settings, attempt)
        torch.manual_seed((self.seed * 1_000_003 + int(rows[0]["index"]) * 31 + attempt) % (2**31))
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.settings.max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        width = enc["input_ids"].shape[1]
        stop = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id}
        answers = []
        for ids in out[:, width:].tolist():
            n = next((i for i, t in enumerate(ids) if t in stop), len(ids))
            answers.append((self.tokenizer.decode(ids[:n], skip_special_tokens=True), n))
        return answers

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = [_clean(r) for r in _rows(batch)]
        write_continuations(
            rows, self.generate, settings=self.settings, writer_name="llm:transformers"
        )
        return _batch(rows)


class VLLMContinuationWriter:
    """The vLLM backend: a ``vllm.LLM`` engine held by one Ray Data actor (``gpus_per_worker``
    GPUs), a batch of prompts at a time, bad answers asked again in the same engine (why not
    ``ray.data.llm``: see :mod:`opens2s.data.writer_llm`)."""

    def __init__(self, settings: ContinuationSection, seed: int = 0) -> None:
        from vllm import LLM

        self.settings, self.seed = settings, seed
        kwargs = {"seed": seed, **settings.vllm_engine_kwargs}
        self.llm = LLM(model=settings.model_path, **kwargs)

    def generate(self, rows: list[dict[str, Any]], attempt: int) -> list[tuple[str, int]]:
        """One answer per row (seeded by the model seed, the row's index and the attempt)."""
        from vllm import SamplingParams

        params = [
            SamplingParams(
                max_tokens=self.settings.max_new_tokens,
                temperature=sampling_temperature(self.settings, attempt),
                seed=(self.seed * 1_000_003 + int(r["index"]) * 31 + attempt) % (2**31),
            )
            for r in rows
        ]
        outputs = self.llm.chat(
            [generation_messages(r) for r in rows],
            params,
            use_tqdm=False,
            chat_template_kwargs={"enable_thinking": False},
        )
        return [(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outputs]

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = [_clean(r) for r in _rows(batch)]
        write_continuations(rows, self.generate, settings=self.settings, writer_name="llm:vllm")
        return _batch(rows)


def finish(row: dict[str, Any], *, root: str, validation: ValidationSettings) -> dict[str, Any]:
    """Check the written text (word count, English; a cut-off continuation is kept as upstream
    keeps it) and copy the audio under ``<root>/audio/shard-N/`` for the record to point at."""
    start = time.perf_counter()
    row = _clean(row)
    if row["dropped_stage"]:
        return row
    text = normalise_text(row["target"])
    problem = problem_with_text(text, validation, speakable=False)
    if problem:
        snippet = re.sub(r"\s+", " ", row["target"])[:120]
        _drop(row, "validation", f"text {problem} ({row['writer']}): {snippet!r}")
        return _timed("output", row, start)
    row["target"] = text
    suffix = Path(row["source"].rsplit("/", 1)[-1]).suffix.lower() or ".wav"
    rel = f"{output.AUDIO_DIR}/{output.shard_name(row['shard'])}/{row['id']}{suffix}"
    try:
        storage.write_bytes(storage.join(root, *rel.split("/")), storage.read_bytes(row["source"]))
        row["audio"] = rel
    except Exception as e:
        _drop(row, "output", f"copying audio failed: {type(e).__name__}: {e}")
    return _timed("output", row, start)


def record_for(row: dict[str, Any]) -> dict[str, Any]:
    """The OpenS2S record of a kept utterance (upstream's layout: the user turn holds the
    instruction text then the audio; the assistant turn the continuation, with no units)."""

    def item(text: str = "", audio: str = "") -> dict[str, str]:
        return {"text": text, "audio": audio, "speech_units": "", "spk_emb": ""}

    return {
        "id": row["id"],
        "messages": [
            {"role": "user", "content": [item(text=row["instruction"]), item(audio=row["audio"])]},
            {"role": "assistant", "content": [item(text=row["target"])]},
        ],
    }


def quarantine_row(row: dict[str, Any]) -> dict[str, Any]:
    """One quarantine line: which utterance, which stage refused it and why."""
    return {
        "id": row["id"],
        "shard": row["shard"],
        "source": row["source"],
        "stage": row["dropped_stage"],
        "reason": row["dropped_reason"],
        "emotion": row["emotion"],
        "writer": row["writer"],
        "attempts": row["attempts"],
        "stage_seconds": json.loads(row["stage_seconds"] or "{}"),
    }


def apply_stages(ds, cfg: PlatformConfig, root: str):
    """Compose the stages on a Dataset of utterance rows (the job is only this composition)."""
    import ray.data

    c = cfg.continuation
    light = {"num_cpus": c.cpus_per_worker}
    ds = ds.map(
        check_audio,
        fn_kwargs={
            "min_seconds": cfg.model.min_audio_seconds,
            "max_seconds": cfg.model.max_audio_seconds,
            "backend": c.backend,
        },
        **light,
    )
    if c.backend == "transcript":
        ds = ds.map(transcript_writer, **light)
    else:
        if not c.model_path:
            raise ValueError(
                f"continuation.model_path is required for the {c.backend} backend: a local "
                "instruct LM directory (a random-init LM writes noise; use backend transcript "
                "for an offline run)"
            )
        # One LM per actor, ``workers`` actors, every attempt in the same LM.
        if c.backend == "transformers":
            writer, resources = TransformersContinuationWriter, {"num_cpus": c.cpus_per_worker}
        else:
            from opens2s.data.writer_llm import check_engine_gpus

            check_engine_gpus(c.gpus_per_worker, c.vllm_engine_kwargs, "continuation")
            writer, resources = (
                VLLMContinuationWriter,
                {"num_cpus": 1, "num_gpus": c.gpus_per_worker},
            )
        ds = ds.map_batches(
            writer,
            fn_constructor_kwargs={"settings": c, "seed": cfg.model.seed},
            compute=ray.data.ActorPoolStrategy(size=c.workers),
            batch_size=c.batch_size,
            batch_format="numpy",
            **resources,
        )
    return ds.map(finish, fn_kwargs={"root": root, "validation": c.validation}, **light)


# ---------------------------------------------------------------------------------------------
# The job


def _content_settings(cfg: PlatformConfig) -> dict[str, Any]:
    """What decides a continuation corpus's records (a resumed run must not change it)."""
    c = cfg.continuation
    return {
        **c.model_dump(
            include={
                "manifest",
                "backend",
                "model_path",
                "max_new_tokens",
                "temperature",
                "max_attempts",
                "retry_temperature",
            }
        ),
        "shard_size": c.shard_size,
        "validation": c.validation.model_dump(),
        "audio_seconds": [cfg.model.min_audio_seconds, cfg.model.max_audio_seconds],
    }


def check_build_config(root: str, cfg: PlatformConfig, manifest: str) -> None:
    """Record the content settings at the first run; refuse to resume with other ones."""
    uri = storage.join(root, output.BUILD_CONFIG)
    current = json.loads(json.dumps({**_content_settings(cfg), "manifest": manifest}))
    if storage.exists(uri) and output.completed_shards(root):
        previous = json.loads(storage.read_text(uri))
        changed = sorted(
            k for k in set(previous) | set(current) if previous.get(k) != current.get(k)
        )
        if changed:
            raise ValueError(
                f"{root} was built with other settings ({', '.join(changed)} differ); resume "
                "with the same config or choose a new continuation.output_uri"
            )
    storage.write_text(uri, json.dumps(current, indent=2, sort_keys=True) + "\n")


def planned_rows(manifest: str, shard_size: int) -> list[dict[str, Any]]:
    """One row per manifest entry, in manifest order, with its id and shard; a manifest row that
    is unusable is already quarantined (stage ``manifest``)."""
    rows = []
    for index, e in enumerate(read_asr_manifest(manifest)):
        row = _clean(
            {
                "id": utterance_id(index, e["audio"], e["transcript"]),
                "index": index,
                "shard": index // shard_size,
                "source": e["audio"],
                "source_id": e["source_id"],
                "transcript": e["transcript"],
                "emotion": e["emotion"],
                "stage_seconds": "{}",
            }
        )
        if e["problem"]:
            _drop(row, "manifest", e["problem"])
        rows.append(row)
    return rows


def commit(root: str, shard: int, rows: list[dict[str, Any]]) -> None:
    """Commit one shard's records, manifest part and quarantine part."""
    rows = sorted(rows, key=lambda r: r["index"])
    kept = [r for r in rows if not r["dropped_stage"]]
    output.commit_shard(
        root,
        shard,
        [record_for(r) for r in kept],
        [{k: r[k] for k in MANIFEST_SCHEMA.names} for r in kept],
        [quarantine_row(r) for r in rows if r["dropped_stage"]],
        schema=MANIFEST_SCHEMA,
    )


def commit_shards(
    rows: Iterable[dict[str, Any]],
    root: str,
    expected: dict[int, list[dict[str, Any]]],
    log: Log,
) -> None:
    """Gather finished rows per shard, commit each shard when all of its rows are back; rows
    missing at the end (their Ray Data block failed) are quarantined as lost."""
    start = time.perf_counter()
    got: dict[int, dict[str, dict[str, Any]]] = {s: {} for s in expected}
    for row in rows:
        shard = got.get(int(row["shard"]))
        if shard is None:
            continue
        shard[row["id"]] = _clean(row)
        if len(shard) == len(expected[int(row["shard"])]):
            commit(root, int(row["shard"]), list(shard.values()))
            kept = sum(not r["dropped_stage"] for r in shard.values())
            log(
                f"[continuation] shard {int(row['shard']):05d} committed: {kept} kept, "
                f"{len(shard) - kept} quarantined ({time.perf_counter() - start:.1f} s)"
            )
            del got[int(row["shard"])]
    for shard_no, have in sorted(got.items()):
        for planned in expected[shard_no]:
            if planned["id"] not in have:
                lost = dict(planned)
                _drop(lost, "worker", "lost: the Ray worker processing it failed (crash or OOM)")
                have[planned["id"]] = lost
        commit(root, shard_no, list(have.values()))
        log(f"[continuation] shard {shard_no:05d} committed with lost utterances quarantined")


def summarize(
    root: str, manifest: pa.Table, quarantine: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """The continuation corpus's summary: counts, hours, per emotion and writer, drops."""
    from collections import Counter

    rows = manifest.to_pylist()
    return {
        "output": root,
        "records_written": len(rows),
        "quarantined": len(quarantine),
        "shards": len(output.completed_shards(root)),
        "hours": round(sum(r["seconds"] for r in rows) / 3600, 4),
        "per_emotion": dict(sorted(Counter(r["emotion"] or "-" for r in rows).items())),
        "per_writer": dict(sorted(Counter(r["writer"] for r in rows).items())),
        "drops_by_reason": dict(
            Counter(summary.reason_key(q["stage"], q["reason"]) for q in quarantine).most_common()
        ),
        **extra,
    }


class EmptyContinuationError(RuntimeError):
    """Every utterance was quarantined: nothing to train on."""


def build_continuation(
    cfg: PlatformConfig, *, manifest: str | None = None, log: Log = print
) -> dict[str, Any]:
    """Build (or finish building) the continuation corpus of ``manifest`` (default
    ``continuation.manifest``, else one made from the dialogue corpus's user turns, kept as
    ``<root>/asr_manifest.jsonl``) at ``cfg.continuation_uri()``; returns its summary."""
    import ray
    import ray.data

    start = time.perf_counter()
    c = cfg.continuation
    manifest = manifest or c.manifest
    root = cfg.continuation_uri()
    if not manifest:
        # No external data: the dialogue corpus's user turns (audio + script text + emotion).
        manifest = storage.join(root, DIALOGUE_MANIFEST)
        if not storage.exists(manifest):
            n = manifest_from_dialogue_corpus(cfg.corpus_uri(), manifest)
            log(f"[continuation] {n} user turns of {cfg.corpus_uri()} -> {manifest}")
    check_build_config(root, cfg, manifest)
    rows = planned_rows(manifest, c.shard_size)
    n_shards = math.ceil(len(rows) / c.shard_size)
    done = output.completed_shards(root) & set(range(n_shards))
    expected: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["shard"] not in done:
            expected.setdefault(row["shard"], []).append(row)
    log(
        f"[continuation] {manifest} -> {root}: {len(rows)} utterances in {n_shards} shards; "
        f"{len(done)} complete, {len(expected)} to build ({c.backend} backend)"
    )
    if expected:
        if not ray.is_initialized():
            ray.init()
        ray.data.DataContext.get_current().max_errored_blocks = cfg.data.max_failed_blocks
        pending = [r for shard in expected.values() for r in shard]
        ds = ray.data.from_items(
            pending, override_num_blocks=max(1, math.ceil(len(pending) / c.batch_size))
        )
        ds = apply_stages(ds, cfg, root)
        commit_shards(ds.iter_rows(), root, expected, log)
    table, quarantine = output.merge_parts(root, MANIFEST_SCHEMA)
    result = summarize(
        root,
        table,
        quarantine,
        utterances=len(rows),
        backend=c.backend,
        elapsed_seconds=round(time.perf_counter() - start, 2),
    )
    summary.write_summary(root, result)
    log(
        f"[continuation] {root}: {result['records_written']} records, "
        f"{result['quarantined']} quarantined, {result['hours']:.4f} h, "
        f"drops {result['drops_by_reason']}, {result['elapsed_seconds']:.1f} s"
    )
    if rows and not result["records_written"]:
        raise EmptyContinuationError(
            f"the continuation corpus at {root} holds no record: all {len(quarantine)} "
            f"utterances were quarantined (by reason: {result['drops_by_reason']}); see "
            f"{storage.join(root, output.QUARANTINE)}"
        )
    return result
