"""``opens2s corpus speak``: one sentence spoken by the configured corpus TTS in each emotion,
written as wavs and judged by the corpus's prosody rule against the speaker's neutral rendering;
with espeak-ng every emotion agrees, with a tiny random CosyVoice2 the verdicts are printed as
they fall; bad emotions, speakers and model directories are named."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
from cosyvoice2_tiny import write_tiny_cosyvoice2
from opens2s.audio.io import write_audio
from opens2s.audio.tts import EspeakTTS
from opens2s.cli import app
from typer.testing import CliRunner

TEXT = (
    "I got the results back from the office today. They said we should talk about it next "
    "week, and then we will know what comes after that."
)


def test_espeak_renders_each_emotion_and_the_rule_agrees(tmp_path: Path):
    out = tmp_path / "speak"
    args = ["corpus", "speak", TEXT, "--out", str(out), "--speaker", "us-m1"]
    result = CliRunner().invoke(app, [*args, "--emotion", "happy", "--emotion", "sad"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "us-m1-happy.wav",
        "us-m1-neutral.wav",
        "us-m1-sad.wav",
    ]
    lines = result.output.splitlines()
    for emotion in ("happy", "sad"):
        line = next(x for x in lines if x.strip().startswith(emotion))
        assert " agrees " in line, result.output
    sad = next(x for x in lines if x.strip().startswith("sad"))
    assert "f0_level -" in sad and "rate -" in sad  # lower and slower than neutral


def test_cosyvoice2_directory_is_tried_before_a_corpus_job(tmp_path: Path):
    model = write_tiny_cosyvoice2(tmp_path / "CosyVoice2-0.5B")
    speakers = model / "speakers"  # the default place: <cosyvoice_path>/speakers
    speakers.mkdir()
    wave, sr = EspeakTTS().synthesize("Thanks for calling, I have a moment to talk.", "gb-f3")
    write_audio(speakers / "ana.wav", wave, sr)
    out = tmp_path / "speak"
    sets = ["--set", "audio.tts_engine=cosyvoice2", "--set", f"audio.cosyvoice_path={model}"]
    result = CliRunner().invoke(app, ["corpus", "speak", TEXT, "--out", str(out), *sets])
    assert result.exit_code == 0, result.output
    assert "cosyvoice2, speaker ana" in result.output
    waves = sorted(out.glob("ana-*.wav"))
    assert len(waves) == 7  # neutral + six emotions
    assert {sf.info(str(p)).samplerate for p in waves} == {24000}
    verdicts = [x for x in result.output.splitlines() if "agrees" in x or "DISAGREES" in x]
    assert len(verdicts) == 6  # random weights: whatever they are, each is stated

    missing = ["--set", "audio.tts_engine=cosyvoice2", "--set", "audio.cosyvoice_path=/nope/cv2"]
    result = CliRunner().invoke(app, ["corpus", "speak", TEXT, "--out", str(out), *missing])
    assert result.exit_code == 1 and "/nope/cv2: CosyVoice2 model directory does not exist" in (
        result.output
    )


def _flat(output: str) -> str:
    """Typer's error box without its frame and line breaks."""
    return " ".join(output.replace("│", " ").split())


def test_unknown_emotion_and_speaker_are_named(tmp_path: Path):
    out = str(tmp_path / "speak")
    result = CliRunner().invoke(app, ["corpus", "speak", TEXT, "--out", out, "--emotion", "bored"])
    assert result.exit_code == 2 and "['bored']: known emotions are" in _flat(result.output)
    result = CliRunner().invoke(app, ["corpus", "speak", TEXT, "--out", out, "--speaker", "zed"])
    assert result.exit_code == 2 and "'zed' is not a speaker; known:" in _flat(result.output)
