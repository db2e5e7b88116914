"""Ray job: build the continuation corpus (speech understanding) from an ASR/SER manifest.

Locally (an embedded Ray):   python jobs/build_continuation.py --config jobs/configs/tiny.yaml \
                                 --manifest data/asr/manifest.jsonl
On a cluster:                ray job submit --working-dir . -- python jobs/build_continuation.py …
Overrides:                   --set continuation.backend=vllm --set continuation.workers=8

An LLM continues each transcript (upstream OpenS2S's text_generation.py prompts); the records pair
the audio with the continuation. A rerun finishes a killed run: complete shards are skipped.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_corpus import parse_overrides  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="platform config YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--manifest", help="ASR/SER manifest (JSONL/Parquet); continuation.manifest"
    )
    parser.add_argument("--output", help="root (local path or s3://); continuation.output_uri")
    args = parser.parse_args(argv)

    import ray
    from opens2s.config import ConfigError, load_config
    from opens2s.data.continuation import EmptyContinuationError, build_continuation
    from opens2s.data.continuation_manifest import ManifestError

    overrides = parse_overrides(args.set)
    if args.output:
        overrides["continuation.output_uri"] = args.output
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local")
    try:
        build_continuation(cfg, manifest=args.manifest)
    except (EmptyContinuationError, ManifestError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
