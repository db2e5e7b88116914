"""The pipeline's spoken test: corpus questions asked by speech, answers scored by ASR.

Each question is the first user turn of a corpus dialogue (speech rendered by ``opens2s.audio.tts``
when the corpus was built; dialogues picked so that emotions spread); it goes to
``POST /v1/speech`` as a WAV upload, the NDJSON answer is collected (text deltas, audio chunks),
the answer audio is transcribed by the offline ASR and compared with the assistant text the model
was trained on for that question (closed-loop WER) and with the model's own text. The baseline of
the same run is the speech-path ceiling: the trained answer's own units, vocoded and transcribed.
One held-out question (question 1's words, transcribed, spoken by another voice with another
emotion) is reported without a goal. Everything lands in ``<run_dir>/turn/`` with
``summary.json`` (per question rows, medians and maxima, the goal check).
"""

from __future__ import annotations

import io
import json
import statistics
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


@dataclass
class TestDialogue:
    """The question asked and the answer the model was trained to give."""

    record_id: str
    question_audio: str
    """URI of the user turn's audio in the corpus."""
    reference_text: str
    reference_units: list[int]
    """The speech units the model was trained to produce for that answer."""
    emotion: str | None = None
    speaker: str | None = None


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


def test_dialogues(corpus_root: str, n: int) -> list[TestDialogue]:
    """Up to ``n`` dialogues (by shard order) with a user audio turn followed by an answer, with
    distinct answers, picked so that emotions spread (one per emotion before any repeats)."""
    from opens2s.data.output import first_exchanges, manifest_rows

    meta = manifest_rows(corpus_root)
    found = [
        TestDialogue(
            ex["id"],
            ex["question_audio"],
            ex["answer_text"],
            ex["answer_units"],
            meta.get(ex["id"], {}).get("emotion"),
            meta.get(ex["id"], {}).get("speaker"),
        )
        for ex in first_exchanges(corpus_root, "train", limit=8 * n)
    ]
    if not found:
        raise RuntimeError(
            f"no dialogue with a user audio turn and an answer in {corpus_root}/shards"
        )
    picked: list[TestDialogue] = []
    seen_emotions: set[str | None] = set()
    seen_answers: set[str] = set()
    for spread in (True, False):
        for d in found:
            if len(picked) == n:
                break
            if d in picked or d.reference_text in seen_answers:
                continue
            if spread and d.emotion in seen_emotions:
                continue
            picked.append(d)
            seen_emotions.add(d.emotion)
            seen_answers.add(d.reference_text)
    return picked


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
    corpus_root: str, dialogue: TestDialogue, vocoder, out_dir: str, transcriber=None
) -> dict[str, Any]:
    """The best the speech path can do: the trained answer's own units, vocoded and transcribed.

    If the model reproduced its training target exactly, its spoken answer would score this WER;
    what remains is lost by the unit tokenizer, the vocoder and the ASR, not by the model.
    """
    try:
        from opens2s.audio.asr import Transcriber, word_error_rate
    except ImportError as e:
        return {"ceiling_unavailable": str(e)}
    if vocoder is None:
        return {"ceiling_unavailable": "no unit tokenizer in the corpus to vocode its units with"}
    if not dialogue.reference_units:
        return {"ceiling_unavailable": "the record has no speech units"}
    wave = vocoder.decode(dialogue.reference_units)
    storage.write_bytes(
        storage.join(out_dir, "reference_vocoded.wav"), wav_bytes(wave, vocoder.sample_rate)
    )
    transcript = (transcriber or Transcriber()).transcribe(wave, vocoder.sample_rate)
    return {
        "reference_vocoded_transcript": transcript,
        "wer_ceiling": word_error_rate(dialogue.reference_text, transcript),
    }


def _corpus_vocoder(corpus_root: str, audio_cfg) -> Any:
    """The vocoder of the corpus's k-means units (None when the corpus has no tokenizer)."""
    import tempfile

    try:
        from opens2s.audio.units import load_unit_tokenizer
        from opens2s.audio.vocoder import vocoder_for
    except ImportError:
        return None
    uri = storage.join(corpus_root, "units/tokenizer.npz")
    if not storage.exists(uri):
        return None
    with tempfile.TemporaryDirectory(prefix="opens2s-units-") as tmp:
        local = storage.copy_to_local(uri, tmp)
        return vocoder_for(load_unit_tokenizer(local), audio_cfg)


def _held_out_question(
    cfg: PlatformConfig, dialogue: TestDialogue, question: np.ndarray, transcriber
) -> tuple[np.ndarray, dict[str, Any]]:
    """Question ``dialogue``'s words (as the ASR hears them) spoken by another voice with another
    emotion, at 16 kHz, and how it was rendered."""
    from opens2s.data.render import TurnRenderer

    words = transcriber.transcribe(question, INPUT_SAMPLE_RATE)
    if not words.strip():
        raise RuntimeError("the ASR heard no words in the question to re-render")
    renderer = TurnRenderer(cfg.audio.model_copy(update={"sample_rate": INPUT_SAMPLE_RATE}))
    speakers = [
        s
        for s in renderer.tts.speakers()
        if s not in (dialogue.speaker, cfg.audio.assistant_speaker)
    ]
    from opens2s.audio.tts import EMOTIONS

    emotions = [e for e in EMOTIONS if e not in (dialogue.emotion, "neutral")] or list(EMOTIONS)
    # Deterministic in the record: the same run asks the same held-out question.
    k = sum(map(ord, dialogue.record_id))
    speaker, emotion = speakers[k % len(speakers)], emotions[k % len(emotions)]
    wave = renderer.render_turn(words, speaker, emotion, 1.0)
    pad = np.zeros(INPUT_SAMPLE_RATE // 2, np.float32)
    return np.concatenate([pad, wave, pad]), {
        "question_text_asr": words,
        "speaker": speaker,
        "emotion": emotion,
    }


def _stats(values: list[float | None]) -> dict[str, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(vals), 4), "max": round(max(vals), 4)}


