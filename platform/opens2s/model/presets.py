"""Presets as builder functions (torchtune style) and loading of exported / released models."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from opens2s.config.audio import AudioSection
from opens2s.config.model import ModelSection
from opens2s.model.configuration import OpenS2SConfig
from opens2s.model.modeling import OpenS2SModel
from opens2s.model.tokenizer import AUDIO_TOKEN, build_tokenizer

PRESETS = ("tiny", "opens2s-8b")
# End of speech + one spare id (OpenS2S reserves a few specials after the units).
TTS_SPECIAL_IDS = 2


def tiny_config(
    section: ModelSection | None = None, audio: AudioSection | None = None
) -> OpenS2SConfig:
    """A random-init model of ~1.4 M parameters: trains on CPU in seconds, head_dim 32.

    Its unit vocabulary and rate are the speech tokenizer's (``audio.codebook_size``/``unit_rate``).
    """
    s = section or ModelSection()
    a = audio or AudioSection()
    tok = build_tokenizer("tiny")
    # Untied embeddings and a wider init give a random model varied (not constant) output.
    lm = dict(
        model_type="qwen3",
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        initializer_range=0.05,
        rms_norm_eps=1e-6,
    )
    return OpenS2SConfig(
        audio_encoder_config=dict(
            model_type="qwen2_audio_encoder",
            num_mel_bins=128,
            d_model=64,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=128,
            # 4 s encoder windows (400 mel frames), not the released 30 s: a short turn's prefill
            # featurises and encodes 4 s instead of 30 s of padding. Longer audio spans several
            # windows, concatenated (config.audio_window_frames).
            max_source_positions=200,
        ),
        llm_config=dict(lm, vocab_size=len(tok)),
        tts_lm_config=dict(lm, vocab_size=a.codebook_size + TTS_SPECIAL_IDS),
        conv_kernel_sizes="5,5",
        adapter_inner_dim=256,
        interleave_strategy=s.interleave_strategy,
        spk_emb_dim=s.speaker_embedding_dim,
        unit_vocab_size=a.codebook_size,
        unit_rate=a.unit_rate,
        audio_token_id=tok.convert_tokens_to_ids(AUDIO_TOKEN),
    )


def opens2s_8b_config() -> OpenS2SConfig:
    """The released architecture: Qwen2-Audio encoder 1280x32, Qwen3-8B, Qwen3 TTS LM, 4:8.

    The TTS LM size (Qwen3-0.6B-like) and adapter width are our reading of the paper; a released
    directory loaded with ``load_model`` uses its own config.json instead.
    """
    return OpenS2SConfig(
        audio_encoder_config=dict(
            model_type="qwen2_audio_encoder",
            num_mel_bins=128,
            d_model=1280,
            encoder_layers=32,
            encoder_attention_heads=20,
            encoder_ffn_dim=5120,
            max_source_positions=1500,
        ),
        llm_config=dict(
            model_type="qwen3",
            vocab_size=151936,
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=40960,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        ),
        tts_lm_config=dict(
            model_type="qwen3",
            vocab_size=16384 + TTS_SPECIAL_IDS,
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=40960,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        ),
        conv_kernel_sizes="5,5",
        adapter_inner_dim=512,
        interleave_strategy="4:8",
        spk_emb_dim=512,
        unit_vocab_size=16384,
        unit_rate=12.5,
        # Qwen3 vocabulary + OpenS2S's added tokens; the real id comes from the tokenizer.
        audio_token_id=151669,
    )


def preset_config(
    preset: str, section: ModelSection | None = None, audio: AudioSection | None = None
) -> OpenS2SConfig:
    """Config of a named preset."""
    if preset == "tiny":
        return tiny_config(section, audio)
    if preset == "opens2s-8b":
        return opens2s_8b_config()
    raise ValueError(f"unknown model preset {preset!r}: expected one of {list(PRESETS)}")


def build_model(
    preset: str = "tiny",
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    section: ModelSection | None = None,
    audio: AudioSection | None = None,
) -> OpenS2SModel:
    """Random-init model of a preset; ``device="meta"`` builds it without allocating weights."""
    config = preset_config(preset, section, audio)
    torch.manual_seed(seed)
    with torch.device(device):
        model = OpenS2SModel(config)
    if str(device) != "meta":
        model = model.to(dtype)
    return model.eval()


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[OpenS2SModel, PreTrainedTokenizerFast]:
    """Load an exported or released model directory strictly (``model/layout.py``): weights,
    config, text tokenizer, ``tts/`` unit ids, generation and feature-extractor configs."""
    from opens2s.model.layout import load_model_dir

    return load_model_dir(path, device=device, dtype=dtype)


def model_from_section(
    section: ModelSection, audio: AudioSection | None = None
) -> tuple[OpenS2SModel, PreTrainedTokenizerFast]:
    """The model the config asks for: ``checkpoint`` if set, else one assembled from
    ``components`` (model/components.py), else a random-init ``preset``."""
    dtype = getattr(torch, section.dtype)
    if section.checkpoint:
        return load_model(section.checkpoint, device=section.device, dtype=dtype)
    if section.components is not None:
        from opens2s.model.components import assemble_model

        model, tokenizer = assemble_model(section.components, section, audio)
        return model.to(device=section.device, dtype=dtype), tokenizer
    if section.preset != "tiny":
        raise ValueError(
            f"model.preset={section.preset!r} has no bundled tokenizer: set model.checkpoint to a "
            "local model directory"
        )
    model = build_model(
        section.preset,
        seed=section.seed,
        device=section.device,
        dtype=dtype,
        section=section,
        audio=audio,
    )
    return model, build_tokenizer("tiny")
