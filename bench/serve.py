"""Serving benchmark: time to first audio and real-time factor of one model replica.

One in-process replica (the same ``SpeechStack`` + ``BatchedDecodeLoop`` a Serve replica runs,
tiny weights, one torch thread) answers 1, 2, 4, 8 and 16 concurrent turns; then single turns
with OpenS2S's fixed 24-unit vocoder blocks and with decode-everything-then-vocode, on the same
weights and the same input. TTFA is from the turn reaching the replica to its first audio chunk;
RTF is a response's wall time over its audio duration (< 1: faster than playback).

Usage: ``python bench/serve.py [--repeats N]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from opens2s.config import load_config  # noqa: E402
from opens2s.config.serve import VocoderBlocks  # noqa: E402
from opens2s.serving.decode_loop import BatchedDecodeLoop, TurnRequest  # noqa: E402
from opens2s.serving.speech_stack import DEMO_SENTENCES, load_speech_stack  # noqa: E402

CONCURRENCY = (1, 2, 4, 8, 16)


def question() -> np.ndarray:
    from opens2s.audio.io import resample
    from opens2s.audio.tts import EspeakTTS

    tts = EspeakTTS()
    wave, sr = tts.synthesize(DEMO_SENTENCES[0], tts.speakers()[0])
    return resample(wave, sr, 16000)


async def run_turns(
    loop: BatchedDecodeLoop, wave: np.ndarray, n: int, blocks: VocoderBlocks | None, seed0: int
) -> list[dict]:
    async def one(i: int) -> dict:
        req = TurnRequest(
            response_id=f"r{i}",
            audio=wave,
            system_prompt="You are a helpful assistant.",
            sampling={"seed": seed0 + i},
            blocks=blocks,
        )
        done = None
        async for ev in loop.respond(req):
            if ev["type"] == "response.done":
                done = ev
        return done

    return await asyncio.gather(*(one(i) for i in range(n)))


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs), q)), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="rounds per concurrency level")
    ap.add_argument("--max-units", type=int, default=150, help="units per answer (6 s at 25/s)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    cfg = load_config(None, {"serve.sampling.max_units": args.max_units})
    t0 = time.perf_counter()
    stack = load_speech_stack(cfg)
    setup_s = time.perf_counter() - t0
    loop = BatchedDecodeLoop(
        stack.start, stack.step, stack.vocoder_for, cfg.serve.vocoder_blocks, max_batch=64
    )
    wave = question()

    def measure(n: int, blocks: VocoderBlocks | None, repeats: int) -> dict:
        dones = []
        steps0 = loop.steps
        sizes0 = len(loop.batch_sizes)
        for r in range(repeats):
            dones += asyncio.run(run_turns(loop, wave, n, blocks, seed0=100 * r))
        ttfa = [d["model_ttfa_ms"] for d in dones if d["model_ttfa_ms"] is not None]
        rtf = [d["rtf"] for d in dones if d["rtf"] is not None]
        batch = loop.batch_sizes[sizes0:]
        return {
            "sessions": n,
            "responses": len(dones),
            "ttfa_ms_p50": pct(ttfa, 50),
            "ttfa_ms_p95": pct(ttfa, 95),
            "rtf_p50": pct(rtf, 50),
            "rtf_p95": pct(rtf, 95),
            "rtf_max": round(max(rtf), 3),
            "audio_s_mean": round(float(np.mean([d["audio_seconds"] for d in dones])), 2),
            "decode_steps": loop.steps - steps0,
            "mean_batch": round(float(np.mean(batch)), 2) if batch else 0.0,
        }

    measure(1, None, 1)  # warm-up: first forward passes allocate
    table = []
    for n in CONCURRENCY:
        row = measure(n, None, args.repeats)
        table.append(row)
        print(json.dumps(row), flush=True)
    growing = measure(1, None, 2 * args.repeats)
    fixed = measure(1, VocoderBlocks(schedule="fixed", fixed_units=24), 2 * args.repeats)
    whole = measure(1, VocoderBlocks(schedule="whole"), 2 * args.repeats)
    for name, row in (("growing", growing), ("fixed_24", fixed), ("whole", whole)):
        print(json.dumps({"single_session_schedule": name, **row}), flush=True)
    realtime = max([r["sessions"] for r in table if r["rtf_max"] < 1.0], default=0)
    a = cfg.audio
    result = {
        "ttfa_ratio_vs_fixed_blocks": round(growing["ttfa_ms_p50"] / fixed["ttfa_ms_p50"], 3),
        "ttfa_ratio_vs_decode_then_vocode": round(growing["ttfa_ms_p50"] / whole["ttfa_ms_p50"], 3),
        "realtime_sessions_per_replica": realtime,
        "ttfa_ms_growing_p50": growing["ttfa_ms_p50"],
        "ttfa_ms_fixed24_p50": fixed["ttfa_ms_p50"],
        "ttfa_ms_decode_then_vocode_p50": whole["ttfa_ms_p50"],
        "per_concurrency": table,
        "schedule": f"growing: first {a.vocoder_first_block_units} units, x2 up to "
        f"{a.vocoder_max_block_units}, overlap {a.vocoder_overlap_units}",
        "vocoder_sample_rate": loop.sample_rate,
        "max_units": args.max_units,
        "torch_threads": 1,
        "setup_s": round(setup_s, 1),
        "model": stack.description,
    }
    loop.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
