"""One cached forward of a decoder-only LM for decoding: KV buffers and a lean step.

The streaming decoder runs thousands of one-position forwards; transformers' generic forward
spends most of such a step in Python (mask building, output capture, cache objects). For the
Qwen2 / Qwen3 / Llama layout this module runs the same math as a short list of tensor ops on
weights packed once from the model's own (:class:`LeanLM`); any other architecture goes through
the HF forward with a ``DynamicCache`` built from the buffers. Both write into a
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

# Packing copies the layer weights (fused, norm-folded, transposed). Up to this many parameters
# the copy is cheap and a step is mostly per-op overhead, which packing cuts; above it (the 8B
# preset) a step is mostly weight reads and the lean step uses the model's own tensors instead.
PACK_MAX_PARAMETERS = 64_000_000


class KVBuffer:
    """Keys and values of one session in one LM: per layer one ``2 kv_heads x capacity x
    head_dim`` tensor, keys in the first ``kv_heads`` rows (``keys[layer]``, a view) and values in
    the rest (``values[layer]``), so a step writes both with one copy. The first ``length``
    positions are valid."""

    def __init__(self) -> None:
        self.kv: list[torch.Tensor] = []
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.length = 0

    def append(self, layer: int, kv: torch.Tensor) -> None:
        """Write ``kv`` (``2 kvh x n x hd``: keys then values) after the valid positions of
        ``layer``; the caller advances ``length`` once all layers are written."""
        n = kv.shape[1]
        if layer == len(self.kv):
            self._store(
                layer, kv.new_zeros(kv.shape[0], max(64, 2 * (self.length + n)), kv.shape[2])
            )
        elif self.length + n > self.kv[layer].shape[1]:
            old = self.kv[layer]
            grown = old.new_zeros(old.shape[0], 2 * (self.length + n), old.shape[2])
            grown[:, : self.length] = old[:, : self.length]
            self._store(layer, grown)
        self.kv[layer].narrow(1, self.length, n).copy_(kv)

    def _store(self, layer: int, kv: torch.Tensor) -> None:
        half = kv.shape[0] // 2
        if layer == len(self.kv):
            self.kv.append(kv)
            self.keys.append(kv[:half])
            self.values.append(kv[half:])
        else:
            self.kv[layer], self.keys[layer], self.values[layer] = kv, kv[:half], kv[half:]

    def layer(self, layer: int, extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``1 x kvh x L x hd`` of the valid (plus ``extra`` just written) keys and values
        of ``layer``, as transformers' caches hold them."""
        end = self.length + extra
        return self.keys[layer][None, :, :end], self.values[layer][None, :, :end]


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


@dataclass(frozen=True)
class _Layer:
    """One decoder layer's tensors. Matrices are ``in x out`` (``y @ w``); a tuple of several is
    concatenated along ``out`` after the matmuls. A norm weight of ``None`` is folded into the
    matrix after it."""

    ln1: torch.Tensor | None
    qkv: tuple[torch.Tensor, ...]
    qkv_bias: torch.Tensor | None
    qk_norm: torch.Tensor | None  # (heads + kv_heads) x hd: q_norm (x scaling) and k_norm rows
    o: torch.Tensor
    o_bias: torch.Tensor | None
    ln2: torch.Tensor | None
    gate_up: tuple[torch.Tensor, ...]
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


def _biases(*linears: nn.Linear) -> torch.Tensor | None:
    if all(m.bias is None for m in linears):
        return None
    return torch.cat(
        [m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in linears]
    )


def parameter_signature(lm: nn.Module) -> tuple:
    """Identity of ``lm``'s weights: changes when a parameter is replaced, moved or updated in
    place (its version counter), so a packed copy knows it is stale."""
    return tuple((p.data_ptr(), p._version, p.dtype) for p in lm.parameters())


