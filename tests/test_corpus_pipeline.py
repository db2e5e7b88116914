"""The corpus job end to end on real Ray Data, real espeak-ng and a real S3-compatible server:
50 dialogues readable by the model's record loader, exactly-once after killing the driver,
an s3:// run, an LLM writer whose garbage is quarantined, and the CLI."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from opens2s import storage
from opens2s.config import load_config
from opens2s.data import output
from opens2s.data.pipeline import EmptyCorpusError, build_corpus
from opens2s.data.sample import sample_id
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
CODEBOOK = 64  # small k-means: fits in seconds; the record loader checks ids against it


def write_config(path: Path, corpus: str, **data) -> Path:
    """A tiny config file: ``data`` holds dotted overrides of the data section."""
    raw: dict = {"run_dir": str(path.parent / "run"), "audio": {"codebook_size": CODEBOOK}}
    raw["data"] = {
        "cpus_per_worker": 0.25,  # 8 logical CPUs hold every stage's workers side by side
        "output": {"uri": corpus, "shard_size": 5},
        "units": {"fit_dialogues": 4},
    }
    for key, value in data.items():
        node = raw["data"]
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw))
    return path


def corpus_ids(root: str) -> tuple[list[str], list[str]]:
    """(ids in shards, ids in quarantine parts) of a corpus, duplicates kept."""
    kept, dropped = [], []
    for uri in storage.list_prefix(storage.join(root, output.SHARDS_DIR)):
        kept += [json.loads(line)["id"] for line in storage.read_text(uri).splitlines() if line]
    for uri in storage.list_prefix(storage.join(root, output.QUARANTINE_PARTS)):
        dropped += [json.loads(line)["id"] for line in storage.read_text(uri).splitlines() if line]
    return kept, dropped


@pytest.fixture(scope="module")
def corpus_50(tmp_path_factory, ray_local) -> tuple[str, dict]:
    """50 dialogues built once (unit tokenizer fitted by the job's own step): (root, summary)."""
    base = tmp_path_factory.mktemp("corpus50")
    corpus = str(base / "corpus")
    cfg = load_config(
        write_config(base / "c.yaml", corpus, scenarios__num_dialogues=50, output__shard_size=10)
    )
    return corpus, build_corpus(cfg)


@pytest.fixture(scope="module")
def unit_tokenizer(corpus_50) -> str:
    """The unit tokenizer the 50-dialogue build fitted, reused by tests that do not fit one."""
    return storage.join(corpus_50[0], output.UNIT_TOKENIZER)


@pytest.mark.timeout(300)
def test_50_dialogues_end_to_end_are_readable_by_the_record_loader(corpus_50) -> None:
    from opens2s.model import build_model, build_tokenizer
    from opens2s.model.records import RecordEncoder, parse_record

    corpus, summary = corpus_50
    expected = {sample_id(0, i) for i in range(50)}
    kept, dropped = corpus_ids(corpus)
    assert len(kept) + len(dropped) == 50 and set(kept) | set(dropped) == expected
    assert summary["dialogues_written"] == len(kept) >= 45
    assert summary["dialogues_quarantined"] == len(dropped)
    assert sum(summary["per_emotion"].values()) == len(kept)
    assert sum(summary["drops_by_reason"].values()) == len(dropped)
    assert summary["shards"] == 5 and summary["hours"] > 0
    assert storage.exists(storage.join(corpus, output.UNIT_TOKENIZER))
    manifest = pq.read_table(storage.join(corpus, output.MANIFEST))
    assert sorted(manifest.column("id").to_pylist()) == sorted(kept)

    config = build_model("tiny").config
    encoder = RecordEncoder(build_tokenizer("tiny"), config, corpus)
    records = []
    for uri in storage.list_prefix(storage.join(corpus, output.SHARDS_DIR)):
        for line in storage.read_text(uri).splitlines():
            records.append(parse_record(json.loads(line), unit_vocab_size=CODEBOOK))
    assert len(records) == len(kept)
    for record in records[:3]:
        batch = encoder.encode(record)
        assert batch["speech_values"].shape[0] == sum(
            1 for m in record.messages if m.role == "user"
        )
        assert batch["speech_units"].shape[0] >= 1
        # Every assistant item points at the assistant voice's embedding (not the zero default).
        assert batch["spk_embs"].shape[1] == config.spk_emb_dim
        assert float(abs(batch["spk_embs"]).sum()) > 0

    out = CliRunner().invoke(_cli(), ["corpus", "stats", corpus])
    assert out.exit_code == 0, out.output
    assert f"{len(kept)} written" in out.output and "per emotion" in out.output


def _cli():
    from opens2s.cli import app

    return app


@pytest.mark.timeout(400)
def test_killed_driver_then_rerun_gives_every_sample_exactly_once(
    ray_local, tmp_path, unit_tokenizer
) -> None:
    import ray

    corpus = str(tmp_path / "corpus")
    total, shards = 48, 12
    config = write_config(
        tmp_path / "c.yaml",
        corpus,
        scenarios__num_dialogues=total,
        output__shard_size=total // shards,
        workers=1,
        units__tokenizer_path=unit_tokenizer,
    )
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    env["PYTHONUNBUFFERED"] = "1"
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / "build_corpus.py"), "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # Kill the driver the moment it reports its first committed shard.
        for line in driver.stdout:
            if "committed" in line:
                driver.send_signal(signal.SIGKILL)
                break
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == -signal.SIGKILL, "the job ended before it committed a shard"
    before = output.completed_shards(corpus)
    assert 0 < len(before) < shards, f"kill came too late to test resumption: {sorted(before)}"
    stamps = {s: os.stat(output.shard_uri(corpus, s)).st_mtime_ns for s in before}

    summary = build_corpus(load_config(config))

    kept, dropped = corpus_ids(corpus)
    ids = kept + dropped
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == {sample_id(0, i) for i in range(total)}
    assert summary["dialogues_written"] + summary["dialogues_quarantined"] == total
    # Shards finished before the kill were not redone.
    assert {s: os.stat(output.shard_uri(corpus, s)).st_mtime_ns for s in before} == stamps


