"""One spoken test turn against the served model, and the closed-loop numbers.

The question is the first user turn of the first corpus dialogue (speech rendered by
``opens2s.audio.tts`` when the corpus was built); it goes to ``POST /v1/speech`` as a WAV upload,
the NDJSON answer is collected (text deltas, audio chunks), the answer audio is transcribed by the
offline ASR and compared with the assistant text the model was trained on for that question.
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import soundfile as sf

from opens2s import storage
from opens2s.config import PlatformConfig

INPUT_SAMPLE_RATE = 16000
_UNIT = re.compile(r"<\|audio_(\d+)\|>")


@dataclass
class TestDialogue:
    """The question asked and the answer the model was trained to give."""

    record_id: str
    question_audio: str
    """URI of the user turn's audio in the corpus."""
    reference_text: str
    reference_units: list[int]
    """The speech units the model was trained to produce for that answer."""


@dataclass
class Answer:
    """What the server answered and how fast."""

    text: str
    audio: np.ndarray
    sample_rate: int
    ttfa_ms: float | None
    """Client-side time to first audio: request sent → first audio chunk received."""
    server_ttfa_ms: float | None
    """The server's own TTFA (end of upload → first audio chunk), from ``response.done``."""
    total_ms: float
    events: int
    status: str | None


def first_dialogue(corpus_root: str) -> TestDialogue:
    """The first record (by shard order) with a user audio turn followed by an assistant turn."""
    shards = sorted(
        u for u in storage.list_prefix(storage.join(corpus_root, "shards")) if u.endswith(".jsonl")
    )
    for shard in shards:
        for line in storage.read_text(shard).splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            msgs = rec.get("messages", [])
            for user, assistant in zip(msgs, msgs[1:], strict=False):
                if user["role"] == "user" and assistant["role"] == "assistant":
                    audio = user["content"][0].get("audio")
                    text = assistant["content"][0].get("text", "")
                    units = [
                        int(u)
                        for u in _UNIT.findall(assistant["content"][0].get("speech_units", ""))
                    ]
                    if audio and text:
                        return TestDialogue(
                            rec["id"], storage.join(corpus_root, audio), text, units
                        )
    raise RuntimeError(f"no dialogue with a user audio turn and an answer in {corpus_root}/shards")


