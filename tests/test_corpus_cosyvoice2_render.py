"""The corpus TTS engine ``audio.tts_engine: cosyvoice2`` on a tiny random-init CosyVoice2
directory in the released layout: voices cloned from prompt recordings, emotion as an instruction,
reproducible renders, clear errors, and a real Ray Data corpus build whose render stage runs it in
its own actor (the stage a GPU cluster gives ``data.render.gpus_per_worker``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cosyvoice2_tiny import write_tiny_cosyvoice2
from opens2s import storage
from opens2s.audio.io import write_audio
from opens2s.audio.tts import CosyVoice2TTS, EspeakTTS, TTSError, build_tts, speaker_names
from opens2s.config import load_config
from opens2s.data import output
from opens2s.data.pipeline import build_corpus, corpus_stages
from opens2s.data.scenarios import resolve_scenario_settings

TEXT = "I got the letter this morning and I keep reading it."
PROMPT = "Thanks for calling, I have a moment to talk about your day."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_cosyvoice2(tmp_path_factory.mktemp("cv2") / "CosyVoice2-0.5B")


@pytest.fixture(scope="module")
def speakers(tmp_path_factory) -> Path:
    """Prompt recordings: three espeak voices (one is the assistant's), as a user would record."""
    out = tmp_path_factory.mktemp("speakers")
    espeak = EspeakTTS()
    voices = {"assistant": "assistant", "ana": espeak.speakers()[1], "ben": espeak.speakers()[2]}
    for name, voice in voices.items():
        wave, sr = espeak.synthesize(PROMPT, voice)
        write_audio(out / f"{name}.wav", wave, sr)
    return out


@pytest.fixture(scope="module")
def engine(model_dir: Path, speakers: Path) -> CosyVoice2TTS:
    return CosyVoice2TTS(model_dir, speakers)


def test_renders_are_24khz_reproducible_and_follow_voice_and_emotion(engine: CosyVoice2TTS):
    assert engine.speakers() == ["ana", "assistant", "ben"]
    wave, sr = engine.synthesize(TEXT, "ana", "sad", 1.0)
    assert sr == 24000 and wave.dtype == np.float32 and np.isfinite(wave).all()
    # 2 mel frames per speech token, 480 samples per frame.
    assert wave.size % 960 == 0 and wave.size / sr > 0.5
    again, _ = engine.synthesize(TEXT, "ana", "sad", 1.0)
    assert np.array_equal(wave, again)  # a resumed corpus renders the same audio
    happy, _ = engine.synthesize(TEXT, "ana", "happy", 1.0)
    other_voice, _ = engine.synthesize(TEXT, "ben", "sad", 1.0)
    for different in (happy, other_voice):
        n = min(len(wave), len(different))
        assert len(different) != len(wave) or not np.allclose(wave[:n], different[:n])


def test_instructions_carry_emotion_and_intensity():
    assert CosyVoice2TTS.instruction("sad", 1.0) == "Speak sadly, slowly and softly."
    assert CosyVoice2TTS.instruction("happy", 1.5).startswith("Speak very happily")
    assert CosyVoice2TTS.instruction("angry", 0.3).startswith("Speak slightly angrily")
    assert CosyVoice2TTS.instruction("neutral", 1.5) == "Speak in a calm, neutral tone."
    with pytest.raises(TTSError, match="unknown emotion"):
        CosyVoice2TTS.instruction("bored", 1.0)


def test_bad_requests_and_directories_are_named(engine, model_dir, speakers, tmp_path):
    with pytest.raises(TTSError) as e:
        engine.synthesize(TEXT, "zoe", "sad")
    assert e.value.source == "speaker" and "ana" in e.value.problem
    with pytest.raises(TTSError) as e:
        engine.synthesize("   ", "ana", "sad")
    assert e.value.source == "text"
    with pytest.raises(TTSError) as e:
        engine.synthesize("?!", "ana", "sad")
    assert e.value.source == "text" and "nothing to speak" in e.value.problem
    with pytest.raises(TTSError, match="no speaker prompt recordings"):
        CosyVoice2TTS(model_dir, tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    with pytest.raises(TTSError) as e:
        CosyVoice2TTS(model_dir, tmp_path)
    assert e.value.source.endswith("broken.wav")
    short = tmp_path / "short"
    short.mkdir()
    write_audio(short / "tiny.wav", np.zeros(800, np.float32) + 0.1, 16000)
    with pytest.raises(TTSError) as e:  # 0.05 s cannot carry a voice: named on first use
        CosyVoice2TTS(model_dir, short).synthesize(TEXT, "tiny", "sad")
    assert "tiny.wav" in e.value.source and "prompt" in e.value.problem


def test_config_lists_speakers_without_loading_the_model(model_dir, speakers, tmp_path):
    audio = {"tts_engine": "cosyvoice2", "cosyvoice_path": str(model_dir)}
    cfg = load_config(None, {f"audio.{k}": v for k, v in audio.items()})
    with pytest.raises(TTSError, match="no speaker prompt recordings"):
        speaker_names(cfg.audio)  # <cosyvoice_path>/speakers does not exist
    cfg = load_config(
        None,
        {
            **{f"audio.{k}": v for k, v in audio.items()},
            "audio.cosyvoice_speakers_path": str(speakers),
        },
    )
    assert speaker_names(cfg.audio) == ["ana", "assistant", "ben"]
    scen = resolve_scenario_settings(cfg.data.scenarios, audio=cfg.audio)
    assert scen.user_speakers == ["ana", "ben"]  # the assistant's voice is not a user's
    assert isinstance(build_tts(cfg.audio), CosyVoice2TTS)
    render = next(
        s for s in corpus_stages(cfg, scen, str(tmp_path), "unused") if s.name == "render"
    )
    assert render.holds_model  # its own actor: the one a GPU cluster gives a GPU
    bad = load_config(
        None,
        {
            **{f"audio.{k}": v for k, v in audio.items()},
            "audio.cosyvoice_speakers_path": str(speakers),
            "audio.assistant_speaker": "carol",
        },
    )
    with pytest.raises(ValueError, match="assistant_speaker 'carol' is not a speaker"):
        resolve_scenario_settings(bad.data.scenarios, audio=bad.audio)


@pytest.mark.timeout(600)
def test_a_corpus_is_rendered_by_cosyvoice2_through_ray_data(
    ray_local, model_dir, speakers, tmp_path
):
    corpus = str(tmp_path / "corpus")
    raw = {
        "run_dir": str(tmp_path / "run"),
        "audio": {
            "codebook_size": 32,
            "tts_engine": "cosyvoice2",
            "cosyvoice_path": str(model_dir),
            "cosyvoice_speakers_path": str(speakers),
        },
        "data": {
            "cpus_per_worker": 0.25,
            "scenarios": {"num_dialogues": 6, "max_exchanges": 1},
            "output": {"uri": corpus, "shard_size": 3},
            "units": {"fit_dialogues": 3},
            # Random weights speak no emotion: the prosody verdicts would drop every dialogue.
            "filters": {"verify_prosody": False},
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    summary = build_corpus(load_config(path))
    assert summary["dialogues_written"] + summary["dialogues_quarantined"] == 6
    assert summary["dialogues_written"] >= 4, summary["drops_by_reason"]
    # Every drop names a filter, none the TTS: the engine rendered every turn it was given.
    assert not any(r.startswith("render") for r in summary["drops_by_reason"]), summary
    records = []
    for uri in storage.list_prefix(storage.join(corpus, output.SHARDS_DIR)):
        records += [json.loads(line) for line in storage.read_text(uri).splitlines() if line]
    assert len(records) == summary["dialogues_written"]
    manifest = storage.read_bytes(storage.join(corpus, output.MANIFEST))
    assert manifest  # the manifest lists the written dialogues
