"""``opens2s model info`` reports per-component sizes; ``opens2s model chat`` answers one audio
file from a saved model directory (text on the terminal, units beside --out without a vocoder)."""

from __future__ import annotations

import json

import numpy as np
from opens2s.audio.io import load_audio, write_audio
from opens2s.audio.units import MelKMeansUnits
from opens2s.cli import app
from opens2s.config.audio import AudioSection
from opens2s.model import build_model, build_tokenizer
from typer.testing import CliRunner


def test_info_reports_components_for_both_presets():
    runner = CliRunner()
    tiny = runner.invoke(app, ["model", "info", "--preset", "tiny"])
    assert tiny.exit_code == 0, tiny.output
    assert "tts_lm" in tiny.output and "interleave     4:8" in tiny.output
    big = runner.invoke(app, ["model", "info", "--preset", "opens2s-8b"])
    assert big.exit_code == 0, big.output
    assert "8,190.7 M" in big.output  # Qwen3-8B
    bad = runner.invoke(app, ["model", "info", "--preset", "huge"])
    assert bad.exit_code != 0 and "huge" in bad.output


def test_chat_answers_one_audio_file(tmp_path):
    model_dir = tmp_path / "model"
    build_model("tiny", seed=1).save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    wave = (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32)
    write_audio(tmp_path / "in.wav", wave, 16000)
    out = tmp_path / "out.wav"
    args = ["model", "chat", "--checkpoint", str(model_dir), "--audio", str(tmp_path / "in.wav")]
    result = CliRunner().invoke(
        app, args + ["--out", str(out), "--max-text-tokens", "8", "--max-units", "24"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads(out.with_suffix(".units.json").read_text())
    assert len(saved["units"]) == 24 and saved["reason"] == "max_units"
    assert saved["text"] and saved["text"] in result.output


def test_chat_vocodes_with_the_unit_tokenizer_beside_the_model(tmp_path):
    """With ``units/tokenizer.npz`` in the model dir the answer is written as audio whose length
    matches the number of units at the tokenizer's rate."""
    model_dir = tmp_path / "model"
    audio = AudioSection(codebook_size=32)
    build_model("tiny", seed=2, audio=audio).save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(32000)).astype(np.float32) for _ in range(3)]
    units = MelKMeansUnits(codebook_size=32, unit_rate=audio.unit_rate).fit(waves, passes=1)
    units.save(model_dir / "units" / "tokenizer.npz")
    write_audio(tmp_path / "in.wav", waves[0], 16000)
    out = tmp_path / "out.wav"
    args = ["model", "chat", "--checkpoint", str(model_dir), "--audio", str(tmp_path / "in.wav")]
    result = CliRunner().invoke(
        app, args + ["--out", str(out), "--max-text-tokens", "6", "--max-units", "50"]
    )
    assert result.exit_code == 0, result.output
    speech = load_audio(out, 16000)
    seconds = speech.size / 16000
    assert "50 units" in result.output and abs(seconds - 50 / audio.unit_rate) < 0.25
    assert np.abs(speech).max() > 0.001


def test_chat_rejects_a_file_that_is_not_audio(tmp_path):
    (tmp_path / "in.wav").write_text("not audio")
    args = ["model", "chat", "--audio", str(tmp_path / "in.wav"), "--out", str(tmp_path / "o.wav")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "in.wav" in result.output


def test_info_names_a_checkpoint_that_is_not_a_model_directory(tmp_path):
    result = CliRunner().invoke(app, ["model", "info", "--checkpoint", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "config.json" in result.output
