"""The corpus summary: counts, hours, per-emotion balance, drops by reason, where the output is.

Computed from the merged manifest and quarantine of a corpus root, so ``opens2s corpus stats DIR``
and the end of a build print the same thing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pyarrow as pa

from opens2s import storage
from opens2s.data import output


def reason_key(stage: str, reason: str) -> str:
    """A drop reason grouped for counting: ``stage: kind`` (the text before the first colon)."""
    kind = reason.split(":", 1)[0].strip() if ":" in reason else reason
    kind = re.sub(r"\d+", "N", kind)[:60]
    return f"{stage}: {kind}"


def _agreement(rows, quarantine, column: str, filter_name: str) -> dict[str, dict[str, Any]]:
    """Per emotion: renders a verifier checked, how many agreed, the rate. Kept dialogues carry
    the verdict in ``column``; those the filter dropped count as disagreeing."""
    checked: Counter[str] = Counter()
    agreed: Counter[str] = Counter()
    for r in rows:
        if r.get(column) is not None:
            checked[r["emotion"]] += 1
            agreed[r["emotion"]] += int(r[column] >= 1.0)
    for q in quarantine:
        if q["stage"] == "filters" and q["reason"].startswith(filter_name + ":"):
            checked[q["emotion"]] += 1
    return {
        e: {"checked": n, "agreed": agreed[e], "agreement": round(agreed[e] / n, 4)}
        for e, n in sorted(checked.items())
    }


def paralinguistic_summary(
    rows: list[dict[str, Any]], quarantine: list[dict[str, Any]]
) -> dict[str, Any]:
    """Lexically neutral share and minimal pairs of the kept dialogues, per-emotion agreement of
    the prosody verifier and the SER model, and drops per filter (docs/corpus.md)."""
    neutral = [r for r in rows if r.get("lexically_neutral")]
    members = Counter(r["pair"] for r in neutral if r.get("pair", -1) >= 0)
    drops = Counter(
        q["reason"].split(":", 1)[0].strip() for q in quarantine if q["stage"] == "filters"
    )
    return {
        "lexically_neutral_share": round(len(neutral) / len(rows), 4) if rows else 0.0,
        "minimal_pairs_complete": sum(1 for n in members.values() if n >= 2),
        "prosody_agreement": _agreement(rows, quarantine, "prosody_agrees", "prosody"),
        "ser_agreement": _agreement(rows, quarantine, "ser_agrees", "ser"),
        "drops_per_filter": dict(drops.most_common()),
    }


def summarize(
    root: str,
    manifest: pa.Table,
    quarantine: list[dict[str, Any]],
    *,
    planned: int | None = None,
    elapsed_seconds: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary dict of a corpus (see module docstring)."""
    rows = manifest.to_pylist()
    seconds = sum(r["seconds"] for r in rows)
    stage_seconds: Counter[str] = Counter()
    for r in rows:
        stage_seconds.update(json.loads(r["stage_seconds"] or "{}"))
    for q in quarantine:
        stage_seconds.update(q.get("stage_seconds") or {})
    summary: dict[str, Any] = {
        "output": root,
        "dialogues_planned": planned,
        "dialogues_written": len(rows),
        "dialogues_quarantined": len(quarantine),
        "shards": len(output.completed_shards(root)),
        "held_out_dialogues": output.held_out_count(root),
        "hours": round(seconds / 3600, 4),
        "user_hours": round(sum(r["user_seconds"] for r in rows) / 3600, 4),
        "assistant_hours": round(sum(r["assistant_seconds"] for r in rows) / 3600, 4),
        "per_emotion": dict(sorted(Counter(r["emotion"] for r in rows).items())),
        "per_writer": dict(sorted(Counter(r["writer"] for r in rows).items())),
        "drops_by_stage": dict(sorted(Counter(q["stage"] for q in quarantine).items())),
        "drops_by_reason": dict(
            Counter(reason_key(q["stage"], q["reason"]) for q in quarantine).most_common()
        ),
        "stage_seconds": {k: round(v, 3) for k, v in sorted(stage_seconds.items())},
        **paralinguistic_summary(rows, quarantine),
    }
    if elapsed_seconds is not None:
        summary["elapsed_seconds"] = round(elapsed_seconds, 2)
    summary.update(extra or {})
    return summary


def write_summary(root: str, summary: dict[str, Any]) -> str:
    """Write ``summary.json`` under the corpus root; returns its URI."""
    return storage.write_text(
        storage.join(root, output.SUMMARY), json.dumps(summary, indent=2) + "\n"
    )


def read_summary(root: str) -> dict[str, Any]:
    """The ``summary.json`` of a corpus; FileNotFoundError names the root when there is none."""
    uri = storage.join(root, output.SUMMARY)
    if not storage.exists(uri):
        raise FileNotFoundError(f"{root} holds no {output.SUMMARY}: is it a corpus directory?")
    return json.loads(storage.read_text(uri))


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few human-readable lines."""
    lines = [
        f"corpus: {summary['output']}",
        f"  dialogues: {summary['dialogues_written']} written, "
        f"{summary['dialogues_quarantined']} quarantined"
        + (
            f" (of {summary['dialogues_planned']} planned)"
            if summary.get("dialogues_planned")
            else ""
        )
        + f", {summary['shards']} shards"
        + (
            f" ({summary['held_out_dialogues']} held out for eval, not trained on)"
            if summary.get("held_out_dialogues")
            else ""
        ),
        f"  audio: {summary['hours']:.4f} h ({summary['user_hours']:.4f} h user, "
        f"{summary['assistant_hours']:.4f} h assistant)",
        "  per emotion: " + ", ".join(f"{k} {v}" for k, v in summary["per_emotion"].items()),
    ]
    if "lexically_neutral_share" in summary:
        agreement = summary.get("prosody_agreement") or {}
        lines.append(
            f"  lexically neutral: {summary['lexically_neutral_share']:.0%} "
            f"({summary['minimal_pairs_complete']} complete minimal pairs); prosody agrees: "
            + (", ".join(f"{k} {v['agreement']:.0%}" for k, v in agreement.items()) or "-")
        )
    if summary["drops_by_reason"]:
        lines.append(
            "  drops: " + "; ".join(f"{k} x{v}" for k, v in summary["drops_by_reason"].items())
        )
    if summary.get("stage_seconds"):
        lines.append(
            "  stage seconds: "
            + ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_seconds"].items())
        )
    if summary.get("elapsed_seconds") is not None:
        lines.append(f"  elapsed: {summary['elapsed_seconds']:.1f} s")
    return "\n".join(lines)
