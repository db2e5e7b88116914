"""The lean cached decode step (and its transformers fallback) computes what transformers' own
forward computes over the whole sequence, also for sessions of different lengths in one batch."""

from __future__ import annotations

import torch
from opens2s.model import build_model
from opens2s.model.decode_step import KVBuffer, decode_step, hf_step, supports_lean_step


def _full_forward(lm, x):
    return lm.base_model(inputs_embeds=x[None]).last_hidden_state[0]


def test_lean_and_hf_steps_match_the_full_forward_for_batched_sessions():
    lm = build_model("tiny", seed=4).llm_model
    assert supports_lean_step(lm)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randn(n, lm.config.hidden_size, generator=g) for n in (7, 19)]
    for step in (decode_step, hf_step):
        caches = [KVBuffer(), KVBuffer()]
        # Prefill each session alone (different lengths), then 3 joint steps of 2 positions.
        for seq, cache in zip(seqs, caches, strict=True):
            step(lm, seq[None, :-6], [cache])
        for k in range(3):
            new = torch.stack([seq[-6 + 2 * k : len(seq) - 4 + 2 * k] for seq in seqs])
            out = step(lm, new, caches)
        for i, seq in enumerate(seqs):
            assert caches[i].length == len(seq)
            torch.testing.assert_close(out[i], _full_forward(lm, seq)[-2:], rtol=1e-4, atol=1e-5)


def test_kv_buffer_grows_without_losing_the_past():
    lm = build_model("tiny", seed=4).tts_lm_model
    seq = torch.randn(150, lm.config.hidden_size, generator=torch.Generator().manual_seed(1))
    cache = KVBuffer()
    outs = [decode_step(lm, seq[None, :1], [cache])]
    for i in range(1, 150):  # crosses the initial capacity (64) and one doubling
        outs.append(decode_step(lm, seq[None, i : i + 1], [cache]))
    torch.testing.assert_close(
        torch.cat([o[0] for o in outs]), _full_forward(lm, seq), rtol=1e-4, atol=1e-5
    )


def test_an_unmerged_lora_layer_takes_the_hf_path_and_counts():
    from peft import LoraConfig, inject_adapter_in_model

    lm = build_model("tiny", seed=4).llm_model
    lm = inject_adapter_in_model(LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), lm)
    for name, p in lm.named_parameters():
        if "lora_B" in name:  # zero at init: make the adapter change the output
            torch.nn.init.normal_(p, std=0.5)
    assert not supports_lean_step(lm)
    seq = torch.randn(9, lm.config.hidden_size, generator=torch.Generator().manual_seed(2))
    out = decode_step(lm, seq[None], [KVBuffer()])
    torch.testing.assert_close(out[0], _full_forward(lm, seq), rtol=1e-4, atol=1e-5)
