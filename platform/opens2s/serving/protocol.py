"""The realtime protocol: client events in, server events out (names after OpenAI Realtime).

Client → server on ``/v1/realtime``:
- binary frames: raw PCM16 little-endian mono at 16 kHz (any length up to the frame limit, an even
  number of bytes);
- JSON text frames: ``session.update`` (voice, system prompt, sampling), ``input.commit`` (end the
  user turn now instead of waiting for VAD), ``response.cancel``.

Server → client, JSON text frames (and the same objects as NDJSON lines from ``POST /v1/speech``):
``session.created``, ``session.updated``, ``input.speech_started``, ``input.speech_stopped``,
``response.created``, ``response.text.delta``, ``response.audio.delta`` (``audio`` is base64 of
PCM16 LE mono at ``sample_rate``; base64-in-JSON so that WebSocket and NDJSON carry one format and
every event stays self-describing), ``response.done`` (``ttfa_ms``, ``rtf``), ``error``
(``code``, ``message``).
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

INPUT_SAMPLE_RATE = 16000
MIN_TURN_SECONDS = 0.1
"""Shortest user turn answered, on the WebSocket and on ``POST /v1/speech`` alike."""
MAX_SEED = 2**63 - 1


class ProtocolError(ValueError):
    """A client message that breaks the protocol; ``code`` is the error event's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SessionOptions(BaseModel):
    """What a client may choose for its session; every field optional (None = server default)."""

    model_config = ConfigDict(extra="forbid")

    voice: str | None = Field(None, max_length=64)
    system_prompt: str | None = Field(None, max_length=2000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    unit_temperature: float | None = Field(None, ge=0, le=2)
    unit_top_p: float | None = Field(None, gt=0, le=1)
    max_text_tokens: int | None = Field(None, gt=0, le=512)
    max_units: int | None = Field(None, gt=0, le=2000)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    input_sample_rate: int | None = Field(None, ge=8000, le=192000)
    """Rate of the client's PCM16 frames (WebSocket only; None = 16 kHz); resampled to 16 kHz."""


class SessionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["session.update"]
    session: SessionOptions = SessionOptions()


class InputCommit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["input.commit"]


class ResponseCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["response.cancel"]


ClientEvent = Annotated[SessionUpdate | InputCommit | ResponseCancel, Field(discriminator="type")]
_CLIENT_EVENT = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = ("session.update", "input.commit", "response.cancel")


def parse_client_event(
    text: str | bytes, *, max_bytes: int
) -> SessionUpdate | InputCommit | ResponseCancel:
    """Parse one JSON text frame; raise :class:`ProtocolError` naming what is wrong."""
    if len(text) > max_bytes:
        raise ProtocolError(
            "message_too_large", f"JSON message of {len(text)} bytes, at most {max_bytes} allowed"
        )
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError("invalid_json", f"message is not valid JSON: {e}") from e
    except RecursionError as e:
        raise ProtocolError(
            "invalid_json", "JSON nested too deeply; events are flat objects"
        ) from e
    except ValueError as e:  # e.g. an integer beyond Python's 4300-digit conversion limit
        raise ProtocolError("invalid_json", f"message is not usable JSON: {e}"[:300]) from e
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("invalid_event", 'a client event is a JSON object with a string "type"')
    if obj["type"] not in CLIENT_EVENT_TYPES:
        raise ProtocolError(
            "unknown_event",
            f"unknown event type {obj['type']!r}; expected one of {', '.join(CLIENT_EVENT_TYPES)}",
        )
    try:
        return _CLIENT_EVENT.validate_python(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or obj["type"]
        raise ProtocolError("invalid_event", f"{obj['type']}: {where}: {first['msg']}") from e


def decode_pcm16(frame: bytes, *, max_bytes: int) -> np.ndarray:
    """A binary frame of PCM16 LE mono → float32 samples in [-1, 1]."""
    if len(frame) > max_bytes:
        raise ProtocolError(
            "frame_too_large", f"audio frame of {len(frame)} bytes, at most {max_bytes} allowed"
        )
    if len(frame) % 2:
        raise ProtocolError(
            "not_pcm",
            f"audio frame of {len(frame)} bytes is not PCM16 (an even number of bytes expected)",
        )
    return np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0


def encode_pcm16(wave: np.ndarray) -> bytes:
    """Float samples → PCM16 LE bytes (clipped to full scale)."""
    return (
        (np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    )


def pcm16_from_base64(data: str) -> np.ndarray:
    """The ``audio`` field of a ``response.audio.delta`` → float32 samples (for clients and tests)."""
    return np.frombuffer(base64.b64decode(data), dtype="<i2").astype(np.float32) / 32768.0


def event(type_: str, **fields: Any) -> dict[str, Any]:
    """A server event: a JSON object with ``type`` first."""
    return {"type": type_, **fields}


def error_event(code: str, message: str, **fields: Any) -> dict[str, Any]:
    """An ``error`` event; the session stays open unless the server says otherwise."""
    return event("error", code=code, message=message, **fields)


def audio_delta(response_id: str, wave: np.ndarray, sample_rate: int) -> dict[str, Any]:
    """A ``response.audio.delta`` carrying ``wave`` as base64 PCM16."""
    return event(
        "response.audio.delta",
        response_id=response_id,
        audio=base64.b64encode(encode_pcm16(wave)).decode("ascii"),
        sample_rate=sample_rate,
        samples=int(np.asarray(wave).shape[-1]),
    )
