"""The ingress deployment: FastAPI routes under ``@serve.ingress``.

No ``from __future__ import annotations`` here: FastAPI must see real types on the route
methods that Serve rebinds (string annotations turn ``Request`` into a query parameter).

Routes: ``GET /`` (web page) and ``/static/*``, ``GET /healthz``, ``GET /v1/info``,
``GET /v1/stats``, ``WebSocket /v1/realtime`` (PCM16 frames in, JSON events out; VAD ends the
user's turn), ``POST /v1/speech`` (an audio file in the body, options in the query → NDJSON events).
The ingress runs VAD and keeps each session's conversation; the model deployment decodes.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.websockets import WebSocketDisconnect, WebSocketState

from opens2s.config import PlatformConfig
from opens2s.serving.decode_loop import TurnRequest
from opens2s.serving.limits import RateLimiter, token_ok
from opens2s.serving.metrics import ServingMetrics
from opens2s.serving.protocol import (
    INPUT_SAMPLE_RATE,
    MIN_TURN_SECONDS,
    InputCommit,
    ProtocolError,
    ResponseCancel,
    SessionOptions,
    SessionUpdate,
    decode_pcm16,
    error_event,
    event,
    parse_client_event,
)
from opens2s.serving.session import RealtimeSession, Turn

STATIC = Path(__file__).parent / "static"
# input_sample_rate describes WebSocket frames; an upload's header carries its own rate.
_SPEECH_QUERY = frozenset(
    {"token", *(name for name in SessionOptions.model_fields if name != "input_sample_rate")}
)
_STATIC_FILES = {"app.js": "text/javascript", "pcm-worklet.js": "text/javascript"}
# What a client's WebSocket is closed with after its answer failed with model_unavailable (the model
# replica streaming it died): 1012 "service restart", reconnect and repeat the turn.
CLOSE_MODEL_LOST = 1012

api = FastAPI(title="OpenS2S realtime speech API")


def _sampling(options: SessionOptions) -> dict[str, Any]:
    fields = (
        "temperature",
        "top_p",
        "unit_temperature",
        "unit_top_p",
        "max_text_tokens",
        "max_units",
        "seed",
    )
    return {k: getattr(options, k) for k in fields if getattr(options, k) is not None}


class _Link:
    """A WebSocket with one writer lock and at most one response task."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        self.response_id: str | None = None
        self.voices: list[str] = []
        self.turn_reason: str | None = None
        self.input_rate = INPUT_SAMPLE_RATE
        self.resampler: soxr.ResampleStream | None = None
        self.ended = asyncio.Event()  # set by a response that ends the session
        self.close_code = 1000

    def end(self, code: int) -> None:
        """End the session from its response task: the receive loop returns, the socket closes
        with ``code``."""
        self.close_code = code
        self.ended.set()

    async def receive(self, timeout: float) -> dict[str, Any] | None:
        """The client's next ASGI message; None once :meth:`end` was called (also while
        waiting); ``TimeoutError`` after ``timeout`` seconds."""
        if self.ended.is_set():
            return None
        message = asyncio.ensure_future(self.ws.receive())
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            done, _ = await asyncio.wait(
                (message, ended), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ended.cancel()
            if not message.done():
                message.cancel()
        if message in done:
            return message.result()
        if ended in done:
            return None
        raise TimeoutError

    @property
    def responding(self) -> bool:
        return self.task is not None and not self.task.done()

    async def send(self, ev: dict[str, Any]) -> None:
        if ev["type"] == "response.created":
            self.response_id = ev["response_id"]
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        async with self.lock:
            try:
                await self.ws.send_text(json.dumps(ev))
            except (WebSocketDisconnect, RuntimeError):
                pass

    async def cancel_response(self) -> None:
        if self.responding:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        self.task = None

    async def close(self, code: int) -> None:
        # Not after the client's own close: the proxy would fail to forward ours (and log it).
        if (
            self.ws.application_state == WebSocketState.CONNECTED
            and self.ws.client_state != WebSocketState.DISCONNECTED
        ):
            try:
                await self.ws.close(code)
            except RuntimeError:
                pass


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    """Speaks the protocol with clients; one model handle call per response."""

    def __init__(self, model: DeploymentHandle, platform_config: dict[str, Any]) -> None:
        self.cfg = PlatformConfig.model_validate(platform_config)
        self.scfg = self.cfg.serve
        self.limits = self.scfg.limits
        self.model = model
        self.metrics = ServingMetrics()
        self.open_sessions = 0
        self._transcriber = None
        if self.scfg.transcribe_user_turns:
            from opens2s.serving.speech_stack import make_transcriber

            self._transcriber = make_transcriber(self.cfg)

    # ---- plain routes ----------------------------------------------------------------------

    @api.get("/", response_class=HTMLResponse)
    def page(self) -> FileResponse:
        """The web page."""
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @api.get("/static/{name}")
    def static(self, name: str) -> FileResponse:
        """The page's scripts."""
        if name not in _STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=_STATIC_FILES[name])

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """200 when a model replica answers and this ingress has a free session slot; 503 with
        ``status`` ``unavailable`` or ``saturated`` otherwise (``sessions``/``max_sessions``)."""
        load = {
            "sessions": self.open_sessions,
            "max_sessions": self.limits.max_sessions_per_replica,
        }
        try:
            info = await asyncio.wait_for(self.model.info.remote(), timeout=10)
        except Exception as e:
            body = {"status": "unavailable", "error": str(e)[:300], **load}
            return JSONResponse(body, status_code=503)
        if self.open_sessions >= self.limits.max_sessions_per_replica:
            return JSONResponse({"status": "saturated", "model": info["model"], **load}, 503)
        return JSONResponse({"status": "ok", "model": info["model"], **load})

    @api.get("/v1/info")
    async def info(self, request: Request, token: str | None = None) -> dict[str, Any]:
        """Sample rates, voices, limits."""
        self._check_http_auth(request, token)
        info = await self.model.info.remote()
        return {
            **info,
            "limits": self.limits.model_dump(),
            "auth": self.scfg.auth_token is not None,
        }

    @api.get("/v1/stats")
    def stats(self, request: Request, token: str | None = None) -> dict[str, Any]:
        """This ingress replica's counters (the Prometheus metrics carry the same)."""
        self._check_http_auth(request, token)
        return dict(self.metrics.stats)

    def _check_http_auth(self, request: Request, token: str | None) -> None:
        if not token_ok(self.scfg.auth_token, request.headers.get("authorization"), token):
            self.metrics.error("unauthorized")
            raise HTTPException(
                401, "missing or wrong bearer token (Authorization: Bearer <token>)"
            )

    # ---- HTTP: one uploaded utterance → NDJSON events ----------------------------------------

    @api.post("/v1/speech")
    async def speech(
        self,
        request: Request,
        token: str | None = None,
        voice: str | None = Query(None),
        system_prompt: str | None = Query(None),
        temperature: float | None = Query(None),
        top_p: float | None = Query(None),
        unit_temperature: float | None = Query(None),
        unit_top_p: float | None = Query(None),
        max_text_tokens: int | None = Query(None),
        max_units: int | None = Query(None),
        seed: int | None = Query(None),
    ) -> StreamingResponse:
        """Answer one uploaded audio file (WAV/FLAC/OGG/MP3 body); options in the query."""
        from opens2s.audio.io import AudioError, load_audio, validate_audio

        self._check_http_auth(request, token)
        unknown = sorted(set(request.query_params) - _SPEECH_QUERY)
        if unknown:
            self.metrics.error("unknown_option")
            raise HTTPException(
                400,
                f"unknown query option(s) {', '.join(unknown)}; "
                f"expected any of {', '.join(sorted(_SPEECH_QUERY))}",
            )
        try:
            options = SessionOptions(
                voice=voice,
                system_prompt=system_prompt,
                temperature=temperature,
                top_p=top_p,
                unit_temperature=unit_temperature,
                unit_top_p=unit_top_p,
                max_text_tokens=max_text_tokens,
                max_units=max_units,
                seed=seed,
            )
        except ValidationError as e:
            first = e.errors()[0]
            raise HTTPException(422, f"option {first['loc'][0]}: {first['msg']}") from e
        body = await self._read_upload(request)
        t_end = time.perf_counter()
        try:
            # The header is checked before decoding: a tiny file cannot claim hours of audio.
            wave = await asyncio.to_thread(
                load_audio, body, INPUT_SAMPLE_RATE, max_seconds=self.limits.max_turn_seconds
            )
            validate_audio(
                wave,
                INPUT_SAMPLE_RATE,
                name="upload",
                max_seconds=self.limits.max_turn_seconds,
                min_seconds=MIN_TURN_SECONDS,
            )
        except AudioError as e:
            self.metrics.error("bad_audio")
            raise HTTPException(400, f"uploaded audio: {e.problem}") from e

        async def lines() -> AsyncIterator[bytes]:
            async for ev in self._answer(wave, options, [], "http", t_end):
                yield (json.dumps(ev) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def _read_upload(self, request: Request) -> bytes:
        limit = self.limits.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.error("upload_too_large")
            raise HTTPException(413, f"upload of {declared} bytes, at most {limit} allowed")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                self.metrics.error("upload_too_large")
                raise HTTPException(413, f"upload larger than {limit} bytes")
            chunks.append(chunk)
        if size == 0:
            raise HTTPException(400, "empty body: send an audio file (WAV/FLAC/OGG/MP3)")
        return b"".join(chunks)

    # ---- one response, shared by both routes ------------------------------------------------

    async def _answer(
        self,
        wave: np.ndarray,
        options: SessionOptions,
        history: list[dict[str, Any]],
        route: str,
        t_end: float,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events of one response; an unreachable model becomes an ``error`` event."""
        rid = "resp_" + uuid.uuid4().hex[:12]
        yield event("response.created", response_id=rid)
        req = TurnRequest(
            response_id=rid,
            audio=wave.astype(np.float32),
            history=history,
            system_prompt=options.system_prompt or self.cfg.model.system_prompt,
            voice=options.voice,
            sampling=_sampling(options),
        )
        stream = self.model.options(stream=True).respond.remote(req)
        ttfa: float | None = None
        finished = False
        try:
            async for ev in stream:
                if ev["type"] == "response.audio.delta" and ttfa is None:
                    ttfa = time.perf_counter() - t_end
                if ev["type"] == "response.done":
                    finished = True
                    ev["ttfa_ms"] = None if ttfa is None else round(ttfa * 1000, 2)
                    self.metrics.response_done(route, ev["status"], ttfa, ev.get("rtf"))
                elif ev["type"] == "error":
                    self.metrics.error(ev["code"])
                yield ev
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as e:  # the model replica died or is unreachable
            self.metrics.error("model_unavailable")
            self.metrics.response_done(route, "failed", None, None)
            finished = True
            if isinstance(e, RayActorError | ReplicaUnavailableError):
                why = (
                    f"the model replica answering this turn was lost ({type(e).__name__}); "
                    "Serve replaces it: send the turn again (WebSocket: on a new session)"
                )
            else:
                why = f"the model deployment failed the response ({type(e).__name__}); retry"
            yield error_event("model_unavailable", why, response_id=rid)
            yield event("response.done", response_id=rid, status="failed")
        finally:
            if not finished:
                stream.cancel()

    # ---- WebSocket realtime ----------------------------------------------------------------

    @api.websocket("/v1/realtime")
    async def realtime(self, ws: WebSocket) -> None:
        """A realtime session: PCM16 frames and JSON events in, JSON events out."""
        await ws.accept()
        link = _Link(ws)
        auth = ws.headers.get("authorization")
        if not token_ok(self.scfg.auth_token, auth, ws.query_params.get("token")):
            self.metrics.error("unauthorized")
            await link.send(
                error_event("unauthorized", "missing or wrong token (?token= or Bearer)")
            )
            await link.close(1008)
            return
        if self.open_sessions >= self.limits.max_sessions_per_replica:
            self.metrics.error("busy")
            await link.send(error_event("busy", "too many sessions on this server; retry later"))
            await link.close(1013)
            return
        self.open_sessions += 1
        self.metrics.sessions(self.open_sessions)
        try:
            await self._session(link)
        finally:
            self.open_sessions -= 1
            self.metrics.sessions(self.open_sessions)
            await link.cancel_response()
            await link.close(link.close_code)

    async def _session(self, link: _Link) -> None:
        from opens2s.serving.speech_stack import make_vad

        session = RealtimeSession(
            vad=make_vad(self.cfg), max_turn_seconds=self.limits.max_turn_seconds
        )
        rate = RateLimiter(self.limits.max_messages_per_second)
        audio_rate = RateLimiter(self.limits.max_audio_speed, self.limits.max_audio_burst_seconds)
        t_open = time.monotonic()
        try:
            info = await self.model.info.remote()
        except Exception as e:  # no model replica can take the session now
            self.metrics.error("model_unavailable")
            await link.send(
                error_event("model_unavailable", f"no model replica answers: {e}"[:300])
            )
            return
        link.voices = list(info["voices"])
        await link.send(
            event(
                "session.created",
                session_id="sess_" + uuid.uuid4().hex[:12],
                input_sample_rate=INPUT_SAMPLE_RATE,
                output_sample_rate=info["output_sample_rate"],
                voices=info["voices"],
                limits=self.limits.model_dump(),
            )
        )
        expired = error_event(
            "session_expired",
            f"session reached its maximum length ({self.limits.max_session_seconds:g} s)",
        )
        idle = self.limits.idle_timeout_seconds
        while True:
            remaining = self.limits.max_session_seconds - (time.monotonic() - t_open)
            if remaining <= 0:  # also for a client whose frames never leave receive() idle
                self.metrics.error("session_expired")
                await link.send(expired)
                return
            try:
                msg = await link.receive(timeout=min(remaining, idle))
            except TimeoutError:
                if remaining <= idle:
                    self.metrics.error("session_expired")
                    await link.send(expired)
                    return
                if link.responding:  # the client listens to an answer: not idle
                    continue
                self.metrics.error("session_idle")
                await link.send(
                    error_event(
                        "session_idle",
                        f"nothing received for {idle:g} s (serve.limits.idle_timeout_seconds); "
                        "session closed",
                    )
                )
                return
            except WebSocketDisconnect:
                return
            if msg is None or msg["type"] == "websocket.disconnect":
                return
            if not rate.allow():
                self.metrics.error("rate_limited")
                await link.send(error_event("rate_limited", "too many messages; session closed"))
                return
            try:
                if msg.get("bytes") is not None:
                    pcm = decode_pcm16(msg["bytes"], max_bytes=self.limits.max_frame_bytes)
                    if not audio_rate.allow(pcm.size / link.input_rate):
                        self.metrics.error("audio_too_fast")
                        await link.send(
                            error_event(
                                "audio_too_fast",
                                f"audio arrives faster than {self.limits.max_audio_speed:g}x real "
                                "time; session closed",
                            )
                        )
                        return
                    if link.resampler is not None:  # the client declared another rate
                        pcm = link.resampler.resample_chunk(pcm)
                    # VAD off the event loop: other sessions' events keep flowing meanwhile.
                    events, turn = await asyncio.to_thread(session.push, pcm)
                else:
                    events, turn = await self._client_event(link, session, msg.get("text") or "")
            except ProtocolError as e:
                self.metrics.error(e.code)
                await link.send(error_event(e.code, e.message))
                continue
            except Exception as e:  # a bug must reach the client as an event, not a silent close
                self.metrics.error("internal_error")
                await link.send(error_event("internal_error", f"{type(e).__name__}: {e}"[:300]))
                continue
            for ev in events:
                await link.send(ev)
                if ev["type"] == "input.speech_started" and link.responding:
                    await link.cancel_response()  # barge-in: the user talks over the answer
            if turn is not None:
                await self._start_response(link, session, turn)

    async def _client_event(
        self, link: _Link, session: RealtimeSession, text: str
    ) -> tuple[list[dict[str, Any]], Turn | None]:
        ev = parse_client_event(text, max_bytes=self.limits.max_text_message_bytes)
        if isinstance(ev, SessionUpdate):
            # Fields sent as null go back to the server default ({"voice": null}).
            update = ev.session.model_dump(exclude_unset=True)
            if update.get("voice") is not None and update["voice"] not in link.voices:
                raise ProtocolError(
                    "unknown_voice",
                    f"unknown voice {update['voice']!r}; expected "
                    + (f"one of {', '.join(link.voices)} or " if link.voices else "")
                    + "null for the server's default voice",
                )
            session.options = SessionOptions(**(session.options.model_dump() | update))
            if "input_sample_rate" in update:
                rate = session.options.input_sample_rate or INPUT_SAMPLE_RATE
                link.input_rate = rate
                link.resampler = (
                    None
                    if rate == INPUT_SAMPLE_RATE
                    else soxr.ResampleStream(rate, INPUT_SAMPLE_RATE, 1, "float32", "HQ")
                )
            return [event("session.updated", session=session.options.model_dump())], None
        if isinstance(ev, InputCommit):
            if link.responding and link.turn_reason == "vad" and not session.in_speech:
                # VAD already ended this turn (push-to-talk released after it): the answer
                # running is the answer to it, so the commit must not replace it.
                return [], None
            events, turn = session.commit()
            if turn is None:
                raise ProtocolError("empty_turn", "input.commit with no audio since the last turn")
            return events, turn
        if isinstance(ev, ResponseCancel):
            if not link.responding:
                raise ProtocolError("no_response", "response.cancel while no response is running")
            await link.cancel_response()
            return [], None
        raise ProtocolError("unknown_event", f"unhandled event {ev!r}")

    async def _transcribe(self, link: _Link, audio: np.ndarray) -> str:
        """The user's words (sent as ``input.transcript``); empty when ASR fails."""
        try:
            text = await asyncio.to_thread(self._transcriber.transcribe, audio, INPUT_SAMPLE_RATE)
        except Exception as e:  # a failed transcript must not end the session
            self.metrics.error("transcription_failed")
            await link.send(error_event("transcription_failed", f"could not transcribe: {e}"))
            return ""
        await link.send(event("input.transcript", text=text))
        return text

    async def _start_response(self, link: _Link, session: RealtimeSession, turn: Turn) -> None:
        await link.cancel_response()
        if turn.audio.size < MIN_TURN_SECONDS * INPUT_SAMPLE_RATE:
            await link.send(
                error_event(
                    "turn_too_short", f"user turn shorter than {MIN_TURN_SECONDS:g} s: ignored"
                )
            )
            return
        t_end = time.perf_counter()
        history = list(session.history)
        transcript = None
        if self._transcriber is not None:  # in parallel with the answer
            transcript = asyncio.ensure_future(self._transcribe(link, turn.audio))

        async def run() -> None:
            text, done, lost = "", None, False
            answer = self._answer(turn.audio, session.options, history, "ws", t_end)
            try:
                async for ev in answer:
                    if ev["type"] == "response.done":
                        done = ev
                        text = ev.get("text", "")
                    elif ev["type"] == "error" and ev["code"] == "model_unavailable":
                        lost = True
                    await link.send(ev)
            except asyncio.CancelledError:
                await link.send(
                    event("response.done", response_id=link.response_id, status="cancelled")
                )
                raise
            finally:
                await answer.aclose()  # cancels the model stream when the client barged in
            if lost:  # the replica is gone: a clean close, not a session that looks alive
                link.end(CLOSE_MODEL_LOST)
                return
            if done is not None and done.get("status") == "completed":
                session.add_exchange(await transcript if transcript else "", text)

        link.response_id = None
        link.turn_reason = turn.reason
        link.task = asyncio.get_running_loop().create_task(run())