def run_turn(cfg: PlatformConfig, url: str, corpus_root: str, out_dir: str) -> dict[str, Any]:
    """Ask the served model ``cfg.turn.questions`` corpus questions (+ the held-out one); write
    each question's and answer's audio under ``<out_dir>/q<i>/`` and ``summary.json``."""
    from opens2s.audio.io import load_audio

    t = cfg.turn
    dialogues = test_dialogues(corpus_root, t.questions)
    # Greedy decoding: the same model gives the same answer, locally and on a cluster.
    sampling = {
        "temperature": 0.0,
        "unit_temperature": 0.0,
        "seed": cfg.serve.sampling.seed,
        "max_text_tokens": t.max_text_tokens,
        "max_units": t.max_units,
    }
    try:
        from opens2s.audio.asr import Transcriber

        transcriber = Transcriber()  # one model load for every transcript
    except ImportError:
        transcriber = None
    vocoder = _corpus_vocoder(corpus_root, cfg.audio)

    def one(name: str, dialogue: TestDialogue, question: np.ndarray) -> dict[str, Any]:
        qdir = storage.join(out_dir, name)
        q_wav = wav_bytes(question, INPUT_SAMPLE_RATE)
        storage.write_bytes(storage.join(qdir, "question.wav"), q_wav)
        answer = ask(url, q_wav, sampling=sampling, token=cfg.serve.auth_token)
        answer_uri = storage.join(qdir, "answer.wav")
        storage.write_bytes(answer_uri, wav_bytes(answer.audio, answer.sample_rate))
        row = {
            "record_id": dialogue.record_id,
            "emotion": dialogue.emotion,
            "speaker": dialogue.speaker,
            "question_audio": dialogue.question_audio,
            "question_seconds": round(len(question) / INPUT_SAMPLE_RATE, 3),
            "question_wav": storage.join(qdir, "question.wav"),
            "answer_wav": answer_uri,
            "reference_text": dialogue.reference_text,
            "answer_text": answer.text,
            "answer_seconds": round(len(answer.audio) / answer.sample_rate, 3)
            if answer.sample_rate
            else 0.0,
            **{k: v for k, v in asdict(answer).items() if k not in ("audio", "text")},
        }
        if transcriber is not None:
            row.update(transcribe_and_score(answer, dialogue.reference_text, transcriber))
        storage.write_text(storage.join(qdir, "answer.json"), json.dumps(row, indent=2) + "\n")
        return row

    rows = []
    for i, d in enumerate(dialogues, start=1):
        question = load_audio(storage.read_bytes(d.question_audio), sr=INPUT_SAMPLE_RATE)
        row = one(f"q{i}", d, question)
        row.update(
            speech_path_ceiling(
                corpus_root, d, vocoder, storage.join(out_dir, f"q{i}"), transcriber
            )
        )
        rows.append(row)
    held_out = None
    if t.held_out and transcriber is not None:
        first = dialogues[0]
        question = load_audio(storage.read_bytes(first.question_audio), sr=INPUT_SAMPLE_RATE)
        try:
            wave, rendered = _held_out_question(cfg, first, question, transcriber)
            held_out = {**one("held_out", first, wave), "rendered_as": rendered}
        except Exception as e:  # reported, never a reason to fail the test turn
            held_out = {"record_id": first.record_id, "error": f"{type(e).__name__}: {e}"}

    speech = _stats([r.get("wer_speech") for r in rows])
    summary: dict[str, Any] = {
        "questions": rows,
        "held_out": held_out,
        "n_questions": len(rows),
        "distinct_answer_texts": len({r["answer_text"] for r in rows}),
        "wer_speech": speech,
        "wer_vocoded": _stats([r.get("wer_vocoded") for r in rows]),
        "wer_text": _stats([r.get("wer_text") for r in rows]),
        "wer_ceiling": _stats([r.get("wer_ceiling") for r in rows]),
        "ttfa_ms": _stats([r.get("ttfa_ms") for r in rows]),
        "server_ttfa_ms": _stats([r.get("server_ttfa_ms") for r in rows]),
        "goal": {"median_wer": t.goal_median_wer, "max_wer": t.goal_max_wer},
    }
    if speech["median"] is not None:
        summary["goal"]["met"] = bool(
            speech["median"] <= t.goal_median_wer and speech["max"] <= t.goal_max_wer
        )
    elif transcriber is None:
        summary["asr_unavailable"] = "the offline ASR is not installed: no WER"
    storage.write_text(storage.join(out_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary
