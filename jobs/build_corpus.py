"""Ray job: build the empathetic speech-dialogue corpus the config describes.

Locally (an embedded Ray):     python jobs/build_corpus.py --config jobs/configs/tiny.yaml
On a cluster:                  ray job submit --working-dir . -- python jobs/build_corpus.py --config …
Overrides:                     --set data.scenarios.num_dialogues=200 --set data.workers=4

A rerun with the same config finishes a killed run: complete shards are skipped. The job ends with
a summary (counts, hours, per-emotion balance, drops by reason, where the output went).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# `ray job submit --working-dir .` ships the repository, not an installed package.
_PLATFORM = Path(__file__).resolve().parents[1] / "platform"
if _PLATFORM.is_dir() and str(_PLATFORM) not in sys.path:
    sys.path.insert(0, str(_PLATFORM))

import yaml  # noqa: E402


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``["data.workers=4"]`` -> ``{"data.workers": 4}`` (values parsed as YAML)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE (e.g. data.workers=4), got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="platform config YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", help="corpus root (local path or s3://); = data.output.uri")
    args = parser.parse_args(argv)

    import ray
    from opens2s.config import ConfigError, load_config
    from opens2s.data.pipeline import EmptyCorpusError, build_corpus

    overrides = parse_overrides(args.set)
    if args.output:
        overrides["data.output.uri"] = args.output
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    # RAY_ADDRESS is set by `ray job submit`; without it start an embedded local Ray, never
    # attach to some other cluster that happens to run on this machine.
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local")
    try:
        build_corpus(cfg)
    except EmptyCorpusError as e:
        raise SystemExit(f"error: {e}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
