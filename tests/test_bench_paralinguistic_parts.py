"""The parts of bench/paralinguistic.py (the whole bench trains for minutes: `make bench`):
its minimal pairs come from the corpus code with shared words and distinct replies, and its
scoring says which emotion's reply an answer is nearest, a tie counting as a coin flip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "paralinguistic", ROOT / "bench/paralinguistic.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_minimal_pairs_and_scoring():
    bench = _bench()
    pairs = bench.minimal_pairs(4, ["happy", "sad"], seed=0)
    assert len(pairs) == 4 and len({p["user"] for p in pairs}) == 4
    for p in pairs:
        assert set(p["replies"]) == {"happy", "sad"}
        assert p["replies"]["happy"] != p["replies"]["sad"]
    replies = {"happy": "That is wonderful news!", "sad": "I am so sorry that happened."}
    assert bench.fits("That is wonderful news!", "happy", replies) == 1.0
    assert bench.fits("That is wonderful news!", "sad", replies) == 0.0
    assert bench.fits("I am so sorry", "sad", replies) == 1.0
    assert bench.fits("", "sad", replies) == 0.5  # nearest to neither: chance
