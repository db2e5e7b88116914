"""Writes the three tiny pretrained parts an OpenS2S model is assembled from, each in the layout
its own library saves (docs/model.md, "Building from components"): a Qwen2-Audio or Whisper
directory (the encoder among other tensors), a Qwen3 causal LM with a Qwen-style tokenizer that
lacks OpenS2S's tokens, and a Qwen3 TTS LM whose tokenizer holds ``<|audio_N|>`` units."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from released_layout import QWEN3_STYLE_TEMPLATE, QWEN_SPECIALS, _lm_config, _text_tokenizer
from tokenizers import AddedToken
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

ENCODER = dict(
    num_mel_bins=128,
    d_model=32,
    encoder_layers=1,
    encoder_attention_heads=2,
    encoder_ffn_dim=64,
    max_source_positions=200,  # 4 s windows
)


@dataclass
class ComponentDirs:
    """The three directories, as ``model.components`` takes them."""

    audio_encoder: Path
    llm: Path
    tts_lm: Path
    units: int

    def section(self) -> dict[str, str]:
        return {
            "audio_encoder": str(self.audio_encoder),
            "llm": str(self.llm),
            "tts_lm": str(self.tts_lm),
        }


def write_qwen2_audio_dir(path: Path) -> Path:
    """A whole Qwen2-Audio model (encoder, projector, language model), as released."""
    torch.manual_seed(1)
    config = Qwen2AudioConfig(
        audio_config=ENCODER,
        text_config=dict(
            model_type="qwen2",
            vocab_size=300,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        ),
    )
    Qwen2AudioForConditionalGeneration(config).save_pretrained(str(path))
    WhisperFeatureExtractor(feature_size=128, chunk_length=4).save_pretrained(str(path))
    return path


def write_whisper_dir(path: Path) -> Path:
    """A whole Whisper model (encoder and decoder)."""
    torch.manual_seed(2)
    enc = {k: v for k, v in ENCODER.items() if k != "encoder_layers"}
    config = WhisperConfig(
        **enc,
        encoder_layers=1,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        vocab_size=100,
        max_target_positions=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperForConditionalGeneration(config).save_pretrained(str(path))
    WhisperFeatureExtractor(feature_size=128, chunk_length=4).save_pretrained(str(path))
    return path


def write_llm_dir(path: Path) -> Path:
    """A Qwen3 causal LM with a Qwen-style tokenizer (no OpenS2S tokens yet)."""
    torch.manual_seed(3)
    tok = _text_tokenizer(QWEN_SPECIALS)
    tok.chat_template = QWEN3_STYLE_TEMPLATE
    tok.save_pretrained(str(path))
    vocab = tok.get_vocab()
    model = AutoModelForCausalLM.from_config(_lm_config(len(tok)))
    model.generation_config = GenerationConfig(
        eos_token_id=[vocab["<|im_end|>"], vocab["<|endoftext|>"]],
        pad_token_id=vocab["<|endoftext|>"],
    )
    model.save_pretrained(str(path))
    return path


def write_tts_lm_dir(path: Path, units: int = 48) -> Path:
    """A Qwen3 LM over a text vocabulary plus ``<|audio_N|>`` units (as GLM-4-Voice-style TTS
    LMs extend a text tokenizer), its eos ``<|im_end|>``."""
    torch.manual_seed(4)
    tok = _text_tokenizer(QWEN_SPECIALS)
    tok.add_tokens([AddedToken(f"<|audio_{n}|>", normalized=False) for n in range(units)])
    tok.save_pretrained(str(path))
    GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).save_pretrained(
        str(path)
    )
    AutoModelForCausalLM.from_config(_lm_config(len(tok))).save_pretrained(str(path))
    return path


def write_component_dirs(
    root: Path, *, encoder: str = "qwen2_audio", units: int = 48
) -> ComponentDirs:
    """All three parts under ``root``; ``encoder`` is ``qwen2_audio`` or ``whisper``."""
    write = write_qwen2_audio_dir if encoder == "qwen2_audio" else write_whisper_dir
    return ComponentDirs(
        audio_encoder=write(root / encoder),
        llm=write_llm_dir(root / "llm"),
        tts_lm=write_tts_lm_dir(root / "tts_lm", units),
        units=units,
    )
