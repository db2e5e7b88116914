"""The joint loss (LLM CE + TTS CE) can be driven below 10% of its start on one record, and the
overfit model then *decodes* that record's answer through the streaming decoder, text and units
exactly: training's record layout and interleaving are the ones decoding uses."""

from __future__ import annotations

import numpy as np
import torch
from opens2s.audio.io import write_audio
from opens2s.model import build_model, build_tokenizer
from opens2s.model.records import RecordEncoder, collate, parse_record
from opens2s.model.streaming import Done, SamplingParams, StreamingDecoder, TextDelta, UnitChunk

ANSWER = "I am so sorry."


def test_joint_loss_falls_below_a_tenth_and_the_answer_is_recalled(tmp_path):
    torch.manual_seed(0)
    wave = 0.1 * np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32)
    write_audio(tmp_path / "u.wav", wave, 16000)
    units = [int(u) for u in np.random.default_rng(1).integers(0, 1024, 24)]
    record = parse_record(
        {
            "id": "overfit",
            "messages": [
                {"role": "user", "content": [{"text": "", "audio": "u.wav"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"text": ANSWER, "speech_units": "".join(f"<|audio_{u}|>" for u in units)}
                    ],
                },
            ],
        },
        unit_vocab_size=1024,
    )
    model = build_model("tiny", seed=0).train()
    tokenizer = build_tokenizer()
    batch = collate([RecordEncoder(tokenizer, model.config, tmp_path).encode(record)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first, below_tenth_at = None, None
    for step in range(1, 301):
        out = model(**batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        loss = float(out.loss.detach())
        first = loss if first is None else first
        if below_tenth_at is None and loss < 0.1 * first:
            below_tenth_at = step
        if loss < 0.02 * first:  # well memorised: go on to decoding
            break
    assert below_tenth_at is not None, f"loss {loss:.3f} after {step} steps, start {first:.3f}"
    assert out.llm_loss > 0 and out.tts_loss > 0

    decoder = StreamingDecoder(model.eval(), tokenizer)
    events = list(decoder.decode(wave, sampling=SamplingParams(max_text_tokens=20, max_units=60)))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ANSWER
    assert [u for e in events if isinstance(e, UnitChunk) for u in e.units] == units
    assert events[-1] == Done("complete")  # both <|im_tts_end|> and the end of speech learned
