"""The tiny tokenizer is built offline, has the OpenS2S special tokens at fixed ids, round-trips
any text (byte-level BPE) and survives save/load with its chat template."""

from __future__ import annotations

import pytest
from opens2s.model import build_tokenizer
from opens2s.model.tokenizer import SPECIAL_TOKENS, TINY_VOCAB_SIZE, load_tokenizer


def test_special_tokens_have_fixed_ids_and_any_text_round_trips(tmp_path):
    tok = build_tokenizer("tiny")
    assert len(tok) == TINY_VOCAB_SIZE
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(len(SPECIAL_TOKENS)))
    text = "Ça va? 你好 — I'm sorry 😢 <not special>\n\ttabs"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.encode("<|im_tts_start|>", add_special_tokens=False) == [6]
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode(text, add_special_tokens=False) == ids
    assert again.chat_template == tok.chat_template


def test_a_tokenizer_without_the_opens2s_tokens_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    plain = Tokenizer(models.BPE())
    plain.pre_tokenizer = pre_tokenizers.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=plain).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="lacks OpenS2S special tokens") as info:
        load_tokenizer(tmp_path)
    assert "<|im_audio|>" in str(info.value) and str(tmp_path) in str(info.value)
