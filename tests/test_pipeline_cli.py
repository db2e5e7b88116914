"""``opens2s pipeline`` as a user runs it: a rerun over finished outputs skips them and prints
where each output is; a wrong step name is refused with the list of steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OPENS2S = str(Path(sys.executable).parent / "opens2s")

pytestmark = pytest.mark.timeout(180)


def test_rerun_over_finished_steps_skips_them_and_prints_their_outputs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "corpus/units").mkdir(parents=True)
    (run / "corpus/units/tokenizer.npz").write_bytes(b"an earlier run's tokenizer")
    summary = {"dialogues_written": 7, "dialogues_quarantined": 1, "hours": 0.25}
    (run / "corpus/summary.json").write_text(json.dumps(summary))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"run_dir": str(run)}))
    r = subprocess.run(
        [OPENS2S, "pipeline", "--config", str(cfg), "--until", "corpus"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[units] skipped" in r.stdout and "[corpus] skipped" in r.stdout
    assert f"tokenizer: {run / 'corpus/units/tokenizer.npz'}" in r.stdout
    assert "corpus: 7 dialogues written, 1 quarantined, 0.2500 h of audio" in r.stdout
    manifest = json.loads((run / "pipeline.json").read_text())
    assert [s["status"] for s in manifest["steps"][:2]] == ["skipped", "skipped"]
    assert (run / "corpus/units/tokenizer.npz").read_bytes() == b"an earlier run's tokenizer"


def test_unknown_step_is_refused_with_the_steps_listed(tmp_path: Path) -> None:
    r = subprocess.run(
        [OPENS2S, "pipeline", "--config", str(ROOT / "jobs/configs/tiny.yaml"), "--until", "train"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "unknown pipeline step 'train'" in r.stderr
    from opens2s.pipeline.plan import STEPS

    assert f"steps are {', '.join(STEPS)}" in r.stderr
