"""The run manifest and the skip-if-done rule, on real files and without Ray: a step whose outputs
exist is skipped and recorded; step ranges are checked; the summary names every output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opens2s.config import load_config
from opens2s.pipeline.manifest import RunManifest
from opens2s.pipeline.plan import CLUSTER_JOBS, JOB_GROUPS, STEPS, served_config, steps_between
from opens2s.pipeline.runner import run_steps
from opens2s.pipeline.summary import format_summary

pytestmark = pytest.mark.timeout(60)


def test_steps_between_selects_a_range_and_names_bad_steps() -> None:
    assert steps_between() == STEPS
    assert steps_between(None, "finetune") == (
        "units",
        "corpus",
        "continuation",
        "understand",
        "speak",
        "align",
        "finetune",
    )
    assert steps_between("export", None) == ("export", "serve", "turn", "eval")
    with pytest.raises(ValueError, match="unknown pipeline step 'trian'"):
        steps_between(None, "trian")
    with pytest.raises(ValueError, match="comes after"):
        steps_between("serve", "corpus")
    # Job groups cover every step once, in order; the KubeRay RayJobs are the batch groups.
    assert [s for group in JOB_GROUPS.values() for s in group] == list(STEPS)
    assert all(CLUSTER_JOBS[j] == JOB_GROUPS[j] for j in CLUSTER_JOBS)


def test_manifest_round_trips_through_pipeline_json(tmp_path: Path) -> None:
    m = RunManifest(str(tmp_path))
    m.record("units", "done", outputs={"tokenizer": "t.npz"}, detail={"k": 16}, seconds=1.5)
    m.record("corpus", "missing", error="opens2s.data is not installed")
    raw = json.loads((tmp_path / "pipeline.json").read_text())
    assert [s["name"] for s in raw["steps"]] == list(STEPS)
    back = RunManifest.load(str(tmp_path))
    assert back.steps["units"].outputs == {"tokenizer": "t.npz"}
    assert back.steps["units"].detail == {"k": 16}
    assert back.steps["corpus"].status == "missing"
    assert back.steps["turn"].status == "pending"


def test_steps_whose_outputs_exist_are_skipped_and_recorded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = load_config(None, {"run_dir": str(run), "train.stages": ["finetune"]})
    (run / "corpus/units").mkdir(parents=True)
    (run / "corpus/units/tokenizer.npz").write_bytes(b"made by an earlier run")
    (run / "corpus/summary.json").write_text("{}")
    log: list[str] = []
    manifest = run_steps(cfg, ["units", "corpus", "align"], log=log.append)
    assert [manifest.steps[s].status for s in ("units", "corpus", "align")] == ["skipped"] * 3
    assert manifest.steps["units"].outputs["tokenizer"] == str(run / "corpus/units/tokenizer.npz")
    assert manifest.steps["align"].detail == {"reason": "not in train.stages"}
    assert (run / "corpus/units/tokenizer.npz").read_bytes() == b"made by an earlier run"
    summary = format_summary(RunManifest.load(str(run)))
    assert str(run / "corpus/summary.json") in summary
    assert "align     skipped (not in train.stages)" in summary


def test_served_model_defaults_to_the_pipeline_export(tmp_path: Path) -> None:
    cfg = load_config(None, {"run_dir": str(tmp_path)})
    assert served_config(cfg).serve.model_dir == str(tmp_path / "model")
    mine = load_config(None, {"run_dir": str(tmp_path), "serve.model_dir": "/models/x"})
    assert served_config(mine).serve.model_dir == "/models/x"
