"""``ray job submit --working-dir . -- python jobs/build_corpus.py`` against a ``ray start --head``
cluster that this test starts on free ports (token auth off on both sides) and stops again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import RayHead

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.mark.timeout(360)
def test_build_corpus_runs_through_ray_job_submit_on_a_head_node(tmp_path) -> None:
    corpus = tmp_path / "corpus"
    # The job may fit its own tokenizer (tested end to end elsewhere); here it gets one, fitted
    # directly on two espeak sentences, so the test spends its time on the cluster path.
    tokenizer = tmp_path / "tokenizer.npz"
    _fit_small_tokenizer(tokenizer)
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "audio": {"codebook_size": 16},
                "data": {
                    "workers": 1,
                    "cpus_per_worker": 0.5,
                    "scenarios": {"num_dialogues": 3, "max_exchanges": 1},
                    "units": {"tokenizer_path": str(tokenizer)},
                    "output": {"shard_size": 2},
                },
            }
        )
    )
    head = RayHead()
    try:
        runtime_env = {"excludes": [".git", ".venv", "runs", "artifacts", "*.egg-info"]}
        job = subprocess.run(
            [
                RAY,
                "job",
                "submit",
                f"--address={head.address}",
                f"--working-dir={ROOT}",
                f"--runtime-env-json={json.dumps(runtime_env)}",
                "--",
                "python",
                "jobs/build_corpus.py",
                "--config",
                str(config),
                "--output",
                str(corpus),
            ],  # fmt: skip
            env=head.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout + job.stderr
    finally:
        head.stop()
    summary = json.loads((corpus / "summary.json").read_text())
    assert summary["dialogues_planned"] == 3
    assert summary["dialogues_written"] + summary["dialogues_quarantined"] == 3
    assert sorted(p.name for p in (corpus / "shards").iterdir()) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
    ]
    records = [json.loads(line) for line in (corpus / "shards" / "shard-00000.jsonl").open()]
    assert all(r["messages"][1]["content"][0]["speech_units"] for r in records)


def _fit_small_tokenizer(path: Path) -> None:
    from opens2s.audio.io import resample
    from opens2s.audio.tts import ASSISTANT_SPEAKER, EspeakTTS
    from opens2s.audio.units import MelKMeansUnits

    tts = EspeakTTS()
    waves = []
    for text in ("I am here with you, that sounds hard.", "Take it one step at a time."):
        wave, sr = tts.synthesize(text, ASSISTANT_SPEAKER)
        waves.append(resample(wave, sr, 16000))
    MelKMeansUnits(16, 25.0).fit(waves, passes=2).save(path)
