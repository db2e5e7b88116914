"""Training stages: align trains only the bridges, finetune the LLM and TTS LM (LoRA optional);
driven through the ``opens2s train`` command."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from conftest import train_test_config
from opens2s.cli import app
from opens2s.model import build_model, load_model
from opens2s.train.stages import TRAINABLE_PREFIXES
from typer.testing import CliRunner


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_align_then_lora_finetune_via_cli_freezes_what_each_stage_does_not_train(
    ray_local, train_corpus, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # run_dir relative, as in jobs/configs/tiny.yaml
    cfg = train_test_config(
        Path("run"),
        train_corpus[0],
        stages=["align", "finetune"],
        max_steps=2,
        warmup_steps=1,
        checkpoint_every=2,
        lora={"r": 4, "alpha": 8.0},
    )
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    result = CliRunner().invoke(
        app, ["train", "--config", str(config_file), "--set", "train.lr=0.002"]
    )
    assert result.exit_code == 0, result.output
    assert "stage align: 2 steps" in result.output
    assert "stage finetune: 2 steps" in result.output

    run_dir = tmp_path / "run"
    initial = _params(build_model("tiny", seed=cfg.model.seed))
    aligned = _params(load_model(run_dir / "train" / "align" / "model")[0])
    final = _params(load_model(run_dir / "model")[0])
    assert aligned.keys() == initial.keys() == final.keys()  # LoRA merged away on export

    align_prefixes = TRAINABLE_PREFIXES["align"]
    for name, before in initial.items():
        if name.startswith(align_prefixes):
            continue
        assert torch.equal(aligned[name], before), f"align changed frozen {name}"
    for prefix in align_prefixes:
        assert any(
            not torch.equal(aligned[n], initial[n]) for n in initial if n.startswith(prefix)
        ), f"align did not train {prefix}"

    # LoRA finetune: the adapted projections change, the LLM's other weights and the audio
    # encoder do not.
    q_proj = [n for n in final if n.startswith("llm_model.") and "q_proj" in n]
    assert q_proj and all(not torch.equal(final[n], aligned[n]) for n in q_proj)
    embed = [n for n in final if n.startswith("llm_model.") and "embed_tokens" in n]
    assert embed and all(torch.equal(final[n], aligned[n]) for n in embed)
    encoder = [n for n in final if n.startswith("audio_encoder_model.")]
    assert encoder and all(torch.equal(final[n], initial[n]) for n in encoder)


def test_finetune_changes_llm_and_tts_lm_and_leaves_the_audio_encoder(train_reference_run):
    cfg, summary = train_reference_run
    initial = _params(build_model("tiny", seed=cfg.model.seed))
    trained = _params(load_model(summary.model_dir)[0])
    for prefix in ("llm_model.", "tts_lm_model.", "audio_adapter."):
        names = [n for n in initial if n.startswith(prefix)]
        changed = [n for n in names if not torch.equal(trained[n], initial[n])]
        assert len(changed) >= 0.9 * len(names), f"{prefix}: {len(changed)}/{len(names)} changed"
    for name in (n for n in initial if n.startswith("audio_encoder_model.")):
        assert torch.equal(trained[name], initial[name]), name
