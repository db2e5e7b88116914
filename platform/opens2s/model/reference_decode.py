"""Naive reference decoding: recompute everything each step, no caches.

The ground truth the streaming decoder is tested against: same weights, same schedule
(text until an end token or the budget; units from ``[speaker] + H[0:t] + U[0:s] + ...``),
every prediction from a full forward over the whole sequence so far.
"""

from __future__ import annotations

import torch

from opens2s.model.modeling import OpenS2SModel, interleave_layout
from opens2s.model.streaming import SamplingParams, UnitLogits, _generator, sample_token


@torch.no_grad()
def reference_decode(
    model: OpenS2SModel,
    prompt_embeds: torch.Tensor,
    speaker: torch.Tensor,
    end_tokens: set[int],
    sampling: SamplingParams,
) -> tuple[list[int], list[int]]:
    """Text token ids (end tokens excluded) and units (the N of ``<|audio_N|>``) for one prompt
    (``L x D`` embeddings) and a projected speaker slot (``1 x H``)."""
    llm, tts = model.llm_model, model.tts_lm_model
    text_gen, unit_gen = _generator(sampling.seed), _generator(sampling.seed + 1)
    seq, hidden, text, fed = prompt_embeds, [], [], None
    while True:
        last = llm.base_model(inputs_embeds=seq[None]).last_hidden_state[0, -1:]
        hidden.append(model.text_to_tts(last))
        if fed is not None and (fed in end_tokens or len(text) >= sampling.max_text_tokens):
            break
        token = sample_token(llm.get_output_embeddings()(last)[0], sampling, text_gen)
        if token not in end_tokens:
            text.append(token)
        seq = torch.cat([seq, llm.get_input_embeddings()(torch.tensor([token]))])
        fed = token

    h = torch.cat(hidden)
    restrict = UnitLogits(model.config, prompt_embeds.device)
    stops = set(model.config.unit_stop_ids)
    unit_sampling = sampling.for_units()
    tokens: list[int] = []  # TTS ids of the units so far
    units: list[int] = []
    while len(units) < sampling.max_units:
        j = len(units)
        unit_embeds = tts.get_input_embeddings()(torch.tensor(tokens, dtype=torch.long))
        parts = [speaker]
        for kind, a, b in interleave_layout(len(h), j + 1, model.text_span, model.speech_span):
            if kind == "h":
                parts.append(h[a:b])
            else:
                parts.append(unit_embeds[a : min(b, j)])
                if b > j:
                    break
        out = tts.base_model(inputs_embeds=torch.cat(parts)[None]).last_hidden_state[0, -1]
        logits = restrict(tts.get_output_embeddings()(out))
        token = restrict.token(sample_token(logits, unit_sampling, unit_gen))
        if token in stops:
            break
        tokens.append(token)
        units.append(token - model.config.units_bias)
    return text, units
