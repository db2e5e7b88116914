"""Builds a tiny model directory in the released OpenS2S layout from the facts in docs/model.md
("The released directory layout"), not from our module names: weights come from transformers'
component classes plus the adapter/bridge names upstream's code defines, the text tokenizer is a
small byte-level BPE with Qwen's and OpenS2S's special tokens and a Qwen3-style chat template,
``tts/`` is that tokenizer with ``<|audio_N|>`` added after it (so ``units_bias`` is not 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast
from transformers.models.qwen2_audio.modeling_qwen2_audio import (
    Qwen2AudioEncoder,
    Qwen2AudioEncoderConfig,
)
from transformers.models.qwen3 import Qwen3Config
from transformers.models.whisper import WhisperFeatureExtractor

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
OPENS2S_SPECIALS = [
    "<|im_audio|>",
    "<|im_audio_start|>",
    "<|im_audio_end|>",
    "<|im_tts_start|>",
    "<|im_tts_end|>",
]
# Qwen3's template, reduced to what a spoken turn uses: string contents, a generation prompt
# with an empty think block when enable_thinking is false.
QWEN3_STYLE_TEMPLATE = (
    "{%- for m in messages %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
TEXT = [
    "I had a really long day at work and I feel tired.",
    "That sounds hard. It makes sense that you feel tired after such a day.",
    "You are a helpful assistant.",
    "What would help you the most right now? We could talk about it.",
]


@dataclass
class ReleasedDir:
    """What the builder wrote: the path and the facts a test checks against."""

    path: Path
    units: int
    units_bias: int
    tts_eos_id: int
    state_dict: dict[str, torch.Tensor]


def _text_tokenizer(specials: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A small byte-level BPE with Qwen's and OpenS2S's special tokens (or ``specials``)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=QWEN_SPECIALS + OPENS2S_SPECIALS if specials is None else specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = QWEN3_STYLE_TEMPLATE
    return fast


def _lm_config(vocab: int) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        initializer_range=0.08,
    )


def build_released_dir(
    path: Path, *, units: int = 48, eos_after_units: bool = False, seed: int = 0
) -> ReleasedDir:
    """Write a tiny released-layout directory at ``path``.

    ``eos_after_units``: the TTS eos is a token added after ``<|audio_N|>`` (else it is
    ``<|im_end|>``, an id before them, as with Qwen's tokenizer).
    """
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    text_tok = _text_tokenizer()
    text_tok.save_pretrained(str(path))
    vocab = text_tok.get_vocab()
    GenerationConfig(
        eos_token_id=[vocab["<|im_end|>"], vocab["<|endoftext|>"]],
        pad_token_id=vocab["<|endoftext|>"],
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
    ).save_pretrained(str(path))

    # tts/: the text tokenizer with the unit tokens added after its vocabulary.
    tts_tok = _text_tokenizer()
    tts_tok.add_tokens([AddedToken(f"<|audio_{n}|>", normalized=False) for n in range(units)])
    if eos_after_units:
        tts_tok.add_special_tokens({"eos_token": "<|tts_eos|>"})
    tts_tok.save_pretrained(str(path / "tts"))
    bias = tts_tok.convert_tokens_to_ids("<|audio_0|>")
    eos = tts_tok.eos_token_id
    GenerationConfig(
        eos_token_id=eos, pad_token_id=tts_tok.pad_token_id, max_new_tokens=512
    ).save_pretrained(str(path / "tts"))

    WhisperFeatureExtractor(
        feature_size=128, chunk_length=4, return_attention_mask=True
    ).save_pretrained(str(path / "audio"))

    enc_cfg = Qwen2AudioEncoderConfig(
        num_mel_bins=128,
        d_model=32,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        max_source_positions=200,  # 4 s windows, as the chunk_length above
    )
    llm_cfg = _lm_config(len(text_tok))
    tts_cfg = _lm_config(len(tts_tok))
    config = {
        "architectures": ["OmniSpeechModel"],
        "model_type": "omnispeech",
        "audio_encoder_config": enc_cfg.to_dict(),
        "llm_config": llm_cfg.to_dict(),
        "tts_lm_config": tts_cfg.to_dict(),
        "conv_kernel_sizes": "5,5",
        "adapter_inner_dim": 96,
        "interleave_strategy": "4:8",
        "lora_config": None,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))

    sd: dict[str, torch.Tensor] = {}
    parts = {
        "audio_encoder_model.": Qwen2AudioEncoder(enc_cfg),
        "llm_model.": AutoModelForCausalLM.from_config(llm_cfg),
        "tts_lm_model.": AutoModelForCausalLM.from_config(tts_cfg),
    }
    for prefix, module in parts.items():
        sd.update({prefix + k: v.detach().clone() for k, v in module.state_dict().items()})
    enc, hid, tts_hid = 32, 64, 64
    # Upstream's Subsampler: Conv1dSubsampler(in=enc, mid=2*enc, out=llm hidden) + fc1/fc2 + ln.
    sd["audio_adapter.subsampler.conv_layers.0.weight"] = 0.1 * torch.randn(2 * enc, enc, 5)
    sd["audio_adapter.subsampler.conv_layers.0.bias"] = 0.1 * torch.randn(2 * enc)
    sd["audio_adapter.subsampler.conv_layers.1.weight"] = 0.1 * torch.randn(2 * hid, enc, 5)
    sd["audio_adapter.subsampler.conv_layers.1.bias"] = 0.1 * torch.randn(2 * hid)
    sd["audio_adapter.fc1.weight"] = 0.1 * torch.randn(96, hid)
    sd["audio_adapter.fc2.weight"] = 0.1 * torch.randn(hid, 96)
    sd["audio_adapter.ln.weight"] = 1 + 0.1 * torch.randn(hid)
    sd["audio_adapter.ln.bias"] = 0.1 * torch.randn(hid)
    sd["llm2tts.weight"] = 0.1 * torch.randn(tts_hid, hid)
    sd["llm_ln.weight"] = 1 + 0.1 * torch.randn(tts_hid)
    sd["llm_ln.bias"] = 0.1 * torch.randn(tts_hid)
    sd["tts_lm_model.spk2tts.weight"] = 0.1 * torch.randn(tts_hid, 512)
    sd["tts_lm_model.spk_ln.weight"] = 1 + 0.1 * torch.randn(tts_hid)
    sd["tts_lm_model.spk_ln.bias"] = 0.1 * torch.randn(tts_hid)
    sd = {k: v.contiguous() for k, v in sd.items()}

    # Two safetensors shards and their index, as save_pretrained writes large models.
    names = sorted(sd)
    half = len(names) // 2
    weight_map = {}
    for i, chunk in enumerate((names[:half], names[half:]), start=1):
        fname = f"model-{i:05d}-of-00002.safetensors"
        save_file({k: sd[k] for k in chunk}, str(path / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in chunk})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    return ReleasedDir(path, units, bias, eos, sd)