@pytest.mark.timeout(300)
def test_corpus_on_s3_is_listed_and_read_back_with_boto3(
    ray_local, s3_server, s3_bucket, tmp_path, unit_tokenizer
) -> None:
    corpus = f"s3://{s3_bucket}/corpora/tiny"
    # The tokenizer too comes from object storage: workers copy it down before loading it.
    tokenizer = storage.write_bytes(
        f"s3://{s3_bucket}/units/tokenizer.npz", storage.read_bytes(unit_tokenizer)
    )
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            corpus,
            scenarios__num_dialogues=8,
            output__shard_size=4,
            units__tokenizer_path=tokenizer,
        )
    )
    summary = build_corpus(cfg)
    client = s3_server.client()
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=s3_bucket, Prefix="corpora/tiny/"
        )
        for o in page.get("Contents", [])
    ]
    names = {k.removeprefix("corpora/tiny/") for k in keys}
    assert {"shards/shard-00000.jsonl", "shards/shard-00001.jsonl"} <= names
    assert {"manifest.parquet", "quarantine.jsonl", "summary.json", "spk/assistant.npy"} <= names
    body = client.get_object(Bucket=s3_bucket, Key="corpora/tiny/shards/shard-00000.jsonl")
    records = [json.loads(line) for line in body["Body"].read().decode().splitlines()]
    assert records and summary["dialogues_written"] + summary["dialogues_quarantined"] == 8
    audio_key = "corpora/tiny/" + records[0]["messages"][0]["content"][0]["audio"]
    flac = client.get_object(Bucket=s3_bucket, Key=audio_key)["Body"].read()
    assert flac[:4] == b"fLaC"
    table = pq.read_table(
        io.BytesIO(
            client.get_object(Bucket=s3_bucket, Key="corpora/tiny/manifest.parquet")["Body"].read()
        )
    )
    assert table.num_rows == summary["dialogues_written"]


@pytest.mark.timeout(300)
def test_llm_writer_garbage_is_quarantined_with_reasons_and_the_empty_corpus_fails_the_job(
    ray_local, tmp_path, unit_tokenizer
) -> None:
    corpus = str(tmp_path / "corpus")
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            corpus,
            scenarios__num_dialogues=4,
            output__shard_size=2,
            writer={"kind": "llm", "max_new_tokens": 12, "max_attempts": 2, "batch_size": 4},
            workers=1,
            units__tokenizer_path=unit_tokenizer,
        )
    )
    # Nothing survived: the job fails (naming the quarantine) instead of leaving an empty corpus.
    with pytest.raises(EmptyCorpusError, match=r"holds no dialogue: all 4 were quarantined"):
        build_corpus(cfg)
    summary = json.loads(storage.read_text(storage.join(corpus, output.SUMMARY)))
    assert summary["dialogues_quarantined"] == 4 and summary["dialogues_written"] == 0
    assert summary["drops_by_stage"] == {"writer": 4}
    lines = storage.read_text(storage.join(corpus, output.QUARANTINE)).splitlines()
    rows = [json.loads(line) for line in lines]
    assert {r["id"] for r in rows} == {sample_id(0, i) for i in range(4)}
    assert all(r["stage"] == "writer" and r["attempts"] == 2 for r in rows)
    assert all("after 2 attempts; last answer:" in r["reason"] for r in rows)
    assert output.completed_shards(corpus) == {0, 1}


@pytest.mark.timeout(300)
def test_cli_build_with_overrides_then_stats(ray_local, tmp_path, unit_tokenizer) -> None:
    corpus = tmp_path / "corpus"
    config = write_config(tmp_path / "c.yaml", str(tmp_path / "unused"), workers=1)
    args = ["corpus", "build", "--config", str(config), "--output", str(corpus)]
    args += [
        "--set",
        "data.scenarios.num_dialogues=3",
        "--set",
        f"data.units.tokenizer_path={unit_tokenizer}",
    ]
    out = CliRunner().invoke(_cli(), args)
    assert out.exit_code == 0, out.output
    assert "shard 00000 committed" in out.output and "3 planned" in out.output
    stats = CliRunner().invoke(_cli(), ["corpus", "stats", str(corpus), "--json"])
    summary = json.loads(stats.output)
    assert summary["dialogues_written"] + summary["dialogues_quarantined"] == 3
    assert not (tmp_path / "unused").exists()
    bad = CliRunner().invoke(_cli(), ["corpus", "stats", str(tmp_path / "nothing")])
    assert bad.exit_code != 0 and "summary.json" in bad.output
