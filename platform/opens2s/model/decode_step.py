"""One cached forward of a decoder-only LM for decoding: KV buffers and a lean step.

The streaming decoder runs thousands of one-position forwards; transformers' generic forward
spends most of such a step in Python (mask building, output capture, cache objects). For the
Qwen2 / Qwen3 / Llama layout this module runs the same math straight on the model's own modules
(norms, projections, rotary, MLP) with ``scaled_dot_product_attention``; any other architecture
goes through the HF forward with a ``DynamicCache`` built from the buffers. Both write into a
:class:`KVBuffer` that grows by doubling, so appending a position never copies the past.

Sessions stepped together share every projection and MLP matmul (batched over sessions); the
attention runs per session over its own cache, so caches of different lengths need no padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

LEAN_MODEL_TYPES = ("qwen3", "qwen2", "llama")


class KVBuffer:
    """Keys and values of one session in one LM: per layer ``1 x kv_heads x capacity x head_dim``;
    the first ``length`` positions are valid."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write ``k``/``v`` (``1 x kvh x n x hd``) after the valid positions of ``layer``; the
        caller advances ``length`` once all layers are written."""
        n = k.shape[2]
        if layer == len(self.keys):
            cap = max(64, 2 * (self.length + n))
            self.keys.append(k.new_zeros(1, k.shape[1], cap, k.shape[3]))
            self.values.append(v.new_zeros(1, v.shape[1], cap, v.shape[3]))
        if self.length + n > self.keys[layer].shape[2]:
            cap = 2 * (self.length + n)
            for store in (self.keys, self.values):
                old = store[layer]
                grown = old.new_zeros(1, old.shape[1], cap, old.shape[3])
                grown[:, :, : self.length] = old[:, :, : self.length]
                store[layer] = grown
        self.keys[layer][:, :, self.length : self.length + n] = k
        self.values[layer][:, :, self.length : self.length + n] = v

    def layer(self, layer: int, extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the valid (plus ``extra`` just written) keys and values of ``layer``."""
        end = self.length + extra
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def supports_lean_step(lm: nn.Module) -> bool:
    """True for a causal LM of the Qwen2/Qwen3/Llama layout with full attention everywhere and
    plain linear projections (an injected, unmerged LoRA layer needs the HF path)."""
    config = lm.config
    if config.model_type not in LEAN_MODEL_TYPES:
        return False
    if (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default") != "default":
        return False
    if not all(t == "full_attention" for t in getattr(config, "layer_types", None) or []):
        return False
    for layer in lm.base_model.layers:
        a, m = layer.self_attn, layer.mlp
        projections = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
        if any(type(p) is not nn.Linear for p in projections):
            return False
    return True


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


@dataclass(frozen=True)
class _Layer:
    """One decoder layer's tensors, read once (module attribute access costs more than the math
    at one position). They are the model's own parameters, so in-place updates are seen."""

    ln1: torch.Tensor
    q: tuple[torch.Tensor, torch.Tensor | None]
    k: tuple[torch.Tensor, torch.Tensor | None]
    v: tuple[torch.Tensor, torch.Tensor | None]
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    o: tuple[torch.Tensor, torch.Tensor | None]
    ln2: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor


class LeanLM:
    """The body of a Qwen2/Qwen3/Llama causal LM as plain tensor math for cached decoding."""

    def __init__(self, lm: nn.Module) -> None:
        if not supports_lean_step(lm):
            raise ValueError(f"{lm.config.model_type}: the lean step supports {LEAN_MODEL_TYPES}")
        body = lm.base_model
        config = lm.config
        attn0 = body.layers[0].self_attn
        self.head_dim = attn0.head_dim
        self.scaling = attn0.scaling
        self.eps = config.rms_norm_eps
        self.act = body.layers[0].mlp.act_fn
        self.inv_freq = body.rotary_emb.inv_freq
        self.rope_scale = body.rotary_emb.attention_scaling
        self.cos_table = self.sin_table = None  # positions x hd, built on demand, doubling
        self.norm = body.norm.weight
        head = lm.get_output_embeddings()
        self.head = (head.weight, head.bias)

        def lin(m: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
            return m.weight, m.bias

        self.layers = []
        for layer in body.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(
                _Layer(
                    layer.input_layernorm.weight,
                    lin(a.q_proj),
                    lin(a.k_proj),
                    lin(a.v_proj),
                    a.q_norm.weight if hasattr(a, "q_norm") else None,
                    a.k_norm.weight if hasattr(a, "k_norm") else None,
                    lin(a.o_proj),
                    layer.post_attention_layernorm.weight,
                    m.gate_proj.weight,
                    m.up_proj.weight,
                    m.down_proj.weight,
                )
            )

    def _rope(
        self, caches: list[KVBuffer], n: int, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin ``B x 1 x n x hd`` of each session's next ``n`` positions, from a table."""
        end = max(c.length for c in caches) + n
        if (
            self.cos_table is None
            or self.cos_table.shape[0] < end
            or (self.cos_table.dtype != x.dtype or self.cos_table.device != x.device)
        ):
            size = max(256, 2 * end)
            freqs = torch.arange(size, device=x.device).float()[:, None] * self.inv_freq.to(
                x.device
            )
            emb = torch.cat((freqs, freqs), dim=-1)
            self.cos_table = (emb.cos() * self.rope_scale).to(x.dtype)
            self.sin_table = (emb.sin() * self.rope_scale).to(x.dtype)
        if len(caches) == 1:
            start = caches[0].length
            return (
                self.cos_table[start : start + n][None, None],
                self.sin_table[start : start + n][None, None],
            )
        index = torch.stack([torch.arange(c.length, c.length + n) for c in caches]).to(x.device)
        return self.cos_table[index][:, None], self.sin_table[index][:, None]

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # As transformers' RMSNorm (statistics in float32); F.rms_norm is several times slower
        # than these few ops on CPU at one position.
        if x.dtype == torch.float32:
            return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * y.to(x.dtype)

    def __call__(self, x: torch.Tensor, caches: list[KVBuffer]) -> torch.Tensor:
        """Run ``B x n x D`` new input embeddings (one row per session), appending to each
        session's cache; returns the last-layer states after the final norm."""
        b, n, _ = x.shape
        hd = self.head_dim
        cos, sin = self._rope(caches, n, x)
        masks: dict[int, torch.Tensor] = {}  # by past length: sessions may differ
        h = x
        for i, w in enumerate(self.layers):
            y = self._rms(h, w.ln1)
            q = F.linear(y, *w.q).view(b, n, -1, hd)
            k = F.linear(y, *w.k).view(b, n, -1, hd)
            v = F.linear(y, *w.v).view(b, n, -1, hd).transpose(1, 2)
            if w.q_norm is not None:  # Qwen3 normalises each head before the rotary embedding
                q, k = self._rms(q, w.q_norm), self._rms(k, w.k_norm)
            # One rotation for queries and keys together (fewer small ops per step).
            heads = q.shape[2]
            qk = _rotate(torch.cat((q, k), dim=2).transpose(1, 2), cos, sin)
            q, k = qk[:, :heads], qk[:, heads:]
            outs = []
            for s, cache in enumerate(caches):
                cache.append(i, k[s : s + 1], v[s : s + 1])
                keys, values = cache.layer(i, extra=n)
                past = keys.shape[2] - n
                mask = None
                if n > 1 and past > 0:
                    # New position j sees the whole past and the new positions 0..j.
                    if past not in masks:
                        m = torch.ones(n, past + n, dtype=torch.bool, device=x.device)
                        m[:, past:] = torch.tril(m[:, past:])
                        masks[past] = m
                    mask = masks[past]
                outs.append(
                    F.scaled_dot_product_attention(
                        q[s : s + 1],
                        keys,
                        values,
                        attn_mask=mask,
                        is_causal=n > 1 and past == 0,  # a prefill: plain causal attention
                        scale=self.scaling,
                        enable_gqa=True,
                    )
                )
            o = outs[0] if b == 1 else torch.cat(outs)
            h = h + F.linear(o.transpose(1, 2).reshape(b, n, -1), *w.o)
            y = self._rms(h, w.ln2)
            h = h + F.linear(self.act(F.linear(y, w.gate)) * F.linear(y, w.up), w.down)
        for cache in caches:
            cache.length += n
        return self._rms(h, self.norm)


def hf_step(lm: nn.Module, x: torch.Tensor, caches: list[KVBuffer]) -> torch.Tensor:
    """The same contract as :func:`lean_step` through transformers' own forward, one session at
    a time (any architecture)."""
    outs = []
    for s, cache in enumerate(caches):
        past = [cache.layer(i) for i in range(len(cache.keys))]
        dc = DynamicCache(ddp_cache_data=past) if past else DynamicCache()
        n = x.shape[1]
        pos = torch.arange(cache.length, cache.length + n, device=x.device)[None]
        out = lm.base_model(inputs_embeds=x[s : s + 1], position_ids=pos, cache=dc, use_cache=True)
        for i, layer in enumerate(out.cache.layers):
            cache.append(i, layer.keys[:, :, -n:], layer.values[:, :, -n:])
        cache.length += n
        outs.append(out.last_hidden_state)
    return torch.cat(outs)


def decode_step(
    lm: nn.Module, x: torch.Tensor, caches: list[KVBuffer], *, logits: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Cached forward for decoding: the lean path where the architecture allows, else HF's.

    Returns the last-layer states ``B x n x D``; with ``logits=True`` also the LM head's logits
    of each session's last position (``B x vocab``). The choice of path and the lean path's
    tensors are made once per module and kept on it (a plain attribute, never saved).
    """
    if torch.is_grad_enabled():  # decoding never needs a graph
        with torch.no_grad():
            return decode_step(lm, x, caches, logits=logits)
    lean = lm.__dict__.get("_opens2s_lean", _UNSET)
    if lean is _UNSET:
        lean = LeanLM(lm) if supports_lean_step(lm) else None
        lm.__dict__["_opens2s_lean"] = lean
    if lean is not None:
        hidden = lean(x, caches)
        head = lean.head
    else:
        hidden = hf_step(lm, x, caches)
        out = lm.get_output_embeddings()
        head = (out.weight, out.bias)
    if not logits:
        return hidden
    return hidden, F.linear(hidden[:, -1], *head)


_UNSET = object()
