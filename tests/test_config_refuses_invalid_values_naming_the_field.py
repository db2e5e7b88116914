"""Every invalid config value is refused when the config loads (before any Ray starts), with
the field named; the CLI and the job entrypoints report it without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from opens2s.config import ConfigError, load_config
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"data.scenarios.emotions": ["happy", "furious"]}, r"data.scenarios.emotions.*furious"),
        ({"data.scenarios.user_speakers": ["nobody"]}, r"data.scenarios.user_speakers.*nobody"),
        ({"data.scenarios.seed": -1}, r"data.scenarios.seed"),
        ({"data.scenarios.intensities": [2.0]}, r"data.scenarios.intensities.0"),
        ({"data.scenarios.intensities": []}, r"data.scenarios.intensities"),
        (
            {"data.filters.min_turn_seconds": 40, "data.filters.max_turn_seconds": 30},
            r"data.filters[\s\S]*min_turn_seconds \(40.0\) must be <= max_turn_seconds",
        ),
        ({"run_dir.x": 1}, r"run_dir"),
    ],
)
def test_invalid_value_is_refused_naming_the_field(overrides: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(None, overrides)


def test_override_below_a_value_names_the_key_even_when_the_file_sets_it(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("run_dir: runs/x\n")
    with pytest.raises(ConfigError, match=r"override run_dir.x=1: run_dir is a single value"):
        load_config(config, {"run_dir.x": 1})


def test_valid_scenario_names_and_bounds_are_accepted() -> None:
    cfg = load_config(
        None,
        {
            "data.scenarios.emotions": ["happy", "sad"],
            "data.scenarios.user_speakers": ["us-f1", "scot-m2"],
            "data.scenarios.intensities": [0.0, 1.0],
            "data.filters.min_turn_seconds": 2.0,
            "data.filters.max_turn_seconds": 2.0,
        },
    )
    assert cfg.data.scenarios.user_speakers == ["us-f1", "scot-m2"]


def test_cli_and_job_report_a_bad_override_without_a_traceback(tmp_path) -> None:
    from opens2s.cli import app

    config = tmp_path / "c.yaml"
    config.write_text("run_dir: runs/x\n")
    out = CliRunner().invoke(app, ["corpus", "build", "--config", str(config), "--set",
                                   "run_dir.x=1"])  # fmt: skip
    assert out.exit_code == 2 and "run_dir" in out.output
    assert isinstance(out.exception, SystemExit)
    for job in ("jobs/build_corpus.py", "jobs/train.py"):
        done = subprocess.run(
            [sys.executable, str(ROOT / job), "--config", str(config), "--set", "run_dir.x=1"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "run_dir is a single value" in done.stderr
