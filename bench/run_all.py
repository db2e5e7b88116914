"""Run every benchmark against its goals (bench/goals.yaml): one table, non-zero exit on a miss.

    python bench/run_all.py [--only decode,train] [--repeats 3] [--markdown docs/benchmarks.md]

Each bench runs ``repeats`` times (its own ``repeats`` in goals.yaml wins); a figure's value is
the median over the runs and its spread is (max - min) / median. ``--markdown FILE`` rewrites the
table between the ``<!-- bench-table -->`` markers of FILE, with the date and the machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def figure_value(result: dict, figure: str) -> float:
    """A figure of one run: a (dotted) key of its JSON or + - * / of such keys and numbers."""

    def lookup(name: str) -> float:
        node: object = result
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"the bench's JSON has no {name!r}")
            node = node[part]
        return float(node)  # type: ignore[arg-type]

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name | ast.Attribute):
            return lookup(ast.unparse(node))
        raise ValueError(f"figure {figure!r}: only keys, numbers and + - * / are allowed")

    return ev(ast.parse(figure, mode="eval"))


def last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("the bench printed no JSON line")


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def run_bench(name: str, spec: dict, repeats: int) -> list[dict]:
    cmd = [sys.executable, str(ROOT / spec["script"]), *map(str, spec.get("args", []))]
    results = []
    for i in range(int(spec.get("repeats", repeats))):
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise RuntimeError(f"{name} run {i + 1} exited {proc.returncode}:\n{tail}")
        results.append(last_json(proc.stdout))
        print(f"  {name} run {i + 1}: {took:.0f} s", flush=True)
    return results


def check(spec: dict, results: list[dict]) -> list[dict]:
    rows = []
    for goal in spec.get("goals", []):
        values = [figure_value(r, goal["figure"]) for r in results]
        med = statistics.median(values)
        ok = ("min" not in goal or med >= goal["min"]) and ("max" not in goal or med <= goal["max"])
        bound = " and ".join(
            f"{'>=' if k == 'min' else '<='} {goal[k]}" for k in ("min", "max") if k in goal
        )
        spread = (max(values) - min(values)) / abs(med) if med else 0.0
        rows.append(
            {
                "figure": goal["figure"],
                "median": round(med, 4),
                "runs": [round(v, 4) for v in values],
                "goal": bound,
                "status": "pass" if ok else "MISS",
                "spread": round(spread, 3),
            }
        )
    return rows


def markdown(table: list[tuple[str, dict]]) -> str:
    lines = [
        "| bench | figure | median | runs | goal | status | spread |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in table:
        runs = ", ".join(str(v) for v in row["runs"])
        lines.append(
            f"| {name} | `{row['figure']}` | {row['median']} | {runs} | {row['goal']} | "
            f"{row['status']} | {row['spread']:.1%} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated bench names (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown", default=None, help="a Markdown file whose table to rewrite")
    args = ap.parse_args()
    goals = yaml.safe_load((ROOT / "bench/goals.yaml").read_text())
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in goals]
    if unknown:
        print(f"unknown benches {unknown}; known: {', '.join(goals)}", file=sys.stderr)
        return 2
    table: list[tuple[str, dict]] = []
    failed: list[str] = []
    for name, spec in goals.items():
        if only and name not in only:
            continue
        if spec.get("requires") == "cuda" and not has_cuda():
            print(f"== {name}: skipped (needs a CUDA GPU)", flush=True)
            continue
        print(f"== {name} ({spec['script']})", flush=True)
        try:
            results = run_bench(name, spec, args.repeats)
            rows = check(spec, results)
        except (RuntimeError, KeyError, ValueError) as e:
            print(f"  {name} failed: {e}", flush=True)
            failed.append(name)
            continue
        table += [(name, r) for r in rows]
    text = markdown(table)
    print()
    print(text)
    misses = [f"{n}:{r['figure']}" for n, r in table if r["status"] != "pass"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    verdict = "all goals met" if not misses and not failed else f"missed {misses}, failed {failed}"
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} on {machine}: {verdict}")
    print(json.dumps({"misses": misses, "failed": failed, "rows": len(table)}))
    if args.markdown:
        path = Path(args.markdown)
        doc = path.read_text()
        block = f"{START}\n{time.strftime('%Y-%m-%d')}, {machine}, `make bench`:\n\n{text}\n{END}"
        if START in doc and END in doc:
            doc = doc[: doc.index(START)] + block + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip() + "\n\n" + block + "\n"
        path.write_text(doc)
    return 1 if misses or failed else 0


if __name__ == "__main__":
    sys.exit(main())
