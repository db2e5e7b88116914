"""The eval's outputs: per-item rows (Parquet), the summary (``eval.json``), a PNG of the latency
and WER distributions, a short Markdown report, and the comparison of two runs."""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from typing import Any

import numpy as np

from opens2s import storage

EVAL_JSON = "eval.json"
ITEMS_PARQUET = "items.parquet"
PLOT = "distributions.png"
REPORT = "report.md"

# (summary key, what it is, higher is better?)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("ttfa_ms", "time to first audio, ms", False),
    ("rtf", "real-time factor (answer time / audio time)", False),
    ("wer_consistency", "WER, ASR of the answer audio vs its own text", False),
    ("wer_reference", "WER, ASR of the answer audio vs the reference answer", False),
    ("wer_text_reference", "WER, answer text vs the reference answer", False),
    ("speaker_similarity", "cosine similarity of the answer's voice to the requested voice", True),
    ("prosody_score", "share of prosody cues moving as the user's emotion asks", True),
    ("judge_empathy", "judge's empathy score (1-5)", True),
    ("judge_relevance", "judge's relevance score (1-5)", True),
)
RATES: tuple[tuple[str, str], ...] = (
    ("prosody_match", "replies whose prosody suits the user's emotion"),
    ("ser_match", "replies whose SER emotion is the tone the user's emotion asks"),
)


