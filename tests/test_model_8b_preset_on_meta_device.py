"""The opens2s-8b preset builds on the meta device (nothing allocated) with the released sizes."""

from __future__ import annotations

from opens2s.model import build_model


def test_opens2s_8b_counts_without_allocating():
    model = build_model("opens2s-8b", device="meta")
    assert all(p.is_meta for p in model.parameters())
    counts = model.component_parameters()
    assert 0.6e9 < counts["audio_encoder"] < 0.66e9  # Qwen2-Audio encoder 1280 x 32
    assert 8.1e9 < counts["llm"] < 8.3e9  # Qwen3-8B
    assert 0.3e9 < counts["tts_lm"] < 0.7e9
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert model.config.interleave_strategy == "4:8"
    assert model.config.unit_vocab_size == 16384 and model.config.spk_emb_dim == 512