def wav_bytes(wave: np.ndarray, sr: int) -> bytes:
    """16-bit PCM WAV file bytes."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, dtype=np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def ask(url: str, wav: bytes, *, sampling: dict[str, Any], token: str | None = None) -> Answer:
    """POST one utterance to ``{url}/v1/speech`` and collect the streamed answer."""
    from opens2s.serving.protocol import pcm16_from_base64

    query = urllib.parse.urlencode({k: v for k, v in sampling.items() if v is not None})
    req = urllib.request.Request(
        f"{url}/v1/speech?{query}", data=wav, method="POST", headers={"Content-Type": "audio/wav"}
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    text, chunks, sr = [], [], INPUT_SAMPLE_RATE
    ttfa = server_ttfa = status = None
    n = 0
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        for line in resp:
            if not line.strip():
                continue
            ev = json.loads(line)
            n += 1
            kind = ev.get("type")
            if kind == "response.text.delta":
                text.append(ev.get("delta") or ev.get("text") or "")
            elif kind == "response.audio.delta":
                if ttfa is None:
                    ttfa = (time.perf_counter() - t0) * 1000
                sr = int(ev.get("sample_rate", sr))
                chunks.append(pcm16_from_base64(ev["audio"]))
            elif kind == "response.done":
                server_ttfa, status = ev.get("ttfa_ms"), ev.get("status")
            elif kind == "error":
                raise RuntimeError(
                    f"the server answered with an error: {ev.get('code')}: {ev.get('message')}"
                )
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return Answer(
        "".join(text), audio, sr, ttfa, server_ttfa, (time.perf_counter() - t0) * 1000, n, status
    )


def transcribe_and_score(answer: Answer, reference: str, transcriber=None) -> dict[str, Any]:
    """ASR transcript of the answer audio and word error rates against the trained answer text.

    ``wer_speech`` (transcript vs reference) is the closed-loop number; ``wer_text`` (the model's
    own text vs reference) and ``wer_vocoded`` (transcript vs the model's text) tell whether the
    LM or the speech path (units → vocoder → ASR) loses the words.
    """
    try:
        from opens2s.audio.asr import Transcriber, word_error_rate
    except ImportError as e:
        return {"transcript": None, "asr_unavailable": str(e)}
    transcript = (
        Transcriber().transcribe(answer.audio, answer.sample_rate) if answer.audio.size else ""
    )
    return {
        "transcript": transcript,
        "wer_speech": word_error_rate(reference, transcript),
        "wer_text": word_error_rate(reference, answer.text),
        "wer_vocoded": word_error_rate(answer.text, transcript) if answer.text.strip() else None,
    }


def speech_path_ceiling(
    corpus_root: str, dialogue: TestDialogue, audio_cfg, out_dir: str, transcriber=None
) -> dict[str, Any]:
    """The best the speech path can do: the trained answer's own units, vocoded and transcribed.

    If the model reproduced its training target exactly, its spoken answer would score this WER;
    what remains is lost by the unit tokenizer, the vocoder and the ASR, not by the model.
    """
    try:
        from opens2s.audio.asr import Transcriber, word_error_rate
        from opens2s.audio.units import load_unit_tokenizer
        from opens2s.audio.vocoder import vocoder_for
    except ImportError as e:
        return {"ceiling_unavailable": str(e)}
    if not dialogue.reference_units:
        return {"ceiling_unavailable": "the record has no speech units"}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="opens2s-units-") as tmp:
        local = storage.copy_to_local(storage.join(corpus_root, "units/tokenizer.npz"), tmp)
        vocoder = vocoder_for(load_unit_tokenizer(local), audio_cfg)
        wave = vocoder.decode(dialogue.reference_units)
    storage.write_bytes(
        storage.join(out_dir, "reference_vocoded.wav"), wav_bytes(wave, vocoder.sample_rate)
    )
    transcript = (transcriber or Transcriber()).transcribe(wave, vocoder.sample_rate)
    return {
        "reference_vocoded_transcript": transcript,
        "wer_ceiling": word_error_rate(dialogue.reference_text, transcript),
    }


def run_turn(cfg: PlatformConfig, url: str, corpus_root: str, out_dir: str) -> dict[str, Any]:
    """Ask the served model the test question; write question.wav, answer.wav, answer.json."""
    from opens2s.audio.io import load_audio

    dialogue = first_dialogue(corpus_root)
    question = load_audio(storage.read_bytes(dialogue.question_audio), sr=INPUT_SAMPLE_RATE)
    q_wav = wav_bytes(question, INPUT_SAMPLE_RATE)
    storage.write_bytes(storage.join(out_dir, "question.wav"), q_wav)
    # Greedy decoding: the same model gives the same answer, locally and on a cluster.
    sampling = {"temperature": 0.0, "unit_temperature": 0.0, "seed": cfg.serve.sampling.seed}
    answer = ask(url, q_wav, sampling=sampling, token=cfg.serve.auth_token)
    try:
        from opens2s.audio.asr import Transcriber

        transcriber = Transcriber()  # one model load for both transcripts
    except ImportError:
        transcriber = None
    storage.write_bytes(
        storage.join(out_dir, "answer.wav"), wav_bytes(answer.audio, answer.sample_rate)
    )
    result = {
        "record_id": dialogue.record_id,
        "question_audio": dialogue.question_audio,
        "question_seconds": round(len(question) / INPUT_SAMPLE_RATE, 3),
        "reference_text": dialogue.reference_text,
        "answer_text": answer.text,
        "answer_seconds": round(len(answer.audio) / answer.sample_rate, 3)
        if answer.sample_rate
        else 0.0,
        **{k: v for k, v in asdict(answer).items() if k not in ("audio", "text")},
        **transcribe_and_score(answer, dialogue.reference_text, transcriber),
        **speech_path_ceiling(corpus_root, dialogue, cfg.audio, out_dir, transcriber),
    }
    storage.write_text(storage.join(out_dir, "answer.json"), json.dumps(result, indent=2) + "\n")
    return result
