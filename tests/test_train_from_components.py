"""``model.components`` through the real training job: Ray Train + DeepSpeed start from an
assembled model (every worker assembles the same one), train its bridges and export a directory
that keeps the parts' weights."""

from __future__ import annotations

import pytest
import torch
from component_dirs import write_component_dirs
from opens2s.config import load_config
from opens2s.config.model import ComponentsSection
from opens2s.model import load_model
from opens2s.model.components import assemble_model
from opens2s.train import run_training
from safetensors.torch import load_file

pytestmark = pytest.mark.timeout(600)


def test_training_starts_from_components_and_exports_their_weights(
    ray_local, train_corpus, tmp_path
):
    parts = write_component_dirs(tmp_path / "parts")
    cfg = load_config(
        None,
        {
            "run_dir": str(tmp_path / "run"),
            "model.components": parts.section(),
            "train.corpus": str(train_corpus[0]),
            "train.stages": ["align"],
            "train.max_steps": 3,
            "train.warmup_steps": 1,
            "train.checkpoint_every": 3,
            "train.num_workers": 1,
            "train.lr": 1e-3,
        },
    )
    summary = run_training(cfg)
    [stage] = summary.stages
    assert stage.steps == 3
    trained, tokenizer = load_model(summary.model_dir)
    start, _ = assemble_model(ComponentsSection(**parts.section()))
    after, before = trained.state_dict(), start.state_dict()
    assert after.keys() == before.keys()

    # align trains the bridges only: the parts' weights come out as they went in.
    encoder = load_file(str(parts.audio_encoder / "model.safetensors"))
    for key, value in encoder.items():
        if key.startswith("audio_tower."):
            assert torch.equal(after["audio_encoder_model." + key[len("audio_tower.") :]], value)
    for key in (k for k in before if k.startswith(("llm_model.", "tts_lm_model.model."))):
        assert torch.equal(after[key], before[key]), key
    adapter = [k for k in before if k.startswith("audio_adapter.")]
    assert any(not torch.equal(after[k], before[k]) for k in adapter)
    assert len(tokenizer) == trained.config.llm_config.vocab_size
