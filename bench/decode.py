"""Streaming decode vs OpenS2S's reference loop vs pure forwards, same weights, same prompt.

(a) ``StreamingDecoder``: prefill once, one forward per text token / unit, events as produced.
(b) baseline, as OpenS2S's ``generate(units_gen=True)`` does it: HF ``generate`` for every
    ``t`` text tokens (LLM) and every ``s`` units (TTS LM), passing ``past_key_values`` back in,
    with the TTS input re-concatenated each round; a unit chunk is out when its generate returns.
(c) pure forward: the bare cached one-position forward + head one step of (a) runs, timed alone
    (``decode_step``, the forward (a) uses; transformers' own forward is reported beside it).

Prints progress lines, then one JSON object on its last line: ``ttfa_ratio`` (a / b time to first
unit chunk), ``throughput_ratio`` (a / b units per second), ``overhead_ratio`` (a's time per step
over the time inside its model forwards in the same run; the standalone (c) figures beside it),
plus the raw figures. The three run interleaved, repeat by repeat; ratios are medians of
per-repeat ratios (a shared machine's load drifts between repeats, less within one). Text and unit budgets are fixed and end tokens are disabled in all
three, so each produces the same number of tokens and units.

Usage: ``python bench/decode.py [--preset tiny] [--units 256] [--text 64] [--repeats 3]``
(``--preset opens2s-8b --device cuda --dtype bfloat16`` on a GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from opens2s.model import build_model, build_tokenizer, streaming  # noqa: E402
from opens2s.model.decode_step import KVBuffer, decode_step  # noqa: E402
from opens2s.model.streaming import SamplingParams, StreamingDecoder, UnitChunk  # noqa: E402
from transformers import DynamicCache, GenerationConfig  # noqa: E402

# On CPU the default clock is the process's CPU time: with OMP_NUM_THREADS=1 it equals wall time
# on an idle machine, and it does not count the time other programs hold the cores (this shared
# 2-core machine runs at load 15-45). On a GPU it is wall time (kernels run asynchronously).
clock = time.process_time


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_streaming(dec: StreamingDecoder, prompt, spk, n_text: int, n_units: int, device: str):
    """Time to first unit chunk, total time, units, steps for the streaming decoder; also the
    time spent inside its model forwards (``decode_step``), measured in the same run."""
    sampling = SamplingParams(max_text_tokens=n_text, max_units=n_units)
    forward_s = [0.0]

    def timed_step(lm, x, caches, **kw):
        sync(device)
        t = clock()
        out = decode_step(lm, x, caches, **kw)
        sync(device)
        forward_s[0] += clock() - t
        return out

    streaming.decode_step = timed_step  # instrumentation only: the real step runs inside
    sync(device)
    t0 = clock()
    state = dec.start(prompt_embeds=prompt, speaker_embedding=spk, sampling=sampling)
    ttfa, units, steps = None, 0, 0
    while not state.done:
        events = dec.step([state])
        steps += 1
        got = sum(len(e.units) for e in events[0] if isinstance(e, UnitChunk))
        if got and ttfa is None:
            sync(device)
            ttfa = clock() - t0
        units += got
    sync(device)
    total = clock() - t0
    streaming.decode_step = decode_step
    return {
        "ttfa_s": ttfa,
        "total_s": total,
        "units": units,
        "steps": steps,
        "forward_s": forward_s[0],
    }


@torch.no_grad()
def run_baseline(model, prompt, spk_slot, n_text: int, n_units: int, device: str):
    """OpenS2S's reference loop (modeling_omnispeech.generate with units_gen=True), greedy."""
    t_span, s_span = model.text_span, model.speech_span
    # No end tokens: the same fixed budgets as the streaming run.
    gen = GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=0)
    tts_gen = GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=0)
    llm, tts = model.llm_model, model.tts_lm_model
    sync(device)
    t0 = clock()
    inputs_embeds = prompt[None]
    tts_inputs = [spk_slot[None]]
    llm_past = tts_past = None
    text_left, units_left = n_text, n_units
    ttfa, units, first = None, 0, True
    while True:
        gen.max_new_tokens = min(t_span, text_left)
        out = llm.generate(
            inputs_embeds=inputs_embeds,
            generation_config=gen,
            return_dict_in_generate=True,
            output_hidden_states=True,
            past_key_values=llm_past,
        )
        llm_past = out.past_key_values
        n = out.sequences.shape[1]
        text_left -= n
        finished = text_left < 1
        inputs_embeds = torch.cat([inputs_embeds, llm.get_input_embeddings()(out.sequences)], 1)
        hs = out.hidden_states
        if first:
            chunk = [hs[0][-1][:, -1:]] + [hs[i][-1] for i in range(len(hs) - n + 1, len(hs))]
            first = False
        else:
            chunk = [hs[i][-1] for i in range(len(hs) - n, len(hs))]
        tts_inputs.append(model.text_to_tts(torch.cat(chunk, 1)))
        tts_gen.max_new_tokens = units_left if finished else min(s_span, units_left)
        if tts_gen.max_new_tokens < 1:
            break
        tts_out = tts.generate(
            inputs_embeds=torch.cat(tts_inputs, 1),
            generation_config=tts_gen,
            past_key_values=tts_past,
            return_dict_in_generate=True,
        )
        tts_past = tts_out.past_key_values
        got = tts_out.sequences.shape[1]
        if ttfa is None and got:
            sync(device)
            ttfa = clock() - t0
        units += got
        units_left -= got
        tts_inputs.append(tts.get_input_embeddings()(tts_out.sequences))
        if finished or units_left < 1:
            break
    sync(device)
    return {"ttfa_s": ttfa, "total_s": clock() - t0, "units": units}


