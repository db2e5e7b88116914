"""VAD end of turn, ASR + WER and speaker embeddings on real espeak-ng renders."""

from __future__ import annotations

import numpy as np
import pytest
from opens2s.audio.asr import Transcriber, normalize_text, word_error_rate
from opens2s.audio.io import AudioError, resample
from opens2s.audio.speaker import SpeakerEncoder, cosine_similarity
from opens2s.audio.tts import EspeakTTS
from opens2s.audio.vad import EndOfTurnDetector

SENTENCE = "Hello there, I wanted to tell you about my day at work."


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS()


def _render16k(tts: EspeakTTS, text: str, speaker: str) -> np.ndarray:
    w, sr = tts.synthesize(text, speaker)
    return resample(w, sr, 16000)


@pytest.mark.parametrize(
    ("engine", "silence_ms"), [("silero", 400), ("silero", 800), ("energy", 600)]
)
def test_vad_ends_the_turn_within_the_silence_window(tts, engine, silence_ms):
    speech = _render16k(tts, SENTENCE, "us-f2")
    active = np.nonzero(np.abs(speech) > 0.01)[0]
    lead = 8000
    true_start, true_end = (lead + active[0]) / 16000, (lead + active[-1]) / 16000
    stream = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(32000, np.float32)])
    vad = EndOfTurnDetector(16000, silence_ms, engine=engine)
    events = []
    for i in range(0, stream.size, 320):  # 20 ms frames, as a browser sends them
        events += vad.push(stream[i : i + 320])
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    start, stop = events
    assert abs(start.t - true_start) < 0.15
    assert -0.1 < stop.t - true_end < 0.25
    # the end of turn is declared once the silence window has passed, not before, not much after
    assert silence_ms / 1000 - 1e-6 <= stop.detected_at - stop.t <= silence_ms / 1000 + 0.1
    vad.reset()
    assert not vad.in_speech and vad.push(np.zeros(16000, np.float32)) == []


def test_vad_resamples_other_rates_and_rejects_bad_frames(tts):
    w, sr = tts.synthesize(SENTENCE, "us-m2")  # 22,050 Hz
    vad = EndOfTurnDetector(sr, 500)
    stream = np.concatenate([w, np.zeros(sr, np.float32)])
    events = []
    for i in range(0, stream.size, 441):
        events += vad.push(stream[i : i + 441])
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    with pytest.raises(AudioError, match="NaN"):
        vad.push(np.array([0.0, np.nan], np.float32))


def test_normalize_text_and_word_error_rate():
    assert normalize_text("It's 25 o'clock -- isn't it?") == "its twenty five oclock is not it"
    assert word_error_rate("the cat sat", "The cat sat.") == 0.0
    assert word_error_rate("the cat sat on the mat", "the cat sat on mat") == pytest.approx(1 / 6)
    assert word_error_rate("a b", "a x b y") == 1.0
    assert word_error_rate("", "") == 0.0


def test_transcriber_reads_espeak_speech(tts):
    asr = Transcriber()
    refs = [SENTENCE, "Please remember to bring your umbrella because it might rain later."]
    for ref in refs:
        hyp = asr.transcribe(_render16k(tts, ref, "assistant"), 16000)
        assert word_error_rate(ref, hyp) <= 0.25, hyp
    with pytest.raises(AudioError, match="non-empty"):
        asr.transcribe(np.zeros(0, np.float32), 16000)


def test_speaker_embeddings_tell_voices_apart(tts):
    enc = SpeakerEncoder()
    texts = [
        "I wanted to tell you about my day at work.",
        "The weather has been lovely all week long.",
    ]
    speakers = ["us-f2", "us-m4", "scot-f1"]
    embs = {(s, i): enc.embed(*tts.synthesize(t, s)) for s in speakers for i, t in enumerate(texts)}
    assert all(e.shape == (enc.dim,) and e.dtype == np.float32 for e in embs.values())
    for key, e in embs.items():
        others = {k: cosine_similarity(e, v) for k, v in embs.items() if k != key}
        nearest = max(others, key=others.get)
        assert nearest[0] == key[0], (key, others)
    with pytest.raises(AudioError):
        enc.embed(np.zeros(100, np.float32), 16000)