class LeanLM:
    """The body of a Qwen2/Qwen3/Llama causal LM as plain tensor math for cached decoding.

    Per layer and position: one RMS statistic, one q/k/v matmul, one per-head norm of q and k
    together, one rotary pass over q and k together, attention, two matmuls for the MLP with the
    residual adds folded into them (``addmm``). Packed (small models) the norm weights are folded
    into the matrices after them and q/k/v and gate/up are each one matrix.
    """

    def __init__(self, lm: nn.Module) -> None:
        if not supports_lean_step(lm):
            raise ValueError(f"{lm.config.model_type}: the lean step supports {LEAN_MODEL_TYPES}")
        body = lm.base_model
        config = lm.config
        attn0 = body.layers[0].self_attn
        self.signature = parameter_signature(lm)
        self.head_dim = hd = attn0.head_dim
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.eps = config.rms_norm_eps
        self.act = F.silu if config.hidden_act == "silu" else body.layers[0].mlp.act_fn
        self.inv_freq = body.rotary_emb.inv_freq
        self.rope_scale = body.rotary_emb.attention_scaling
        self.cos_table = self.sin_table = None  # positions x hd, built on demand, doubling
        self.norm = body.norm.weight
        layer_params = sum(p.numel() for p in body.layers.parameters())
        self.packed = layer_params <= PACK_MAX_PARAMETERS
        # In float32 the attention scaling goes into q_norm's weight (Qwen3) or the packed W_q
        # and the norm weights into the packed matrices after them (a rounding at float32's
        # precision); in half precision each is applied as transformers does.
        self.fold = self.norm.dtype == torch.float32
        scale_folded = self.fold and (self.packed or hasattr(attn0, "q_norm"))
        self.q_scale = 1.0 if scale_folded else attn0.scaling
        head = lm.get_output_embeddings()
        self.head = head.weight.t().contiguous() if self.packed else head.weight.t()
        self.head_bias = head.bias
        with torch.no_grad():
            self.layers = [self._layer(layer, attn0.scaling) for layer in body.layers]
            dtype, device = self.norm.dtype, self.norm.device
            # rotate_half as a matrix: x @ rot == cat(-x[hd/2:], x[:hd/2]), exact wherever the
            # matmul is (not under TF32 fp32 matmuls on a GPU, which nothing here enables).
            half = hd // 2
            rot = torch.zeros(hd, hd, dtype=dtype, device=device)
            idx = torch.arange(half, device=device)
            rot[idx + half, idx] = -1
            rot[idx, idx + half] = 1
            self.rot = rot
            self.eps_t = torch.tensor(self.eps, dtype=torch.float32, device=device)

    def _layer(self, layer: nn.Module, scaling: float) -> _Layer:
        a, m = layer.self_attn, layer.mlp
        ln1, ln2 = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
        qk_norm = None
        if hasattr(a, "q_norm"):  # Qwen3: q_norm (x scaling) per query head, then k_norm rows
            q_scale = scaling if self.fold else 1.0
            qk_norm = torch.cat(
                (
                    (a.q_norm.weight.float() * q_scale).expand(self.heads, -1),
                    a.k_norm.weight.float().expand(self.kv_heads, -1),
                )
            ).to(ln1.dtype)
        if self.packed:
            qkv_w = torch.cat((a.q_proj.weight, a.k_proj.weight, a.v_proj.weight))
            gu_w = torch.cat((m.gate_proj.weight, m.up_proj.weight))
            if self.fold:
                if qk_norm is None:  # no per-head norm after it: the scaling goes in W_q
                    qkv_w[: a.q_proj.out_features] *= scaling
                qkv_w, gu_w, ln1, ln2 = qkv_w * ln1, gu_w * ln2, None, None
            qkv, gate_up = (qkv_w.t().contiguous(),), (gu_w.t().contiguous(),)
        else:
            qkv = (a.q_proj.weight.t(), a.k_proj.weight.t(), a.v_proj.weight.t())
            gate_up = (m.gate_proj.weight.t(), m.up_proj.weight.t())
        qkv_bias = _biases(a.q_proj, a.k_proj, a.v_proj)
        if qkv_bias is not None and qk_norm is None and self.packed and self.fold:
            qkv_bias = qkv_bias.clone()
            qkv_bias[: a.q_proj.out_features] *= scaling
        matrix = (lambda w: w.t().contiguous()) if self.packed else (lambda w: w.t())
        return _Layer(
            ln1=ln1,
            qkv=qkv,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            o=matrix(a.o_proj.weight),
            o_bias=a.o_proj.bias,
            ln2=ln2,
            gate_up=gate_up,
            gate_up_bias=_biases(m.gate_proj, m.up_proj),
            down=matrix(m.down_proj.weight),
            down_bias=m.down_proj.bias,
        )

    def _rope(self, caches: list[KVBuffer], n: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """cos/sin ``(B*n) x 1 x hd`` of each session's next ``n`` positions, from a table."""
        end = max(c.length for c in caches) + n
        if (
            self.cos_table is None
            or self.cos_table.shape[0] < end
            or (self.cos_table.dtype != x.dtype or self.cos_table.device != x.device)
        ):
            size = max(256, 2 * end)
            inv_freq = self.inv_freq.to(x.device)
            freqs = torch.arange(size, device=x.device).float()[:, None] * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            self.cos_table = (emb.cos() * self.rope_scale).to(x.dtype)[:, None]
            self.sin_table = (emb.sin() * self.rope_scale).to(x.dtype)[:, None]
        if len(caches) == 1:
            start = caches[0].length
            return self.cos_table[start : start + n], self.sin_table[start : start + n]
        index = torch.cat([torch.arange(c.length, c.length + n) for c in caches]).to(x.device)
        return self.cos_table[index], self.sin_table[index]

    def _rms(self, x: torch.Tensor) -> torch.Tensor:
        """``x * rsqrt(mean(x^2) + eps)`` over the last dim (weight applied by the caller), in
        float32 as transformers' RMSNorm; the norm-based form is half the ops of ``pow/mean``."""
        if x.dtype != torch.float32:
            return self._rms(x.float()).to(x.dtype)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x * torch.addcmul(self.eps_t, norm, norm, value=1.0 / x.shape[-1]).rsqrt_()

    def _rms_(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_rms` in place."""
        if x.dtype != torch.float32:
            return x.copy_(self._rms(x))
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x.mul_(torch.addcmul(self.eps_t, norm, norm, value=1.0 / x.shape[-1]).rsqrt_())

    @staticmethod
    def _matmul(
        y: torch.Tensor, mats: tuple[torch.Tensor, ...], bias: torch.Tensor | None
    ) -> torch.Tensor:
        out = torch.mm(y, mats[0]) if len(mats) == 1 else torch.cat([y @ w for w in mats], 1)
        return out if bias is None else out.add_(bias)

    def __call__(
        self, x: torch.Tensor, caches: list[KVBuffer], logits: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run ``B x n x D`` new input embeddings (one row per session), appending to each
        session's cache; returns the last-layer states after the final norm and, with
        ``logits``, the head's logits of each session's last position (``B x vocab``)."""
        b, n, d = x.shape
        hd, heads, kvh = self.head_dim, self.heads, self.kv_heads
        group = heads // kvh
        cos, sin = self._rope(caches, n, x)
        lengths = [c.length for c in caches]
        masks: dict[int, torch.Tensor] = {}  # by past length: sessions may differ
        # Manual attention at one position (three ops instead of SDPA's set-up); SDPA otherwise.
        manual = n == 1 and x.dtype == torch.float32
        h = x.reshape(b * n, d)
        for i, w in enumerate(self.layers):
            y = self._rms(h)
            if w.ln1 is not None:
                y = y * w.ln1
            qkv = self._matmul(y, w.qkv, w.qkv_bias).view(b * n, heads + 2 * kvh, hd)
            # Norm and rotary embedding in place on q and k together, so that the new keys and
            # values stay side by side in qkv and go to the cache in one copy.
            qk = qkv[:, : heads + kvh]
            if w.qk_norm is not None:  # Qwen3 normalises each head before the rotary embedding
                self._rms_(qk).mul_(w.qk_norm)
            rotated = qk @ self.rot
            qk.mul_(cos).addcmul_(rotated, sin)
            q, kv = qkv[:, :heads], qkv[:, heads:]
            outs = []
            for s, cache in enumerate(caches):
                q_s, kv_s = (q, kv) if b == 1 else (q[s * n : (s + 1) * n], kv[s * n : (s + 1) * n])
                cache.append(i, kv_s.transpose(0, 1))
                end = lengths[s] + n
                keys = cache.keys[i].narrow(1, 0, end)
                values = cache.values[i].narrow(1, 0, end)
                if manual:
                    q_s = q_s.view(kvh, group, hd)
                    if self.q_scale != 1.0:
                        q_s = q_s * self.q_scale
                    scores = torch.bmm(q_s, keys.transpose(1, 2))
                    outs.append(torch.bmm(scores.softmax(-1), values).view(1, heads * hd))
                    continue
                past = lengths[s]
                mask = None
                if n > 1 and past > 0:
                    # New position j sees the whole past and the new positions 0..j.
                    if past not in masks:
                        m = torch.ones(n, past + n, dtype=torch.bool, device=x.device)
                        m[:, past:] = torch.tril(m[:, past:])
                        masks[past] = m
                    mask = masks[past]
                o = F.scaled_dot_product_attention(
                    q_s.transpose(0, 1)[None],
                    keys[None],
                    values[None],
                    attn_mask=mask,
                    is_causal=n > 1 and past == 0,  # a prefill: plain causal attention
                    scale=self.q_scale,
                    enable_gqa=True,
                )
                outs.append(o[0].transpose(0, 1).reshape(n, heads * hd))
            h = torch.addmm(h, outs[0] if b == 1 else torch.cat(outs), w.o)
            if w.o_bias is not None:
                h = h + w.o_bias
            y = self._rms(h)
            if w.ln2 is not None:
                y = y * w.ln2
            gate, up = self._matmul(y, w.gate_up, w.gate_up_bias).chunk(2, 1)
            h = torch.addmm(h, self.act(gate).mul_(up), w.down)
            if w.down_bias is not None:
                h = h + w.down_bias
        for cache in caches:
            cache.length += n
        h = self._rms(h).mul_(self.norm)
        if not logits:
            return h.view(b, n, d), None
        last = h if n == 1 else h.view(b, n, d)[:, -1]
        out = torch.mm(last, self.head)
        return h.view(b, n, d), out if self.head_bias is None else out + self.head_bias


def hf_step(lm: nn.Module, x: torch.Tensor, caches: list[KVBuffer]) -> torch.Tensor:
    """The same contract as :func:`decode_step` through transformers' own forward, one session
    at a time (any architecture)."""
    outs = []
    for s, cache in enumerate(caches):
        past = [cache.layer(i) for i in range(len(cache.keys))]
        dc = DynamicCache(ddp_cache_data=past) if past else DynamicCache()
        n = x.shape[1]
        pos = torch.arange(cache.length, cache.length + n, device=x.device)[None]
        out = lm.base_model(inputs_embeds=x[s : s + 1], position_ids=pos, cache=dc, use_cache=True)
        for i, layer in enumerate(out.cache.layers):
            cache.append(i, torch.cat((layer.keys[0, :, -n:], layer.values[0, :, -n:])))
        cache.length += n
        outs.append(out.last_hidden_state)
    return torch.cat(outs)


def decode_step(
    lm: nn.Module, x: torch.Tensor, caches: list[KVBuffer], *, logits: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Cached forward for decoding: the lean path where the architecture allows, else HF's.

    Returns the last-layer states ``B x n x D``; with ``logits=True`` also the LM head's logits
    of each session's last position (``B x vocab``). The choice of path and the lean path's
    packed weights are made once per module and kept on it (a plain attribute, never saved);
    they are rebuilt when a session starts (an empty cache) after the weights changed.
    """
    if not torch.is_inference_mode_enabled():  # decoding never needs a graph or versions
        with torch.inference_mode():
            return decode_step(lm, x, caches, logits=logits)
    cached = lm.__dict__.get("_opens2s_lean", _UNSET)
    if cached is _UNSET or (
        not all(c.length for c in caches)
        and (cached is None or cached.signature != parameter_signature(lm))
    ):
        cached = LeanLM(lm) if supports_lean_step(lm) else None
        lm.__dict__["_opens2s_lean"] = cached
    if cached is not None:
        hidden, out = cached(x, caches, logits)
        return (hidden, out) if logits else hidden
    hidden = hf_step(lm, x, caches)
    if not logits:
        return hidden
    return hidden, lm.get_output_embeddings()(hidden[:, -1])


_UNSET = object()