@torch.no_grad()
def pure_forward_step(model, prompt, n_text: int, n_units: int, device: str, reps: int = 30):
    """Median time of the bare cached one-position forward + head a streaming step runs, for the
    LLM and the TTS LM, weighted like the streaming run (text steps: LLM, unit steps: TTS).
    Both the forward the decoder uses (``decode_step``) and transformers' own are timed."""
    times = {}
    for name, lm, ctx in (
        ("llm", model.llm_model, prompt.shape[0] + n_text // 2),
        ("tts", model.tts_lm_model, n_units // 2 + n_text // 2),
    ):
        hidden = lm.config.hidden_size
        x = torch.randn(1, ctx, hidden, device=device, dtype=prompt.dtype)
        one = torch.randn(1, 1, hidden, device=device, dtype=prompt.dtype)
        head = lm.get_output_embeddings()
        kv = KVBuffer()
        decode_step(lm, x, [kv])
        hf_cache = DynamicCache()
        lm.base_model(inputs_embeds=x, cache=hf_cache, use_cache=True)
        lean, hf = [], []
        for _ in range(reps):
            kv.length = ctx  # overwrite the same slot: a fixed context length
            sync(device)
            t0 = clock()
            decode_step(lm, one, [kv], logits=True)
            sync(device)
            lean.append(clock() - t0)
            c = DynamicCache(ddp_cache_data=[(ly.keys, ly.values) for ly in hf_cache.layers])
            pos = torch.tensor([[ctx]], device=device)
            sync(device)
            t0 = clock()
            out = lm.base_model(inputs_embeds=one, position_ids=pos, cache=c, use_cache=True)
            head(out.last_hidden_state[:, -1])
            sync(device)
            hf.append(clock() - t0)
        times[name] = statistics.median(lean)
        times[name + "_hf"] = statistics.median(hf)
    steps = n_text + n_units

    def mix(suffix: str) -> float:
        return (times["llm" + suffix] * n_text + times["tts" + suffix] * n_units) / steps

    return mix(""), mix("_hf"), times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--text", type=int, default=64, help="text tokens per answer")
    p.add_argument("--units", type=int, default=256, help="units per answer")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--clock", choices=["cpu", "wall"], default=None, help="default: cpu on CPU, wall on GPU"
    )
    args = p.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    global clock
    kind = args.clock or ("wall" if args.device.startswith("cuda") else "cpu")
    clock = time.perf_counter if kind == "wall" else time.process_time
    dtype = getattr(torch, args.dtype)

    model = build_model(args.preset, device=args.device, dtype=dtype)
    tok = build_tokenizer("tiny")  # the prompt's layout; any ids work for timing
    dec = StreamingDecoder(model, tok)
    # Fixed budgets: no end token and no end of speech in any of the three runs.
    dec.end_tokens = set()
    dec.unit_stops = frozenset()
    model.config.audio_token_id = tok.convert_tokens_to_ids("<|im_audio|>")
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    prompt = dec.prompt_embeds(wave)
    spk_slot = dec.speaker_embeds(None)
    print(
        f"preset {args.preset} on {args.device} ({args.dtype}); prompt {prompt.shape[0]} "
        f"positions; {args.text} text tokens, {args.units} units",
        flush=True,
    )

    stream, base, pure = [], [], []
    run_streaming(dec, prompt, None, 8, 16, args.device)  # warm-up
    run_baseline(model, prompt, spk_slot, 8, 16, args.device)
    # The three are interleaved per repeat and compared within it: this machine's load drifts.
    for r in range(args.repeats):
        stream.append(run_streaming(dec, prompt, None, args.text, args.units, args.device))
        base.append(run_baseline(model, prompt, spk_slot, args.text, args.units, args.device))
        pure.append(pure_forward_step(model, prompt, args.text, args.units, args.device))
        print(f"repeat {r}: streaming {stream[-1]}, baseline {base[-1]}", flush=True)

    def med(values):
        return statistics.median(values)

    s_ttfa, b_ttfa = med(r["ttfa_s"] for r in stream), med(r["ttfa_s"] for r in base)
    s_ups = med(r["units"] / r["total_s"] for r in stream)
    b_ups = med(r["units"] / r["total_s"] for r in base)
    s_step = med(r["total_s"] / r["steps"] for r in stream)
    pure_step, hf_step = med(p[0] for p in pure), med(p[1] for p in pure)
    parts = {k: med(p[2][k] for p in pure) for k in pure[0][2]}
    ratio = {
        "ttfa": med(s["ttfa_s"] / b["ttfa_s"] for s, b in zip(stream, base, strict=True)),
        "throughput": med(
            (s["units"] / s["total_s"]) / (b["units"] / b["total_s"])
            for s, b in zip(stream, base, strict=True)
        ),
        # Step time over the time inside the model forwards of the same run (load-independent).
        "overhead": med(s["total_s"] / s["forward_s"] for s in stream),
        "overhead_standalone": med(
            s["total_s"] / s["steps"] / p[0] for s, p in zip(stream, pure, strict=True)
        ),
        "overhead_hf": med(
            s["total_s"] / s["steps"] / p[1] for s, p in zip(stream, pure, strict=True)
        ),
    }
    result = {
        "preset": args.preset,
        "device": args.device,
        "dtype": args.dtype,
        "clock": kind,
        "text_tokens": args.text,
        "units": args.units,
        "ttfa_ratio": round(ratio["ttfa"], 4),
        "throughput_ratio": round(ratio["throughput"], 3),
        "overhead_ratio": round(ratio["overhead"], 3),
        "streaming_ttfa_ms": round(s_ttfa * 1000, 2),
        "baseline_ttfa_ms": round(b_ttfa * 1000, 2),
        "streaming_units_per_s": round(s_ups, 1),
        "baseline_units_per_s": round(b_ups, 1),
        "streaming_step_ms": round(s_step * 1000, 3),
        "pure_forward_step_ms": round(pure_step * 1000, 3),
        "hf_forward_step_ms": round(hf_step * 1000, 3),
        "overhead_ratio_vs_standalone_forward": round(ratio["overhead_standalone"], 3),
        "overhead_ratio_vs_hf_forward": round(ratio["overhead_hf"], 3),
        "pure_llm_step_ms": round(parts["llm"] * 1000, 3),
        "pure_tts_step_ms": round(parts["tts"] * 1000, 3),
        "streaming_units": stream[0]["units"],
        "baseline_units": base[0]["units"],
        "repeats": args.repeats,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
