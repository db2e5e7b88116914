"""Benchmark: what one GPU needs to train the opens2s-8b preset, ZeRO-2 / ZeRO-3, with and without
gradient checkpointing (``train.gradient_checkpointing``).

Two parts, each stated as what it is:

- **Activations, measured.** One decoder layer at the real sizes (Qwen3-8B's for the LLM, the TTS
  LM's) runs forward in bf16 on this machine's CPU; every tensor autograd keeps for backward is
  counted (unique storages), once plainly and once under activation checkpointing (the layer
  recomputed in backward, as ``enable_gradient_checkpointing`` sets it up). Per token per layer,
  times the layers and the tokens of a micro-batch. The baseline of the same run is the plain
  layer: ``checkpointed_over_plain_activations`` compares the two.
- **Model states, computed.** The parameter counts of the preset (built on the meta device),
  trainable or frozen per stage, and ZeRO's partitioning: bf16 weights (2 bytes), bf16 gradients
  (2) and fp32 master weights + Adam moments (12) per trainable parameter; ZeRO-2 partitions
  gradients and optimizer state over the GPUs, ZeRO-3 the weights as well (Rajbhandari et al.,
  "ZeRO", SC 2020, section 5; DeepSpeed's ``estimate_zero{2,3}_model_states_mem_needs``). The
  LM head's logits for the loss (bf16 + an fp32 copy) are added per token.

Not counted: allocator fragmentation, communication buckets (~0.5-1 GB with our bucket sizes),
CUDA context (~0.5 GB). The last line is one JSON object.

    python bench/memory_plan.py                       # the 8B finetune plan, ~1-2 min on CPU
    python bench/memory_plan.py --tokens 2048 --micro-batch 2 --gpus 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

_PLATFORM = Path(__file__).resolve().parents[1] / "platform"
if str(_PLATFORM) not in sys.path:
    sys.path.insert(0, str(_PLATFORM))

import torch  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

GB = 1024**3


def saved_bytes_per_token(config, tokens: int, *, checkpointed: bool) -> float:
    """Bytes autograd keeps per token for one decoder layer of ``config`` (bf16, one sample)."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RotaryEmbedding

    torch.manual_seed(0)
    layer = Qwen3DecoderLayer(config, layer_idx=0).to(torch.bfloat16).train()
    rotary = Qwen3RotaryEmbedding(config)
    hidden = torch.randn(1, tokens, config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(tokens)[None]
    cos, sin = rotary(hidden, positions)
    storages: dict[int, int] = {}
    # Weights (and views of them, e.g. a transposed matrix) and the shared rotary tables are kept
    # anyway; the input counts once, below, when it is all a checkpointed layer keeps.
    not_activations = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    not_activations |= {t.untyped_storage().data_ptr() for t in (hidden, cos, sin)}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in not_activations:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    def run(x: torch.Tensor) -> torch.Tensor:
        out = layer(x, attention_mask=None, position_embeddings=(cos, sin), position_ids=positions)
        return out[0] if isinstance(out, tuple) else out

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = checkpoint(run, hidden, use_reentrant=False) if checkpointed else run(hidden)
    out.float().sum().backward()  # the backward runs: what was kept is what it needed
    kept = sum(storages.values())
    if checkpointed:
        kept += hidden.numel() * hidden.element_size()  # the layer input is what is kept
    return kept / tokens


def model_state_gb(trainable: int, frozen: int, gpus: int, zero: int) -> float:
    """Per-GPU bytes of weights, gradients and optimizer state (see module docstring)."""
    weights = 2 * (trainable + frozen)
    grads, optim = 2 * trainable, 12 * trainable
    if zero == 2:
        return (weights + (grads + optim) / gpus) / GB
    if zero == 3:
        return ((weights + grads + optim) / gpus) / GB
    raise ValueError(f"zero stage {zero}: expected 2 or 3")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1024, help="LLM positions per sample")
    p.add_argument("--tts-tokens", type=int, default=768, help="TTS LM positions per sample")
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--gpus", default="8,16", help="GPU counts to plan for (comma-separated)")
    p.add_argument("--measure-tokens", type=int, default=256, help="tokens of the measured layer")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from opens2s.model import build_model
    from opens2s.train.stages import TRAINABLE_PREFIXES

    t0 = time.perf_counter()
    model = build_model("opens2s-8b", device="meta")
    counts = {n: p.numel() for n, p in model.named_parameters()}
    llm_cfg, tts_cfg = model.config.llm_config, model.config.tts_lm_config
    per_token = {}
    for name, cfg in (("llm", llm_cfg), ("tts_lm", tts_cfg)):
        plain = saved_bytes_per_token(cfg, args.measure_tokens, checkpointed=False)
        ckpt = saved_bytes_per_token(cfg, args.measure_tokens, checkpointed=True)
        per_token[name] = {"plain": plain, "checkpointed": ckpt}

    samples = args.micro_batch
    llm_layers, tts_layers = llm_cfg.num_hidden_layers, tts_cfg.num_hidden_layers
    logits = 6 * samples * (args.tokens * llm_cfg.vocab_size + args.tts_tokens * tts_cfg.vocab_size)
    plans = {}
    for stage in ("align", "finetune"):
        prefixes = TRAINABLE_PREFIXES[stage]
        trainable = sum(n for k, n in counts.items() if k.startswith(prefixes))
        frozen = sum(counts.values()) - trainable
        for ckpt in (False, True):
            key = "checkpointed" if ckpt else "plain"
            # Activations are kept where gradients flow: the LLM's layers (finetune trains it,
            # align's adapter needs gradients through it) and the TTS LM's.
            acts = samples * (
                llm_layers * args.tokens * per_token["llm"][key]
                + tts_layers * args.tts_tokens * per_token["tts_lm"][key]
            )
            if ckpt:  # backward recomputes one layer at a time: its activations, transiently
                acts += samples * args.tokens * per_token["llm"]["plain"]
            for gpus in (int(g) for g in args.gpus.split(",")):
                for zero in (2, 3):
                    states = model_state_gb(trainable, frozen, gpus, zero)
                    name = f"{stage}_{gpus}gpu_zero{zero}_{'ckpt' if ckpt else 'plain'}"
                    plans[name] = {
                        "model_states_gb": round(states, 2),
                        "activations_gb": round(acts / GB, 2),
                        "logits_gb": round(logits / GB, 2),
                        "total_gb": round(states + (acts + logits) / GB, 2),
                    }
        plans[f"{stage}_trainable_params"] = trainable

    llm = per_token["llm"]
    result = {
        "preset": "opens2s-8b",
        "gpus": [int(g) for g in args.gpus.split(",")],
        "micro_batch": samples,
        "llm_tokens": args.tokens,
        "tts_tokens": args.tts_tokens,
        "measured_on": "cpu bf16, one layer at real size",
        "llm_layer_kib_per_token": {k: round(v / 1024, 1) for k, v in llm.items()},
        "tts_layer_kib_per_token": {k: round(v / 1024, 1) for k, v in per_token["tts_lm"].items()},
        "checkpointed_over_plain_activations": round(llm["checkpointed"] / llm["plain"], 4),
        "plans": plans,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for name, plan in plans.items():
        if isinstance(plan, dict):
            print(f"{name:28s} {plan}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
