"""The empathy judge's vLLM backend: structured outputs hold every answer to the rubric's JSON,
unparseable (cut-off) answers are retried and counted. Runs where vLLM is installed (the vLLM
venv, scripts/setup_vllm.sh; GPU clusters); skipped elsewhere."""

from __future__ import annotations

import os

import pytest

vllm = pytest.importorskip("vllm")
pytestmark = pytest.mark.timeout(600)


def test_vllm_judge_answers_within_the_rubric_schema(tmp_path, monkeypatch) -> None:
    from eval_fixtures import build_judge_dir
    from opens2s.config.eval import JudgeSettings
    from opens2s.evaluation.judge import build_judge, judge_replies

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = JudgeSettings(
        model_path=str(build_judge_dir(tmp_path / "judge")),
        backend="vllm",
        max_new_tokens=400,
        max_attempts=2,
        vllm_engine_kwargs={
            "enforce_eager": True,
            "kv_cache_memory_bytes": 64 * 2**20,
            "max_model_len": 1024,
            "dtype": "float32",
        },
    )
    judge = build_judge(settings)
    items = [
        {"question": "I failed my exam.", "emotion": "sad", "reply": "I am so sorry."},
        {"question": "I got the job!", "emotion": "happy", "reply": "Congratulations!"},
        {"question": "", "emotion": None, "reply": ""},
    ]
    results = judge_replies(judge, items, settings.max_attempts)
    assert len(results) == len(items)
    for r in results:
        # A random model under structured outputs still writes the schema's object, cut off
        # at max_new_tokens at worst: scored, or counted unparseable with the reason.
        assert r["judge_answer"].lstrip().startswith("{"), r
        assert r["judge_status"] in ("scored", "unparseable"), r
        if r["judge_status"] == "scored":
            assert 1 <= r["judge_empathy"] <= 5 and 1 <= r["judge_relevance"] <= 5
        else:
            assert r["judge_attempts"] == 2 and r["judge_error"].startswith("not JSON")
