"""save_model_dir -> load_model gives identical weights and outputs, a directory written by an
earlier version of this project (adapter LayerNorm named ``speech_ln``) still loads, and a
released-style config.json without our fields takes the released defaults. The released layout
itself is tested in test_model_released_layout.py."""

from __future__ import annotations

import json

import torch
from opens2s.model import OpenS2SConfig, build_model, build_tokenizer, load_model
from opens2s.model.layout import save_model_dir
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder


def _batch(model):
    ids = build_tokenizer().apply_chat_template(
        [{"role": "user", "content": [{"text": "", "audio": "x"}]}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    frames = model.config.audio_window_frames
    values = torch.randn(1, 128, frames, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, frames, dtype=torch.long)
    mask[0, :180] = 1
    return {"input_ids": torch.tensor([ids]), "speech_values": values, "speech_mask": mask}


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    model = build_model("tiny", seed=5)
    save_model_dir(model, build_tokenizer(), tmp_path)
    loaded, tokenizer = load_model(tmp_path)
    assert tokenizer.chat_template == build_tokenizer().chat_template
    saved, back = model.state_dict(), loaded.state_dict()
    assert saved.keys() == back.keys()
    assert all(torch.equal(saved[k], back[k]) for k in saved), "weights changed in the round trip"
    with torch.no_grad():
        a, b = model(**_batch(model)), loaded(**_batch(loaded))
    # Equal weights, but CPU kernels may take another vector path for another memory alignment
    # (seen with AVX-512): outputs agree to fp32 rounding, not always bit for bit.
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.tts_logits, b.tts_logits, rtol=0, atol=1e-5)


def opens2s_state_dict(config) -> dict[str, torch.Tensor]:
    """Weights named as the released checkpoint names them, from independent component classes."""
    sd: dict[str, torch.Tensor] = {}
    parts = {
        "audio_encoder_model.": Qwen2AudioEncoder(config.audio_encoder_config),
        "llm_model.": AutoModelForCausalLM.from_config(config.llm_config),
        "tts_lm_model.": AutoModelForCausalLM.from_config(config.tts_lm_config),
    }
    for prefix, module in parts.items():
        sd.update({prefix + k: v.clone() for k, v in module.state_dict().items()})
    enc, llm, tts = (
        config.audio_encoder_config.d_model,
        config.llm_config.hidden_size,
        config.tts_lm_config.hidden_size,
    )
    kernels = config.kernel_sizes
    for i, k in enumerate(kernels):
        cin = enc if i == 0 else enc  # mid_dim // 2 == in_dim for OpenS2S's 2 * in_dim mid width
        cout = 2 * enc if i < len(kernels) - 1 else 2 * llm
        sd[f"audio_adapter.subsampler.conv_layers.{i}.weight"] = torch.randn(cout, cin, k)
        sd[f"audio_adapter.subsampler.conv_layers.{i}.bias"] = torch.randn(cout)
    sd["audio_adapter.fc1.weight"] = torch.randn(config.adapter_inner_dim, llm)
    sd["audio_adapter.fc2.weight"] = torch.randn(llm, config.adapter_inner_dim)
    sd["audio_adapter.ln.weight"] = torch.ones(llm)
    sd["audio_adapter.ln.bias"] = torch.zeros(llm)
    sd["llm2tts.weight"] = torch.randn(tts, llm)
    sd["llm_ln.weight"] = torch.ones(tts)
    sd["llm_ln.bias"] = torch.zeros(tts)
    sd["tts_lm_model.spk2tts.weight"] = torch.randn(tts, config.spk_emb_dim)
    sd["tts_lm_model.spk_ln.weight"] = torch.ones(tts)
    sd["tts_lm_model.spk_ln.bias"] = torch.zeros(tts)
    return sd


def test_directory_of_an_earlier_version_with_speech_ln_loads_under_the_released_name(tmp_path):
    model = build_model("tiny", seed=3)
    model.save_pretrained(tmp_path)
    build_tokenizer().save_pretrained(tmp_path)
    old = {
        k.replace("audio_adapter.ln.", "audio_adapter.speech_ln."): v.contiguous()
        for k, v in model.state_dict().items()
    }
    assert "audio_adapter.speech_ln.weight" in old
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, _ = load_model(tmp_path)
    torch.testing.assert_close(loaded.audio_adapter.ln.weight, model.audio_adapter.ln.weight)
    torch.testing.assert_close(loaded.audio_adapter.ln.bias, model.audio_adapter.ln.bias)


def test_released_style_config_without_our_fields_loads(tmp_path):
    """A config.json as OpenS2S writes it (no spk_emb_dim / unit_vocab_size / audio_token_id)
    takes the released defaults: 512-d speaker projection, 16,384 units + end of speech."""
    lm = {
        "model_type": "qwen3",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "tie_word_embeddings": False,
    }
    released = {
        "architectures": ["OmniSpeechModel"],
        "model_type": "omnispeech",
        "audio_encoder_config": {
            "model_type": "qwen2_audio_encoder",
            "d_model": 32,
            "encoder_layers": 1,
            "encoder_attention_heads": 1,
            "encoder_ffn_dim": 64,
            "num_mel_bins": 128,
        },
        "llm_config": dict(lm, vocab_size=768),
        "tts_lm_config": dict(lm, vocab_size=16384 + 2),
        "conv_kernel_sizes": "5,5",
        "adapter_inner_dim": 64,
        "interleave_strategy": "4:8",
        "lora_config": None,
    }
    (tmp_path / "config.json").write_text(json.dumps(released))
    config = OpenS2SConfig.from_pretrained(tmp_path)
    assert config.spk_emb_dim == 512 and config.tts_eos_token_id == 16384
    assert config.audio_window_frames == 3000  # the encoder's 30 s windows (1500 positions)
    sd = opens2s_state_dict(config)
    assert sd["tts_lm_model.spk2tts.weight"].shape == (64, 512)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "model.safetensors")
    build_tokenizer().save_pretrained(tmp_path)
    model, tokenizer = load_model(tmp_path)
    assert model.config.audio_token_id == tokenizer.convert_tokens_to_ids("<|im_audio|>")
    with torch.no_grad():
        out = model(**_batch(model))
    assert torch.isfinite(out.logits).all()
