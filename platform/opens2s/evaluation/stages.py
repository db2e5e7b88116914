"""The eval job's stages, each a class Ray Data maps over batches of rows (one instance per actor):

- :class:`AnswerStage`: the server's speech stack (``load_speech_stack``: model, streaming
  decoder, vocoder) in the server's :class:`BatchedDecodeLoop`; a batch's questions are answered
  as concurrent sessions sharing each decoder step, as a loaded Serve replica answers them;
- :class:`ScoreStage`: ASR of each answer (speech-text consistency, reference match), speaker
  similarity to the requested voice, prosody cues, and the SER slot;
- :class:`JudgeStage`: the empathy judge.

A row travels as ``{"row": JSON text, "audio": WAV bytes}`` so that every block has one schema
whatever a row holds. A row that fails a stage gets ``status: failed`` and ``error: "<stage>:
<reason>"``; later stages pass it on untouched.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import numpy as np

from opens2s import storage
from opens2s.config import PlatformConfig

INPUT_SAMPLE_RATE = 16000


def rows_in(batch: dict[str, Any]) -> list[tuple[dict[str, Any], bytes]]:
    """The rows of a Ray Data batch (``row`` JSON, ``audio`` bytes)."""
    return [
        (json.loads(r), bytes(a) if a is not None else b"")
        for r, a in zip(batch["row"], batch["audio"], strict=True)
    ]


def rows_out(rows: list[tuple[dict[str, Any], bytes]]) -> dict[str, list[Any]]:
    """A Ray Data batch of ``rows``."""
    return {"row": [json.dumps(r) for r, _ in rows], "audio": [a for _, a in rows]}


def fail(row: dict[str, Any], stage: str, e: BaseException | str) -> None:
    """Mark ``row`` failed at ``stage`` with the reason."""
    reason = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    row.update(status="failed", error=f"{stage}: {reason}")


def wav_bytes(wave: np.ndarray, sr: int) -> bytes:
    """16-bit PCM WAV file bytes."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, dtype=np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    wave, sr = sf.read(io.BytesIO(data), dtype="float32")
    return wave, int(sr)


class AnswerStage:
    """Answers questions with the server's stack and batched decode loop."""

    def __init__(self, platform_config: dict[str, Any], model_dir: str, out_dir: str) -> None:
        import torch

        from opens2s.serving.decode_loop import BatchedDecodeLoop
        from opens2s.serving.speech_stack import load_speech_stack

        cfg = PlatformConfig.model_validate(platform_config)
        self.cfg, self.out_dir = cfg, out_dir
        torch.set_num_threads(max(1, int(cfg.eval.cpus_per_worker)))
        served = cfg.model_copy(
            update={"serve": cfg.serve.model_copy(update={"model_dir": model_dir})}
        )
        self.stack = load_speech_stack(served)
        self.loop = BatchedDecodeLoop(
            self.stack.start,
            self.stack.step,
            self.stack.vocoder_for,
            cfg.serve.vocoder_blocks,
            max_batch=cfg.eval.batch_size,
        )
        e = cfg.eval
        # Greedy: the same model gives the same answers, run after run.
        self.sampling = {
            "temperature": 0.0,
            "unit_temperature": 0.0,
            "seed": cfg.serve.sampling.seed,
            "max_text_tokens": e.max_text_tokens,
            "max_units": e.max_units,
        }

    def _request(self, row: dict[str, Any]):
        from opens2s.audio.io import load_audio
        from opens2s.serving.decode_loop import TurnRequest

        wave = load_audio(storage.read_bytes(row["audio"]), sr=INPUT_SAMPLE_RATE)
        row["question_seconds"] = round(len(wave) / INPUT_SAMPLE_RATE, 3)
        voice = row.get("voice") or self.cfg.eval.voice
        return TurnRequest(
            response_id=row["item_id"],
            audio=wave,
            system_prompt=self.cfg.model.system_prompt,
            voice=voice,
            sampling=self.sampling,
        )

    async def _answer(self, row: dict[str, Any], req) -> bytes:
        from opens2s.serving.protocol import pcm16_from_base64

        chunks, done, err = [], None, None
        async for ev in self.loop.respond(req):
            kind = ev.get("type")
            if kind == "response.audio.delta":
                chunks.append(pcm16_from_base64(ev["audio"]))
            elif kind == "response.done":
                done = ev
            elif kind == "error":
                err = f"{ev.get('code')}: {ev.get('message')}"
        if err or done is None or done.get("status") != "completed":
            fail(row, "answer", err or f"the response ended {done and done.get('status')}")
            return b""
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        sr = self.loop.sample_rate
        row.update(
            status="answered",
            answer_text=done.get("text", ""),
            answer_seconds=round(audio.size / sr, 3),
            answer_units=done.get("units"),
            stop_reason=done.get("reason"),
            ttfa_ms=done.get("model_ttfa_ms"),
            prefill_ms=done.get("prefill_ms"),
            rtf=done.get("rtf"),
        )
        if audio.size == 0:
            fail(row, "answer", "the answer has no audio (no speech unit before the end)")
            return b""
        data = wav_bytes(audio, sr)
        uri = storage.join(self.out_dir, "answers", f"{row['item_id'].replace('/', '_')}.wav")
        storage.write_bytes(uri, data)
        row["answer_wav"] = uri
        return data

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = rows_in(batch)
        todo: list[tuple[int, Any]] = []
        for i, (row, _) in enumerate(rows):
            if row.get("status") == "failed":
                continue
            try:
                todo.append((i, self._request(row)))
            except Exception as e:  # a bad question fails alone
                fail(row, "question audio", e)

        async def run_all() -> list[bytes]:
            return await asyncio.gather(*(self._answer(rows[i][0], req) for i, req in todo))

        if todo:
            for (i, _), data in zip(todo, asyncio.run(run_all()), strict=True):
                rows[i] = (rows[i][0], data)
        return rows_out(rows)


