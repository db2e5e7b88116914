"""Python clients of the API: a realtime WebSocket talker and an NDJSON reader.

Used by the tests, the benchmark and anyone scripting the server: they collect what the server
streams (events, decoded audio, time to first audio seen by the client).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
import websockets
from websockets.asyncio.client import ClientConnection

from opens2s.serving.protocol import pcm16_from_base64


@dataclass
class Reply:
    """One response as a client saw it."""

    events: list[dict[str, Any]] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    sample_rate: int = 0
    client_ttfa_s: float | None = None

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    @property
    def done(self) -> dict[str, Any]:
        return next(e for e in self.events if e["type"] == "response.done")

    @property
    def text(self) -> str:
        return "".join(e["delta"] for e in self.events if e["type"] == "response.text.delta")

    @property
    def wave(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)

    def add(self, ev: dict[str, Any], t_end: float) -> None:
        self.events.append(ev)
        if ev["type"] == "response.audio.delta":
            if self.client_ttfa_s is None:
                self.client_ttfa_s = time.perf_counter() - t_end
            self.sample_rate = ev["sample_rate"]
            self.audio.append(pcm16_from_base64(ev["audio"]))


def pcm16(wave: np.ndarray) -> bytes:
    """Float samples → PCM16 LE bytes."""
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def wav_bytes(wave: np.ndarray, sr: int = 16000) -> bytes:
    """A 16-bit WAV file in memory."""
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def receive_until(ws, types: set[str], timeout: float = 120) -> list[dict[str, Any]]:
    """Events up to and including the first whose type is in ``types``."""
    out = []
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        out.append(ev)
        if ev["type"] in types:
            return out


async def send_audio(ws, wave: np.ndarray, frame_samples: int = 1600) -> None:
    """Send samples as PCM16 binary frames of ``frame_samples`` (100 ms by default)."""
    data = pcm16(wave)
    step = 2 * frame_samples
    for i in range(0, len(data), step):
        await ws.send(data[i : i + step])


async def speak_turn(ws, wave: np.ndarray, frame_samples: int = 1600) -> tuple[list[dict], Reply]:
    """Send one utterance (with its trailing silence) as PCM16 frames; VAD ends the turn.

    Returns the events before the response (speech started/stopped) and the response.
    """
    await send_audio(ws, wave, frame_samples)
    before = await receive_until(ws, {"response.created", "error"})
    t_end = time.perf_counter()
    reply = Reply()
    reply.add(before.pop(), t_end)
    if reply.events[0]["type"] == "error":
        return before, reply
    while reply.events[-1]["type"] != "response.done":
        reply.add(json.loads(await asyncio.wait_for(ws.recv(), 120)), t_end)
    return before, reply


class SessionRefused(RuntimeError):
    """The server answered a new session, or its ``session.update``, with something else.

    ``event`` is what it sent instead (an ``error`` such as ``busy`` or ``unauthorized``), or None
    when it closed the connection first; ``close_code`` is set in that case.
    """

    def __init__(self, message: str, event: dict[str, Any] | None, close_code: int | None) -> None:
        super().__init__(message)
        self.event = event
        self.close_code = close_code


@asynccontextmanager
async def connected_session(
    url: str,
    options: dict[str, Any] | None = None,
    *,
    timeout: float = 120,
    max_size: int | None = None,
) -> AsyncIterator[tuple[ClientConnection, dict[str, Any]]]:
    """A realtime connection whose session the server created: yields it and ``session.created``.

    With ``options``, a ``session.update`` is sent and confirmed first. Raises
    :class:`SessionRefused` when the server sends anything else first (busy, unauthorized,
    model_unavailable, an invalid option) or closes the connection.
    """
    where = url.split("?")[0]  # the query may carry the token
    async with websockets.connect(url, max_size=max_size) as ws:
        try:
            created = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        except websockets.ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            raise SessionRefused(
                f"{where} closed the connection (code {code}) before session.created", None, code
            ) from e
        if created["type"] != "session.created":
            raise SessionRefused(
                f"{where} answered {created.get('code', created['type'])!r} "
                f"({created.get('message', '')}) instead of session.created",
                created,
                None,
            )
        if options:
            await ws.send(json.dumps({"type": "session.update", "session": options}))
            updated = (await receive_until(ws, {"session.updated", "error"}, timeout))[-1]
            if updated["type"] == "error":
                raise SessionRefused(
                    f"{where} refused session.update {options}: {updated['message']}", updated, None
                )
        yield ws, created


async def realtime_session(
    url: str, turns: list[np.ndarray], options: dict[str, Any] | None = None
) -> list[tuple[list[dict], Reply]]:
    """Open a session, optionally ``session.update``, speak each turn, collect the answers."""
    async with connected_session(url, options) as (ws, _):
        return [await speak_turn(ws, w) for w in turns]


def post_speech(
    base: str, body: bytes, *, token: str | None, params: dict[str, Any] | None = None
) -> tuple[int, Reply | str]:
    """POST /v1/speech; (status, Reply) on 200, (status, error text) otherwise."""
    import httpx  # a dev dependency; the realtime client needs only websockets

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    t0 = time.perf_counter()
    with httpx.stream(
        "POST", f"{base}/v1/speech", content=body, params=params, headers=headers, timeout=120
    ) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.text
        reply = Reply()
        for line in r.iter_lines():
            if line.strip():
                reply.add(json.loads(line), t0)
    return 200, reply
