"""Serving benchmark: time to first audio and real-time factor of one model replica.

One in-process replica (the same ``SpeechStack`` + ``BatchedDecodeLoop`` a Serve replica runs,
tiny weights, one torch thread) answers 1, 2, 4, 8 and 16 concurrent turns; then single turns
with OpenS2S's fixed 24-unit vocoder blocks and with decode-everything-then-vocode, on the same
weights and the same input. TTFA is from the turn reaching the replica to its first audio chunk;
RTF is a response's wall time over its audio duration (< 1: faster than playback); a level
counts as real time when the 95th percentile RTF of its answers is below 1. TTFA after prefill
(first audio minus the prompt's prefill) isolates what the block schedule changes. CPU seconds
per audio second (process time) give the capacity of one dedicated core, which the wall-clock
numbers cannot on a shared, loaded machine. ``playback_stalls`` counts answers whose playback,
started at the first chunk, would have run dry before a later chunk arrived, and
``playout_buffer_ms_p95`` is how long a client must buffer before playing for 95% of the answers
to play without a gap.

Usage: ``python bench/serve.py [--repeats N]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
from opens2s.serving.speech_stack import (  # noqa: E402
    DEMO_SENTENCES,
    FIRST_BLOCK_GRIFFIN_LIM_ITERS,
    load_speech_stack,
)

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
        done, t0, played, late = None, None, 0.0, 0.0
        async for ev in loop.respond(req):
            if ev["type"] == "response.audio.delta":
                now = time.perf_counter()
                t0 = now if t0 is None else t0
                # a chunk that arrives after the audio before it has finished playing is a gap;
                # a client that waits `late` seconds before starting playback never hears one
                late = max(late, now - (t0 + played))
                played += ev["samples"] / ev["sample_rate"]
            if ev["type"] == "response.done":
                done = ev
        done["stalled"] = late > 0
        done["playout_buffer_ms"] = late * 1000
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

    def run(n: int, blocks: VocoderBlocks | None, seed0: int) -> list[dict]:
        sizes0 = len(loop.batch_sizes)
        cpu0 = time.process_time()
        dones = asyncio.run(run_turns(loop, wave, n, blocks, seed0))
        cpu = time.process_time() - cpu0
        batches = loop.batch_sizes[sizes0:]
        for d in dones:
            d["mean_batch"] = float(np.mean(batches)) if batches else 0.0
            d["cpu_s"] = cpu / len(dones)  # the round's CPU time, shared out per answer
        return dones

    def summary(n: int, dones: list[dict]) -> dict:
        ttfa = [d["model_ttfa_ms"] for d in dones if d["model_ttfa_ms"] is not None]
        after = [d["model_ttfa_ms"] - d["prefill_ms"] for d in dones if d["model_ttfa_ms"]]
        rtf = [d["rtf"] for d in dones if d["rtf"] is not None]
        return {
            "sessions": n,
            "responses": len(dones),
            "ttfa_ms_p50": pct(ttfa, 50),
            "ttfa_ms_p95": pct(ttfa, 95),
            "ttfa_ms_min": round(min(ttfa), 2),
            "prefill_ms_p50": pct([d["prefill_ms"] for d in dones], 50),
            "ttfa_after_prefill_ms_p50": pct(after, 50),
            "rtf_p50": pct(rtf, 50),
            "rtf_p95": pct(rtf, 95),
            "rtf_max": round(max(rtf), 3),
            "audio_s_mean": round(float(np.mean([d["audio_seconds"] for d in dones])), 2),
            # answers whose playback, started at the first chunk, would have had to wait
            "playback_stalls": sum(d["stalled"] for d in dones),
            # how long a client must buffer before playing so that none of these answers gaps
            "playout_buffer_ms_p95": pct([d["playout_buffer_ms"] for d in dones], 95),
            "mean_batch": round(float(np.mean([d["mean_batch"] for d in dones])), 2),
            # CPU seconds this process spent per second of audio it produced: independent of
            # how many other programs share the cores, unlike the wall-clock RTF.
            "cpu_s_per_audio_s": round(
                sum(d["cpu_s"] for d in dones) / sum(d["audio_seconds"] for d in dones), 4
            ),
        }

    run(1, None, 0)  # warm-up: first forward passes allocate
    # This machine is shared and its load drifts: every round runs every configuration once,
    # so drift spreads over all of them instead of favouring whichever ran in a quiet minute.
    per_level: dict[int, list[dict]] = {n: [] for n in CONCURRENCY}
    schedules = {
        "growing": None,
        "fixed_24": VocoderBlocks(schedule="fixed", fixed_units=24),
        "decode_then_vocode": VocoderBlocks(schedule="whole"),
    }
    per_schedule: dict[str, list[dict]] = {k: [] for k in schedules}
    # A turn's prefill runs slower after a turn that vocoded a lot (colder caches): a fixed order
    # would always put the same schedule after decode-then-vocode, so the orders cycle.
    orders = itertools.cycle(itertools.permutations(schedules))
    for r in range(args.repeats):
        for n in CONCURRENCY:
            per_level[n] += run(n, None, 1000 * r + 100 * n)
        for k in range(3):
            for name in next(orders):
                per_schedule[name] += run(1, schedules[name], 1000 * r + k)
    table = [summary(n, per_level[n]) for n in CONCURRENCY]
    single = {name: summary(1, dones) for name, dones in per_schedule.items()}
    for row in table:
        print(json.dumps(row), flush=True)
    for name, row in single.items():
        print(json.dumps({"single_session_schedule": name, **row}), flush=True)
    growing, fixed, whole = single["growing"], single["fixed_24"], single["decode_then_vocode"]
    # the most sessions such that every level up to it is real time (p95 RTF < 1)
    realtime = 0
    for r in table:
        if r["rtf_p95"] >= 1.0:
            break
        realtime = r["sessions"]
    # Sessions one dedicated core sustains: n sessions need n x (CPU s per audio s) < 1.
    per_core = max(
        [r["sessions"] for r in table if r["sessions"] * r["cpu_s_per_audio_s"] < 1.0], default=0
    )
    a = cfg.audio
    result = {
        "ttfa_ratio_vs_fixed_blocks": round(growing["ttfa_ms_p50"] / fixed["ttfa_ms_p50"], 3),
        "ttfa_ratio_vs_decode_then_vocode": round(growing["ttfa_ms_p50"] / whole["ttfa_ms_p50"], 3),
        # best of all runs: the least disturbed by other programs on a shared machine
        "ttfa_ratio_vs_fixed_blocks_best": round(growing["ttfa_ms_min"] / fixed["ttfa_ms_min"], 3),
        "ttfa_after_prefill_ratio_vs_fixed_blocks": round(
            growing["ttfa_after_prefill_ms_p50"] / fixed["ttfa_after_prefill_ms_p50"], 3
        ),
        "realtime_sessions_per_replica": realtime,
        "realtime_sessions_per_core_by_cpu_time": per_core,
        # the client-side buffer that keeps answers gap-free at that many sessions
        "playout_buffer_ms_p95_at_realtime": next(
            (r["playout_buffer_ms_p95"] for r in table if r["sessions"] == realtime), None
        ),
        "ttfa_ms_growing_p50": growing["ttfa_ms_p50"],
        "ttfa_ms_fixed24_p50": fixed["ttfa_ms_p50"],
        "ttfa_ms_decode_then_vocode_p50": whole["ttfa_ms_p50"],
        "prefill_ms_p50": growing["prefill_ms_p50"],
        "per_concurrency": table,
        "schedule": f"growing: first {a.vocoder_first_block_units} units "
        f"({FIRST_BLOCK_GRIFFIN_LIM_ITERS} Griffin-Lim iterations, then {a.griffin_lim_iters}; "
        f"overlap {a.vocoder_first_overlap_units}), then {a.vocoder_second_block_units}, x2 up "
        f"to {a.vocoder_max_block_units}, overlap {a.vocoder_overlap_units}",
        "vocoder_sample_rate": loop.sample_rate,
        "max_units": args.max_units,
        "repeats": args.repeats,
        "torch_threads": 1,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "setup_s": round(setup_s, 1),
        "model": stack.description,
    }
    loop.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
