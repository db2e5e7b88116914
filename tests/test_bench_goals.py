"""bench/goals.yaml names a script and checkable goals for every bench, and bench/run_all.py reads
figures (keys, dotted keys, expressions) from a bench's JSON and says pass or miss: no timing
here, only the bookkeeping that `make bench` relies on."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench/run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_bench_script_has_an_entry_with_goals_that_parse() -> None:
    goals = yaml.safe_load((ROOT / "bench/goals.yaml").read_text())
    scripts = {spec["script"] for spec in goals.values()}
    on_disk = {f"bench/{p.name}" for p in (ROOT / "bench").glob("*.py") if p.name != "run_all.py"}
    assert on_disk <= scripts, f"benches without goals: {sorted(on_disk - scripts)}"
    run_all = _run_all()
    for name, spec in goals.items():
        assert (ROOT / spec["script"]).is_file(), name
        for goal in spec.get("goals", []):
            assert {"min", "max"} & goal.keys(), (name, goal)
            fake = {k: 1.0 for k in _names(goal["figure"])}
            run_all.figure_value(fake, goal["figure"])  # parses and evaluates


def _names(expr: str) -> list[str]:
    import ast

    return [
        ast.unparse(n) for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)
    ]


def test_figures_medians_and_misses() -> None:
    run_all = _run_all()
    result = {"a": 0.3, "b": {"c": 2.0}, "wer_x": 0.2, "wer_y": 0.15}
    assert run_all.figure_value(result, "b.c") == 2.0
    assert run_all.figure_value(result, "wer_x - wer_y") == pytest.approx(0.05)
    with pytest.raises(KeyError, match="nope"):
        run_all.figure_value(result, "nope")
    with pytest.raises(ValueError, match="only keys"):
        run_all.figure_value(result, "__import__('os')")
    spec = {"goals": [{"figure": "a", "max": 0.25}, {"figure": "b.c", "min": 1.5}]}
    rows = run_all.check(spec, [{"a": 0.2, "b": {"c": 2}}, {"a": 0.4, "b": {"c": 2}}, result])
    assert [r["status"] for r in rows] == ["MISS", "pass"]  # median of a is 0.3
    assert rows[0]["median"] == 0.3 and rows[0]["spread"] == pytest.approx(0.2 / 0.3, abs=1e-3)


def test_an_unknown_bench_name_is_refused() -> None:
    r = subprocess.run(
        [sys.executable, "bench/run_all.py", "--only", "nonsense"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "unknown benches ['nonsense']" in r.stderr
