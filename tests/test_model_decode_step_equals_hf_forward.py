"""The lean cached decode step (and its transformers fallback) computes what transformers' own
forward computes over the whole sequence, also for sessions of different lengths in one batch."""

from __future__ import annotations

import pytest
import torch
from opens2s.model import build_model
from opens2s.model import decode_step as decode_step_module
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


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "model-tensors"])
@pytest.mark.parametrize("arch", ["qwen3", "qwen2-bias", "llama"])
def test_lean_step_matches_each_layout_packed_or_not(arch, packed, monkeypatch):
    """Qwen3 (per-head q/k norm), Qwen2 (q/k/v biases) and Llama, with the small-model packed
    weights and with the model's own tensors (what a large model uses)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    dims = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50,
    )
    config = {
        "qwen3": lambda: Qwen3Config(head_dim=16, **dims),
        "qwen2-bias": lambda: Qwen2Config(**dims),  # Qwen2 has q/k/v biases
        "llama": lambda: LlamaConfig(head_dim=16, **dims),
    }[arch]()
    torch.manual_seed(5)
    lm = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "norm" in name or name.endswith("bias"):  # not the trivial init values
                p.add_(0.3 * torch.randn_like(p))
    monkeypatch.setattr(decode_step_module, "PACK_MAX_PARAMETERS", 10**9 if packed else 0)
    assert supports_lean_step(lm)
    seq = torch.randn(11, 64, generator=torch.Generator().manual_seed(3))
    cache = KVBuffer()
    outs = [decode_step(lm, seq[None, :6], [cache])[0]]
    for i in range(6, 11):
        hidden, logits = decode_step(lm, seq[None, i : i + 1], [cache], logits=True)
        outs.append(hidden[0])
    assert lm.__dict__["_opens2s_lean"].packed is packed
    full = lm.base_model(inputs_embeds=seq[None]).last_hidden_state[0]
    torch.testing.assert_close(torch.cat(outs), full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits[0], lm.lm_head(full[-1]), rtol=1e-4, atol=1e-5)


def test_a_new_session_sees_weights_changed_in_place():
    lm = build_model("tiny", seed=4).llm_model
    seq = torch.randn(5, lm.config.hidden_size, generator=torch.Generator().manual_seed(6))
    decode_step(lm, seq[None], [KVBuffer()])  # packs the weights
    with torch.no_grad():
        lm.base_model.layers[1].mlp.up_proj.weight.mul_(1.5)
        lm.base_model.layers[0].input_layernorm.weight.add_(0.2)
    out = decode_step(lm, seq[None], [KVBuffer()])
    torch.testing.assert_close(out[0], _full_forward(lm, seq), rtol=1e-4, atol=1e-5)
