"""The joint loss (LLM CE + TTS CE) can be driven below 10% of its start on one record."""

from __future__ import annotations

import numpy as np
import torch
from opens2s.audio.io import write_audio
from opens2s.model import build_model, build_tokenizer
from opens2s.model.records import RecordEncoder, collate, parse_record


def test_joint_loss_falls_below_a_tenth_on_one_record(tmp_path):
    torch.manual_seed(0)
    wave = 0.1 * np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32)
    write_audio(tmp_path / "u.wav", wave, 16000)
    units = "".join(f"<|audio_{u}|>" for u in np.random.default_rng(1).integers(0, 1024, 24))
    record = parse_record(
        {
            "id": "overfit",
            "messages": [
                {"role": "user", "content": [{"text": "", "audio": "u.wav"}]},
                {
                    "role": "assistant",
                    "content": [{"text": "I am so sorry.", "speech_units": units}],
                },
            ],
        },
        unit_vocab_size=1024,
    )
    model = build_model("tiny", seed=0).train()
    batch = collate([RecordEncoder(build_tokenizer(), model.config, tmp_path).encode(record)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    steps = 0
    for steps in range(1, 301):  # noqa: B007 (reported below)
        out = model(**batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        loss = float(out.loss.detach())
        first = loss if first is None else first
        if loss < 0.1 * first:
            break
    assert out.llm_loss > 0 and out.tts_loss > 0
    assert loss < 0.1 * first, f"loss {loss:.3f} after {steps} steps, start {first:.3f}"
