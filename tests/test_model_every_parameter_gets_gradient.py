"""Text-only and unit-free batches still give every parameter a gradient (ZeRO/DDP never wait on an
unused one), while contributing nothing from the dummy paths to the loss."""

from __future__ import annotations

import pytest
import torch
from opens2s.model import build_model, build_tokenizer
from opens2s.model.modeling import IGNORE_INDEX


def _text_batch(with_tts_span: bool):
    tok = build_tokenizer()
    answer = "<|im_tts_start|>Hello there.<|im_tts_end|>" if with_tts_span else "Hello there."
    prompt = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    target = tok.encode(answer + "<|im_end|>")
    ids = torch.tensor([prompt + target])
    labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + target])
    types = torch.tensor([[0] * len(prompt) + [1 if with_tts_span else 0] * len(target)])
    types[0, -1] = 0
    return {"input_ids": ids, "labels": labels, "token_types": types}


@pytest.mark.parametrize("case", ["text-only", "units-no-audio"])
def test_every_parameter_gets_a_gradient(case):
    model = build_model("tiny").train()
    batch = _text_batch(with_tts_span=case == "units-no-audio")
    if case == "units-no-audio":
        batch["speech_units"] = torch.tensor([[5, 6, 7, model.config.tts_eos_token_id]])
        batch["spk_embs"] = torch.randn(1, model.config.spk_emb_dim)
    out = model(**batch)
    out.loss.backward()
    # Frozen parameters (the encoder's sinusoidal positions) need none.
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    if case == "text-only":
        assert float(out.tts_loss) == 0.0
        assert torch.allclose(out.loss.detach(), out.llm_loss)
    else:
        assert float(out.tts_loss) > 0.0