def _stats(values: list[Any]) -> dict[str, float | int | None]:
    vals = np.asarray(
        [float(v) for v in values if v is not None and not math.isnan(float(v))], np.float64
    )
    if vals.size == 0:
        return {"n": 0, "median": None, "p95": None, "mean": None}
    return {
        "n": int(vals.size),
        "median": round(float(np.median(vals)), 4),
        "p95": round(float(np.percentile(vals, 95)), 4),
        "mean": round(float(vals.mean()), 4),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, failures by reason, and the median / p95 / mean of every metric."""
    scored = [r for r in rows if r.get("status") == "scored"]
    failed = [r for r in rows if r.get("status") == "failed"]
    out: dict[str, Any] = {
        "items": len(rows),
        "scored": len(scored),
        "failed": len(failed),
        "failures": dict(Counter(str(r.get("error", "?")).split(":", 1)[0] for r in failed)),
        "by_split": dict(Counter(r.get("split") for r in rows)),
    }
    for key, _, _ in METRICS:
        out[key] = _stats([r.get(key) for r in scored])
    for key, _ in RATES:
        vals = [bool(r[key]) for r in scored if r.get(key) is not None]
        out[key] = {"n": len(vals), "rate": round(sum(vals) / len(vals), 4) if vals else None}
    judge = Counter(r.get("judge_status") for r in scored if r.get("judge_status"))
    out["judge"] = {"scored": judge.get("scored", 0), "unparseable": judge.get("unparseable", 0)}
    out["judge"]["errors"] = judge.get("error", 0)
    splits = sorted({r.get("split") for r in rows if r.get("split")})
    if len(splits) > 1:
        out["splits"] = {
            s: {
                key: _stats([r.get(key) for r in scored if r.get("split") == s])["median"]
                for key in ("wer_consistency", "wer_reference", "speaker_similarity")
            }
            for s in splits
        }
    return out


def write_items(rows: list[dict[str, Any]], uri: str) -> str:
    """Per-item rows as Parquet (every field a column; absent values null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return storage.write_bytes(uri, buf.getvalue())


def read_items(uri: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pylist()


def plot_distributions(rows: list[dict[str, Any]], uri: str) -> str:
    """A PNG: histograms of TTFA, RTF and the two answer WERs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.get("status") == "scored"]
    panels = [
        ("ttfa_ms", "TTFA (ms)"),
        ("rtf", "RTF"),
        ("wer_consistency", "WER: answer audio vs its text"),
        ("wer_reference", "WER: answer audio vs reference"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels, strict=True):
        vals = [float(r[key]) for r in scored if r.get(key) is not None]
        if vals:
            ax.hist(vals, bins=min(20, max(5, len(vals))), color="#4878a8")
            ax.axvline(float(np.median(vals)), color="k", linestyle="--", linewidth=1)
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title} (n={len(vals)})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return storage.write_bytes(uri, buf.getvalue())


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def summary_table(summary: dict[str, Any]) -> list[str]:
    """The summary as text lines (the console's and the report's table)."""
    lines = [
        f"{summary['items']} items: {summary['scored']} scored, {summary['failed']} failed"
        + (
            f" ({', '.join(f'{k} x{v}' for k, v in summary['failures'].items())})"
            if summary["failed"]
            else ""
        ),
        f"  {'metric':<20} {'n':>4} {'median':>9} {'p95':>9} {'mean':>9}",
    ]
    for key, _, _ in METRICS:
        s = summary.get(key) or {}
        if not s.get("n"):
            continue
        lines.append(
            f"  {key:<20} {s['n']:>4} {_fmt(s['median']):>9} {_fmt(s['p95']):>9} "
            f"{_fmt(s['mean']):>9}"
        )
    for key, _ in RATES:
        s = summary.get(key) or {}
        if s.get("n"):
            lines.append(f"  {key:<20} {s['n']:>4} rate {_fmt(s['rate'], '.2f')}")
    for split, medians in (summary.get("splits") or {}).items():
        lines.append(
            f"  split {split}: medians " + ", ".join(f"{k} {_fmt(v)}" for k, v in medians.items())
        )
    j = summary.get("judge") or {}
    if any(j.values()):
        lines.append(
            f"  judge: {j['scored']} scored, {j['unparseable']} unparseable, {j['errors']} errors"
        )
    return lines


def markdown_report(result: dict[str, Any]) -> str:
    """A short report: what was evaluated, the table, the failures, where the files are."""
    s = result["summary"]
    lines = [
        f"# Eval of {result['model_dir']}",
        "",
        f"Eval set: `{result['eval_set']}` ({s['items']} items; splits {s['by_split']}). "
        f"Greedy decoding, {result['batch_size']} sessions per batched decoder. "
        f"Voice reference: {result.get('voice_source')}. Prosody baseline: "
        f"{result.get('prosody_baseline_source')}. Judge: {result.get('judge') or 'none'}. "
        f"SER: {result.get('ser') or 'none'}.",
        "",
        "| metric | what | n | median | p95 | mean |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, what, _ in METRICS:
        m = s.get(key) or {}
        lines.append(
            f"| {key} | {what} | {m.get('n', 0)} | {_fmt(m.get('median'))} | "
            f"{_fmt(m.get('p95'))} | {_fmt(m.get('mean'))} |"
        )
    for key, what in RATES:
        m = s.get(key) or {}
        lines.append(
            f"| {key} | {what} | {m.get('n', 0)} | rate {_fmt(m.get('rate'), '.2f')} | | |"
        )
    for split, medians in (s.get("splits") or {}).items():
        lines.append(
            f"| split {split} | medians: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in medians.items())
            + " | | | | |"
        )
    j = s["judge"]
    lines += [
        "",
        f"Judge: {j['scored']} scored, {j['unparseable']} unparseable, {j['errors']} errors.",
        "",
        f"Failed items: {s['failed']}" + (":" if s["failed"] else "."),
    ]
    lines += [f"- `{f['item_id']}`: {f['error']}" for f in result.get("failed_items", [])]
    lines += [
        "",
        f"Files: per-item rows `{result['items_uri']}`, distributions `{result['plot_uri']}`, "
        f"answers under `{result['answers_uri']}`. Scores and their sources: docs/eval.md.",
        "",
    ]
    return "\n".join(lines)


def resolve_eval_json(path: str) -> str:
    """``eval.json`` of a run dir, an eval dir or the file itself."""
    for candidate in (path, storage.join(path, EVAL_JSON), storage.join(path, "eval", EVAL_JSON)):
        if candidate.endswith(".json") and storage.exists(candidate):
            return candidate
    raise FileNotFoundError(
        f"{path} holds no {EVAL_JSON} (give a run dir, its eval/ dir or the file)"
    )


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Lines saying how run ``b`` differs from run ``a``: every metric's medians (and rates)
    side by side with the change, and the items whose scores moved."""
    sa, sb = a["summary"], b["summary"]
    lines = [
        f"A: {a['model_dir']} ({sa['scored']}/{sa['items']} scored)",
        f"B: {b['model_dir']} ({sb['scored']}/{sb['items']} scored)",
        f"  {'metric':<20} {'A':>9} {'B':>9} {'B-A':>9}  better",
    ]
    differ = 0
    for key, _, higher in METRICS:
        va, vb = (sa.get(key) or {}).get("median"), (sb.get(key) or {}).get("median")
        if va is None and vb is None:
            continue
        delta = None if va is None or vb is None else round(vb - va, 4)
        better = "" if not delta else ("B" if (delta > 0) == higher else "A")
        differ += bool(delta) or (va is None) != (vb is None)
        lines.append(f"  {key:<20} {_fmt(va):>9} {_fmt(vb):>9} {_fmt(delta, '+.3f'):>9}  {better}")
    for key, _ in RATES:
        va, vb = (sa.get(key) or {}).get("rate"), (sb.get(key) or {}).get("rate")
        if va is None and vb is None:
            continue
        delta = None if va is None or vb is None else round(vb - va, 4)
        differ += bool(delta)
        lines.append(f"  {key:<20} {_fmt(va):>9} {_fmt(vb):>9} {_fmt(delta, '+.3f'):>9}")
    for key in ("failed", "items"):
        if sa[key] != sb[key]:
            differ += 1
            lines.append(f"  {key:<20} {sa[key]:>9} {sb[key]:>9} {sb[key] - sa[key]:>+9}")
    items_a = {r["item_id"]: r for r in a.get("rows", [])}
    moved = []
    for r in b.get("rows", []):
        old = items_a.get(r["item_id"])
        if old is None:
            continue
        if old.get("answer_text") != r.get("answer_text") or old.get("status") != r.get("status"):
            moved.append(
                f"  {r['item_id']}: WER vs reference {_fmt(old.get('wer_reference'), '.2f')} -> "
                f"{_fmt(r.get('wer_reference'), '.2f')}, status {old.get('status')} -> "
                f"{r.get('status')}"
            )
    if moved:
        differ += len(moved)
        lines.append(f"{len(moved)} items answered differently:")
        lines += moved[:20]
    lines.append("no difference" if not differ else f"{differ} differences")
    return lines


def read_result(path: str) -> dict[str, Any]:
    """An eval run's ``eval.json`` with its per-item rows (``rows``)."""
    uri = resolve_eval_json(path)
    result = json.loads(storage.read_text(uri))
    items = result.get("items_uri")
    result["rows"] = read_items(items) if items and storage.exists(items) else []
    return result
