"""How varied a set of dialogue scripts is: distinct n-grams and nearest-neighbour similarity.

Used to check that the template writer does not produce near-duplicates at scale.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"[a-z']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def distinct_ngrams(texts: list[str], n: int) -> tuple[int, int]:
    """(distinct n-grams, total n-grams) over ``texts`` (distinct-n = first / second)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        w = _words(text)
        grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen), total


def nearest_neighbour_similarity(
    texts: list[str], *, probes: int = 200, n: int = 3, seed: int = 0
) -> list[float]:
    """For ``probes`` random texts, the highest Jaccard similarity of their word n-gram sets to
    any other text (1.0 = a duplicate). Exact over all texts; cost probes x len(texts)."""
    sets = []
    for text in texts:
        w = _words(text)
        sets.append({tuple(w[i : i + n]) for i in range(len(w) - n + 1)})
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(texts), size=min(probes, len(texts)), replace=False)
    out = []
    for p in picks:
        a = sets[p]
        best = 0.0
        for j, b in enumerate(sets):
            if j == p or not a or not b:
                continue
            inter = len(a & b)
            if inter:
                best = max(best, inter / (len(a) + len(b) - inter))
        out.append(best)
    return out
