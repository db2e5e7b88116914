"""The continuation corpus (speech understanding) on the shared local Ray: an ASR/SER manifest ->
records the training reader encodes; bad rows quarantined with reasons; resume; the importer;
the tiny pipeline's manifest from dialogue user turns; the transformers writer on a tiny LM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from opens2s import storage
from opens2s.audio.io import write_audio
from opens2s.config import load_config
from opens2s.data import output
from opens2s.data.continuation import (
    ASR_PROMPT,
    SER_INSTRUCTION,
    TRANSCRIBE_INSTRUCTION,
    TransformersContinuationWriter,
    build_continuation,
    generation_messages,
    planned_rows,
    write_continuations,
)
from opens2s.data.continuation_manifest import (
    ManifestError,
    import_asr_dir,
    manifest_from_dialogue_corpus,
    read_asr_manifest,
)

SR = 16000
SENTENCES = [
    "I went to the market today and bought some fresh bread for my family.",
    "My sister called me this morning because she was worried about her exam.",
    "The train was late again and I missed the start of the meeting.",
    "We are planning a small trip to the mountains at the end of the month.",
]


def _wave(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (
        0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    ).astype(np.float32)


def _asr_folder(tmp: Path) -> Path:
    """Audio + a JSONL manifest with 3 usable rows and 5 bad ones (each bad in its own way)."""
    d = tmp / "asr"
    d.mkdir()
    write_audio(d / "a.wav", _wave(1.2, 1), SR)
    write_audio(d / "b.flac", _wave(1.0, 2), SR)
    write_audio(d / "c.wav", _wave(0.9, 3), SR)
    write_audio(d / "short.wav", _wave(0.2, 4), SR)
    (d / "junk.wav").write_text("this is not audio")
    lines = [
        json.dumps({"audio": "a.wav", "text": SENTENCES[0]}),
        json.dumps({"audio": "b.flac", "text": SENTENCES[1], "emotion": "Sad"}),
        json.dumps({"audio": str(d / "c.wav"), "transcript": SENTENCES[2], "label": "happy"}),
        json.dumps({"audio": "missing.wav", "text": SENTENCES[3]}),
        json.dumps({"audio": "short.wav", "text": SENTENCES[3]}),
        json.dumps({"audio": "junk.wav", "text": SENTENCES[3]}),
        '{"audio": "a.wav", "text": ',
        json.dumps({"audio": "a.wav"}),
    ]
    (d / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return d / "manifest.jsonl"


def _cfg(run_dir: Path, **continuation):
    overrides = {"run_dir": str(run_dir)}
    overrides.update({f"continuation.{k}": v for k, v in continuation.items()})
    return load_config(None, overrides)


def _records(root: str) -> dict[str, dict]:
    return {
        json.loads(line)["id"]: json.loads(line)
        for uri in output.record_files(root)
        for line in storage.read_text(uri).splitlines()
        if line.strip()
    }


def test_manifest_rows_keep_their_place_and_name_their_problem(tmp_path: Path) -> None:
    manifest = _asr_folder(tmp_path)
    rows = read_asr_manifest(str(manifest))
    assert len(rows) == 8
    assert [bool(r["problem"]) for r in rows] == [False] * 6 + [True, True]
    assert "line 7: not JSON" in rows[6]["problem"]
    assert "line 8: no 'text'" in rows[7]["problem"]
    assert rows[0]["audio"] == str(manifest.parent / "a.wav")
    assert (rows[1]["emotion"], rows[2]["emotion"]) == ("sad", "happy")
    with pytest.raises(ManifestError, match="does not exist"):
        read_asr_manifest(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="holds no utterance"):
        read_asr_manifest(str(tmp_path / "empty.jsonl"))


def test_transcript_backend_writes_records_the_training_reader_encodes(
    ray_local, tmp_path: Path
) -> None:
    from opens2s.model import build_model, build_tokenizer
    from opens2s.model.records import RecordEncoder, parse_record
    from opens2s.model.tokenizer import AUDIO_TOKEN
    from opens2s.train.data import shard_paths

    manifest = _asr_folder(tmp_path)
    cfg = _cfg(tmp_path / "run", manifest=str(manifest), shard_size=3)
    logs: list[str] = []
    result = build_continuation(cfg, log=logs.append)
    root = cfg.continuation_uri()
    assert root == storage.join(str(tmp_path / "run"), "continuation")
    assert (result["records_written"], result["quarantined"]) == (3, 5)
    assert result["shards"] == 3 and len(shard_paths(root)) == 3

    quarantine = [json.loads(x) for x in storage.read_text(f"{root}/quarantine.jsonl").splitlines()]
    reasons = {Path(q["source"]).name or q["reason"]: (q["stage"], q["reason"]) for q in quarantine}
    assert reasons["missing.wav"][0] == "audio" and "does not exist" in reasons["missing.wav"][1]
    assert reasons["short.wav"][0] == "audio" and "need 0.5 s" in reasons["short.wav"][1]
    assert reasons["junk.wav"][0] == "audio" and "not a readable audio" in reasons["junk.wav"][1]
    assert sorted(q["stage"] for q in quarantine).count("manifest") == 2

    records = _records(root)
    tokenizer, config = build_tokenizer("tiny"), build_model("tiny").config
    encoder = RecordEncoder(tokenizer, config, root)
    for rid, rec in records.items():
        user, assistant = rec["messages"]
        assert user["content"][0]["text"] == TRANSCRIBE_INSTRUCTION
        assert user["content"][1]["audio"].startswith("audio/shard-0000")
        assert assistant["content"][0]["text"] in SENTENCES
        sample = encoder.encode(parse_record(rec))
        assert sample["speech_values"].shape[0] == 1  # the copied audio was read
        assert (sample["input_ids"] == tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)).sum() == 1
        learned = tokenizer.decode([t for t in sample["labels"] if t >= 0])
        assert assistant["content"][0]["text"] in learned, rid
        assert (sample["token_types"] == 0).all()  # text only: no speech units to learn

    # Resume: nothing is rebuilt; a deleted shard is rebuilt identically.
    before = {u: storage.read_text(u) for u in output.record_files(root)}
    logs.clear()
    build_continuation(cfg, log=logs.append)
    assert "3 complete, 0 to build" in logs[0]
    Path(output.shard_uri(root, 1)).unlink()
    build_continuation(cfg, log=logs.append)
    assert {u: storage.read_text(u) for u in output.record_files(root)} == before
    # Other content settings refuse to resume into the same root.
    with pytest.raises(ValueError, match="max_new_tokens"):
        build_continuation(
            _cfg(tmp_path / "run", manifest=str(manifest), shard_size=3, max_new_tokens=7)
        )


def test_importer_reads_sidecars_and_librispeech_lists_and_reports_bad_files(
    tmp_path: Path,
) -> None:
    from opens2s.cli import app
    from typer.testing import CliRunner

    d = tmp_path / "speech"
    (d / "19" / "198").mkdir(parents=True)
    write_audio(d / "one.wav", _wave(1.0, 1), SR)
    (d / "one.txt").write_text(SENTENCES[0] + "\n")
    write_audio(d / "19" / "198" / "19-198-0001.flac", _wave(1.0, 2), SR)
    write_audio(d / "19" / "198" / "19-198-0002.flac", _wave(1.0, 3), SR)
    (d / "19" / "198" / "19-198.trans.txt").write_text(
        "19-198-0001 NORTHANGER ABBEY WAS WRITTEN\n19-198-0002 BY JANE AUSTEN\n"
        "19-198-0003 A LINE WITHOUT AUDIO\n"
    )
    write_audio(d / "untranscribed.wav", _wave(1.0, 4), SR)
    (d / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    (d / "broken.txt").write_text("a transcript of a broken file")
    rows, problems = import_asr_dir(d)
    assert {r["id"]: r["text"] for r in rows} == {
        "19/198/19-198-0001": "NORTHANGER ABBEY WAS WRITTEN",
        "19/198/19-198-0002": "BY JANE AUSTEN",
        "one": SENTENCES[0],
    }
    why = {Path(p["path"]).name: p["reason"] for p in problems}
    assert set(why) == {"untranscribed.wav", "broken.wav", "19-198-0003"}
    assert "no transcript" in why["untranscribed.wav"]
    assert "unusable audio" in why["broken.wav"]
    assert "without an audio file" in why["19-198-0003"]

    out = tmp_path / "m.jsonl"
    r = CliRunner().invoke(app, ["corpus", "import-asr", str(d), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "3 utterances" in r.output and "3 problems" in r.output
    assert [e["problem"] for e in read_asr_manifest(str(out))] == ["", "", ""]


def test_tiny_pipeline_manifest_comes_from_dialogue_user_turns(ray_local, tmp_path: Path) -> None:
    from opens2s.data.sample import Sample, Scenario, Turn, sample_id

    corpus = tmp_path / "run" / "corpus"
    samples = []
    for i, (emotion, text) in enumerate([("sad", SENTENCES[1]), ("happy", SENTENCES[3])]):
        sid = sample_id(0, i)
        turns = [Turn("user", text), Turn("assistant", "I hear you, that sounds hard.")]
        for k, t in enumerate(turns):
            t.audio = f"audio/{sid}/{k:02d}_{t.role}.flac"
            write_audio(corpus / t.audio, _wave(1.0, k + 2 * i), SR)
            t.seconds = 1.0
        scen = Scenario(emotion, 1.0, "work", "student", "en-us", 1)
        samples.append(Sample(sid, i, 0, scen, turns, writer="template"))
    output.write_shard(str(corpus), 0, samples)
    output.merge_parts(str(corpus))

    manifest = str(tmp_path / "run" / "asr.jsonl")
    assert manifest_from_dialogue_corpus(str(corpus), manifest) == 2
    rows = read_asr_manifest(manifest)
    assert [(Path(r["audio"]).name, r["transcript"], r["emotion"]) for r in rows] == [
        ("00_user.flac", SENTENCES[1], "sad"),
        ("00_user.flac", SENTENCES[3], "happy"),
    ]
    # Without continuation.manifest the job makes the same manifest itself (the pipeline's way).
    cfg = _cfg(tmp_path / "run")
    assert build_continuation(cfg, log=lambda _: None)["records_written"] == 2
    made = storage.join(cfg.continuation_uri(), "asr_manifest.jsonl")
    assert storage.read_text(made) == storage.read_text(manifest)


def test_transformers_backend_writes_what_the_lm_generates(ray_local, tmp_path: Path) -> None:
    import torch
    from opens2s.data.validation import normalise_text
    from tiny_writer_lm import write_tiny_writer_lm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = write_tiny_writer_lm(tmp_path / "lm")
    manifest = _asr_folder(tmp_path)
    # Noise from a random LM is kept when validation allows it, so the records can be compared
    # with the same LM's own greedy output.
    loose = {"min_words_per_turn": 1, "max_words_per_turn": 1000, "min_english_ratio": 0.0}
    cfg = _cfg(
        tmp_path / "run",
        manifest=str(manifest),
        backend="transformers",
        model_path=str(lm),
        max_new_tokens=12,
        batch_size=1,
        max_attempts=1,  # greedy only: each record is what the LM's greedy output is
        validation=loose,
    )
    result = build_continuation(cfg, log=lambda _: None)
    root = cfg.continuation_uri()
    quarantine = [json.loads(x) for x in storage.read_text(f"{root}/quarantine.jsonl").splitlines()]
    assert result["records_written"] + len(quarantine) == 8
    assert all(q["stage"] and q["reason"] for q in quarantine)
    records = _records(root)
    assert result["per_writer"] == {"llm:transformers": result["records_written"]} and records

    import pyarrow.parquet as pq

    made = {r["source"]: r for r in pq.read_table(f"{root}/manifest.parquet").to_pylist()}
    tok = AutoTokenizer.from_pretrained(lm)
    model = AutoModelForCausalLM.from_pretrained(lm).eval()
    compared = 0
    for row in [r for r in read_asr_manifest(str(manifest)) if not r["problem"]][:3]:
        kept = made.get(row["audio"])
        if kept is None:  # only an empty answer may be refused under the loose validation
            (q,) = [q for q in quarantine if q["source"] == row["audio"]]
            assert "has 0 words" in q["reason"]
            continue
        prompt = tok.apply_chat_template(
            generation_messages(row),
            add_generation_prompt=True,
            tokenize=False,
            enable_thinking=False,
        )
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        new = out[0, ids["input_ids"].shape[1] :].tolist()
        n = next((i for i, t in enumerate(new) if t in (tok.eos_token_id, tok.pad_token_id)), 12)
        assert kept["target"] == normalise_text(tok.decode(new[:n], skip_special_tokens=True))
        assert kept["target_tokens"] == n and n > 0
        instruction = records[kept["id"]]["messages"][0]["content"][0]["text"]
        assert instruction == (SER_INSTRUCTION if row["emotion"] else ASR_PROMPT)
        compared += 1
    assert compared >= 2


def test_a_rejected_continuation_is_asked_again_sampled_then_quarantined(tmp_path: Path) -> None:
    from opens2s.config.continuation import ContinuationSection
    from tiny_writer_lm import write_tiny_writer_lm

    lm = write_tiny_writer_lm(tmp_path / "lm")
    rows = planned_rows(str(_asr_folder(tmp_path)), shard_size=100)
    # No answer of at most 8 tokens has 50 words: every attempt is rejected.
    settings = ContinuationSection(
        backend="transformers",
        model_path=str(lm),
        max_new_tokens=8,
        max_attempts=3,
        validation={"min_words_per_turn": 50, "max_words_per_turn": 60},
    )
    writer = TransformersContinuationWriter(settings, seed=0)
    live = [r for r in rows if not r["dropped_stage"]]
    greedy = writer.generate(live, 1)
    assert writer.generate(live, 1) == greedy  # the first attempt is upstream's greedy answer
    assert writer.generate(live, 2) != greedy  # a retry samples (retry_temperature 0.7)
    batch = {k: [r[k] for r in rows] for k in rows[0]}
    out = writer(batch)
    by_id = {i: k for k, i in enumerate(out["id"])}
    for row in rows:
        k = by_id[row["id"]]
        if row["dropped_stage"]:  # a manifest problem: never asked
            assert out["dropped_stage"][k] == "manifest" and out["attempts"][k] == 0
            continue
        assert out["dropped_stage"][k] == "writer" and out["attempts"][k] == 3
        reason = out["dropped_reason"][k]
        assert reason.startswith("text has ") and "expected 50..60 (llm:transformers)" in reason
        assert "; after 3 attempts; last answer: " in reason
        assert out["target"][k] == ""


def test_a_continuation_rejected_once_is_kept_from_its_second_attempt(tmp_path: Path) -> None:
    from opens2s.config.continuation import ContinuationSection

    rows = planned_rows(str(_asr_folder(tmp_path)), shard_size=100)
    live = [r for r in rows if not r["dropped_stage"]]
    assert len(live) >= 3
    answers = {
        1: [("", 0), ("and then she smiled at me", 6), ("zzz qqq xxx yyy", 4)],
        2: [("so we went home together", 5), ("nope", 1)],
    }
    asked = []

    def generate(todo, attempt):
        asked.append((attempt, [r["id"] for r in todo]))
        return answers[attempt][: len(todo)]

    settings = ContinuationSection(max_attempts=2)
    write_continuations(live[:3], generate, settings=settings, writer_name="llm:vllm")
    first, second, third = live[:3]
    assert asked == [(1, [r["id"] for r in live[:3]]), (2, [first["id"], third["id"]])]
    assert (first["target"], first["target_tokens"], first["attempts"]) == (
        "so we went home together",
        5,
        2,
    )
    assert (second["target"], second["attempts"], second["dropped_stage"]) == (
        "and then she smiled at me",
        1,
        "",
    )
    assert third["dropped_stage"] == "writer" and third["attempts"] == 2
    assert third["dropped_reason"].startswith("text has 1 words, expected 2..80 (llm:vllm)")
    assert third["dropped_reason"].endswith("after 2 attempts; last answer: 'nope'")
    assert all(r["writer"] == "llm:vllm" for r in live[:3])


def test_manifest_audio_and_output_on_s3(ray_local, s3_bucket: str, tmp_path: Path) -> None:
    from opens2s.model import build_model, build_tokenizer
    from opens2s.model.records import RecordEncoder, parse_record

    base = f"s3://{s3_bucket}/asr"
    lines = []
    for i, text in enumerate(SENTENCES[:2]):
        write_audio(tmp_path / f"u{i}.flac", _wave(1.0, i), SR)
        storage.write_bytes(f"{base}/u{i}.flac", (tmp_path / f"u{i}.flac").read_bytes())
        lines.append(json.dumps({"audio": f"u{i}.flac", "text": text, "emotion": "sad"}))
    lines.append(json.dumps({"audio": "gone.flac", "text": SENTENCES[2]}))
    storage.write_text(f"{base}/manifest.jsonl", "\n".join(lines) + "\n")
    root = f"s3://{s3_bucket}/continuation"
    cfg = _cfg(tmp_path / "run", manifest=f"{base}/manifest.jsonl", output_uri=root)
    result = build_continuation(cfg, log=lambda _: None)
    assert (result["records_written"], result["quarantined"]) == (2, 1)
    (q,) = [json.loads(x) for x in storage.read_text(f"{root}/quarantine.jsonl").splitlines()]
    assert q["source"] == f"{base}/gone.flac" and q["stage"] == "audio"
    encoder = RecordEncoder(build_tokenizer("tiny"), build_model("tiny").config, root)
    for rec in _records(root).values():
        assert rec["messages"][0]["content"][1]["audio"].endswith(".flac")
        assert encoder.encode(parse_record(rec))["speech_values"].shape[0] == 1
