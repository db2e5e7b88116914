"""The decoder's prompt is laid out exactly as training records are (chat markup, audio
placeholder, earlier spoken answers as TTS spans), up to the <|im_tts_start|> it ends with."""

from __future__ import annotations

import numpy as np
import pytest
from opens2s.audio.io import write_audio
from opens2s.model import build_model, build_tokenizer
from opens2s.model.records import RecordEncoder, parse_record
from opens2s.model.streaming import StreamingDecoder


def test_prompt_ids_are_a_prefix_of_the_training_encoding(tmp_path):
    write_audio(tmp_path / "a.wav", np.full(16000, 0.05, np.float32), 16000)
    model, tok = build_model("tiny"), build_tokenizer()
    record = {
        "id": "multi",
        "messages": [
            {"role": "user", "content": [{"text": "I lost my keys again."}]},
            {"role": "assistant", "content": [{"text": "Oh no.", "speech_units": "<|audio_3|>"}]},
            {"role": "user", "content": [{"text": "", "audio": "a.wav"}]},
            {"role": "assistant", "content": [{"text": "Sorry.", "speech_units": "<|audio_4|>"}]},
        ],
    }
    encoded = RecordEncoder(tok, model.config, tmp_path).encode(parse_record(record))
    history = [
        {"role": "user", "content": "I lost my keys again."},
        {"role": "assistant", "content": "Oh no."},
    ]
    prompt = StreamingDecoder(model, tok).prompt_ids(history)
    assert tok.decode(prompt).endswith("<think>\n\n</think>\n\n<|im_tts_start|>")
    assert encoded["input_ids"][: len(prompt)].tolist() == list(prompt)


def test_history_with_audio_or_bad_roles_is_rejected():
    decoder = StreamingDecoder(build_model("tiny"), build_tokenizer())
    with pytest.raises(ValueError, match=r"history\[0\]"):
        decoder.prompt_ids([{"role": "user", "content": [{"audio": "x.wav"}]}])
    with pytest.raises(ValueError, match="role='robot'"):
        decoder.prompt_ids([{"role": "robot", "content": "hi"}])
