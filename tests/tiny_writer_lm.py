"""A tiny random-init Qwen3 instruct-LM directory for writer tests (transformers and vLLM).

vLLM's CPU attention needs head_dim 32 or 64 (16 fails); untied embeddings and a large init
range make a random model's greedy output vary instead of repeating one token. The tokenizer is
the tiny preset's (trained locally, no download) with a plain Qwen3 chat template.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% endif %}{% endif %}"
)


def write_tiny_writer_lm(path: str | Path, seed: int = 0) -> Path:
    """Write the model + tokenizer directory at ``path`` (float32 safetensors)."""
    import torch
    from opens2s.model import build_tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    tok = build_tokenizer("tiny")
    tok.chat_template = CHAT_TEMPLATE
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        initializer_range=0.5,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(torch.float32)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