class ScoreStage:
    """ASR, speaker similarity, prosody cues and the optional SER of each answer."""

    def __init__(
        self, platform_config: dict[str, Any], voice_embedding: list[float] | None
    ) -> None:
        from opens2s.audio.asr import Transcriber
        from opens2s.audio.speaker import SpeakerEncoder

        cfg = PlatformConfig.model_validate(platform_config)
        a = cfg.audio
        self.transcriber = Transcriber(a.asr_model_path, beam_size=a.asr_beam_size, cpu_threads=1)
        self.speaker = SpeakerEncoder(a.speaker_encoder)
        self.voice = None if voice_embedding is None else np.asarray(voice_embedding, np.float32)
        self.judging = bool(cfg.eval.judge.model_path)
        self.ser = None
        if cfg.eval.ser_model_path:
            from opens2s.evaluation.emotion import SpeechEmotionRecognizer

            self.ser = SpeechEmotionRecognizer(cfg.eval.ser_model_path)

    def _score(self, row: dict[str, Any], data: bytes) -> None:
        from opens2s.audio.asr import word_error_rate
        from opens2s.audio.io import load_audio
        from opens2s.audio.prosody import measure_prosody
        from opens2s.audio.speaker import cosine_similarity
        from opens2s.evaluation.emotion import PREFIX

        wave, sr = read_wav(data)
        transcript = self.transcriber.transcribe(wave, sr)
        text = row.get("answer_text") or ""
        row["transcript"] = transcript
        row["wer_consistency"] = word_error_rate(text, transcript) if text.strip() else None
        if row.get("reference"):
            row["wer_reference"] = word_error_rate(row["reference"], transcript)
            row["wer_text_reference"] = word_error_rate(row["reference"], text)
        if self.judging and not row.get("question"):  # the judge reads the user's words
            question = load_audio(storage.read_bytes(row["audio"]), sr=INPUT_SAMPLE_RATE)
            row["question_transcript"] = self.transcriber.transcribe(question, INPUT_SAMPLE_RATE)
        if self.voice is not None:
            try:
                row["speaker_similarity"] = round(
                    cosine_similarity(self.speaker.embed(wave, sr), self.voice), 4
                )
            except ValueError as e:
                row["speaker_error"] = str(e)
        try:
            cues = measure_prosody(wave, sr).to_dict()
            row.update({PREFIX + k: v for k, v in cues.items()})
        except ValueError as e:
            row["prosody_error"] = str(e)
        if self.ser is not None:
            try:
                row["ser_label"], row["ser_probability"] = self.ser.predict(wave, sr)
            except Exception as e:
                row["ser_error"] = f"{type(e).__name__}: {e}"
        row["status"] = "scored"

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = rows_in(batch)
        for row, data in rows:
            if row.get("status") != "answered":
                continue
            try:
                self._score(row, data)
            except Exception as e:  # one unreadable answer fails alone
                fail(row, "score", e)
        return rows_out(rows)


class JudgeStage:
    """The empathy judge over scored rows (failed rows pass through)."""

    def __init__(self, platform_config: dict[str, Any]) -> None:
        from opens2s.evaluation.judge import build_judge

        cfg = PlatformConfig.model_validate(platform_config)
        self.settings = cfg.eval.judge
        device = "cuda" if self.settings.gpus > 0 else "cpu"
        self.judge = build_judge(self.settings, device=device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from opens2s.evaluation.judge import judge_replies

        rows = rows_in(batch)
        live = [row for row, _ in rows if row.get("status") == "scored"]
        items = [
            {
                "question": r.get("question") or r.get("question_transcript") or "",
                "emotion": r.get("emotion"),
                "reply": r.get("answer_text") or "",
            }
            for r in live
        ]
        if items:
            try:
                results = judge_replies(self.judge, items, self.settings.max_attempts)
            except Exception as e:  # the judge itself broke: every reply of the batch says so
                results = [
                    {"judge_status": "error", "judge_error": f"{type(e).__name__}: {e}"}
                ] * len(items)
            for row, result in zip(live, results, strict=True):
                row.update(result)
        return rows_out(rows)
