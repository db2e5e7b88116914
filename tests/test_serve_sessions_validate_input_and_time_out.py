"""Realtime sessions and uploads against a real Serve app: validated when they arrive, idle ones
time out, every protocol error gets an error event, bad uploads a 400 before decoding.

Its own app (route prefix ``/guard``): 2 sessions per ingress replica, idle timeout 3 s.
"""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets
from conftest import free_port
from opens2s.serving.client import connected_session, post_speech, receive_until, send_audio

pytestmark = pytest.mark.timeout(300)

APP = "opens2s-guard"
TOKEN = "guard-token"
SR = 16000
MAX_SESSIONS = 2
IDLE_S = 3.0


class Server:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/guard"
        self.ws = f"ws://127.0.0.1:{port}/guard/v1/realtime?token={TOKEN}"


@pytest.fixture(scope="module")
def server(ray_local) -> Server:
    """The guard app, deployed once for this module and deleted after it."""
    from opens2s.config import load_config
    from opens2s.serving.app import build_app
    from opens2s.serving.speech_stack import demo_unit_tokenizer
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.exceptions import RayServeException

    cfg = load_config(
        None,
        {
            "serve.app_name": APP,
            "serve.route_prefix": "/guard",
            "serve.auth_token": TOKEN,
            "serve.unit_tokenizer": str(demo_unit_tokenizer(load_config(None))),
            "serve.model_num_cpus": 0.25,
            "serve.ingress_num_cpus": 0.1,
            "serve.limits.max_sessions_per_replica": MAX_SESSIONS,
            "serve.limits.idle_timeout_seconds": IDLE_S,
            "serve.autoscaling": {"min_replicas": 1, "max_replicas": 1},
        },
    )
    try:
        _get_global_client()
    except RayServeException:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    port = int(_get_global_client().http_config.port)
    serve.run(build_app(cfg), name=APP, route_prefix="/guard")
    yield Server(port)
    serve.delete(APP)


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    """A short spoken question (espeak-ng) at 16 kHz with 1.2 s of silence after it."""
    from opens2s.audio.io import resample
    from opens2s.audio.tts import EspeakTTS

    tts = EspeakTTS()
    wave, sr = tts.synthesize("How are you today?", tts.speakers()[0])
    return np.concatenate([resample(wave, sr, SR), np.zeros(int(1.2 * SR), np.float32)])


def _wav(data: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def _error_then_alive(ws, raw: str) -> dict:
    """Send ``raw``; return the error event, after checking the session still answers."""
    await ws.send(raw)
    err = (await receive_until(ws, {"error", "session.updated"}, 60))[-1]
    await ws.send(json.dumps({"type": "session.update", "session": {}}))
    assert (await receive_until(ws, {"session.updated"}, 60))[-1]["type"] == "session.updated"
    return err


def test_session_updates_are_validated_on_arrival_and_null_resets_the_voice(server) -> None:
    async def run() -> list[dict]:
        async with connected_session(server.ws) as (ws, created):
            # The tiny preset has no voices: a null resets any field, the voice as the prompt.
            update = {"system_prompt": "Answer briefly.", "seed": 7}
            await ws.send(json.dumps({"type": "session.update", "session": update}))
            chosen = (await receive_until(ws, {"session.updated", "error"}))[-1]
            reset_to = {"voice": None, "system_prompt": None}
            await ws.send(json.dumps({"type": "session.update", "session": reset_to}))
            reset = (await receive_until(ws, {"session.updated", "error"}))[-1]
            unknown = await _error_then_alive(
                ws, json.dumps({"type": "session.update", "session": {"voice": "nobody"}})
            )
            seed = await _error_then_alive(
                ws, json.dumps({"type": "session.update", "session": {"seed": 10**30}})
            )
            deep = await _error_then_alive(ws, "[" * 5000 + "]" * 5000)
            digits = await _error_then_alive(
                ws, '{"type": "session.update", "session": {"seed": ' + "7" * 5000 + "}}"
            )
            return [chosen, reset, unknown, seed, deep, digits, created]

    chosen, reset, unknown, seed, deep, digits, created = asyncio.run(run())
    assert chosen["session"]["system_prompt"] == "Answer briefly."
    assert reset["type"] == "session.updated"
    assert reset["session"]["voice"] is None and reset["session"]["system_prompt"] is None
    assert reset["session"]["seed"] == 7  # fields not sent stay as they were
    assert unknown["code"] == "unknown_voice" and "'nobody'" in unknown["message"]
    assert all(v in unknown["message"] for v in created["voices"])
    assert seed["code"] == "invalid_event" and "seed" in seed["message"]
    assert deep["code"] == "invalid_json" and "nested" in deep["message"]
    assert digits["code"] == "invalid_json" and "digits" in digits["message"]


def test_input_commit_after_vad_ended_the_turn_keeps_the_answer(server, utterance) -> None:
    async def run() -> list[dict]:
        async with connected_session(server.ws, {"max_units": 25}) as (ws, _):
            await send_audio(ws, utterance)
            events = await receive_until(ws, {"response.created", "error"})
            await ws.send(json.dumps({"type": "input.commit"}))  # push-to-talk released late
            return events + await receive_until(ws, {"response.done"})

    events = asyncio.run(run())
    types = [e["type"] for e in events]
    assert types.count("response.created") == 1, types
    stops = [e for e in events if e["type"] == "input.speech_stopped"]
    assert [e["reason"] for e in stops] == ["vad"]
    assert events[-1]["status"] == "completed"
    assert not [e for e in events if e["type"] == "error"]


def test_a_declared_input_rate_is_checked_on_arrival_and_its_frames_are_answered(
    server, utterance
) -> None:
    from opens2s.audio.io import resample

    async def run() -> tuple[dict, list[dict]]:
        async with connected_session(server.ws, {"max_units": 25}) as (ws, _):
            bad = await _error_then_alive(
                ws, json.dumps({"type": "session.update", "session": {"input_sample_rate": 1}})
            )
            rate = {"type": "session.update", "session": {"input_sample_rate": 48000}}
            await ws.send(json.dumps(rate))
            await receive_until(ws, {"session.updated"})
            await send_audio(ws, resample(utterance, SR, 48000), frame_samples=4800)
            return bad, await receive_until(ws, {"response.done", "error"})

    bad, events = asyncio.run(run())
    assert bad["code"] == "invalid_event" and "input_sample_rate" in bad["message"]
    assert "8000" in bad["message"]
    assert events[-1]["type"] == "response.done" and events[-1]["status"] == "completed"


def test_idle_sessions_time_out_and_healthz_reports_saturation(server) -> None:
    async def run() -> tuple[dict, dict, int | None]:
        async with connected_session(server.ws) as (a, _), connected_session(server.ws) as (b, _):
            async with httpx.AsyncClient() as http:
                full = await http.get(f"{server.base}/healthz", timeout=30)
            idle = (await receive_until(a, {"error"}, 60))[-1]
            try:
                await asyncio.wait_for(a.recv(), 30)
                code = None
            except websockets.ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
            await receive_until(b, {"error"}, 60)
            return full, idle, code

    full, idle, code = asyncio.run(run())
    assert full.status_code == 503
    assert full.json() | {"model": None} == {
        "status": "saturated",
        "model": None,
        "sessions": MAX_SESSIONS,
        "max_sessions": MAX_SESSIONS,
    }
    assert idle["code"] == "session_idle" and "idle_timeout_seconds" in idle["message"]
    assert code == 1000
    deadline = 50
    while (r := httpx.get(f"{server.base}/healthz", timeout=30)).status_code != 200 and deadline:
        deadline -= 1
        asyncio.run(asyncio.sleep(0.2))
    assert r.json()["status"] == "ok" and r.json()["sessions"] == 0


def _ingress_peak_rss() -> int:
    """VmHWM (peak resident set, bytes) of this app's ingress replica process."""
    import ray
    from ray.util.state import list_actors

    gcs = ray.get_runtime_context().gcs_address  # other Ray instances may run on this machine
    actors = list_actors(address=gcs, filters=[("state", "=", "ALIVE")], limit=1000)
    (pid,) = [a.pid for a in actors if a.class_name == f"ServeReplica:{APP}:Ingress"]
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_bomb_uploads_are_refused_before_decoding_within_the_memory_bound(server, tmp_path) -> None:
    one_hertz = _wav(np.zeros(32_000, np.float32), 1)
    hour = tmp_path / "hour.flac"
    with sf.SoundFile(hour, "w", 48000, 2, format="FLAC", subtype="PCM_16") as f:
        for _ in range(360):
            f.write(np.zeros((480_000, 2), np.int16))
    before = _ingress_peak_rss()
    answers = [post_speech(server.base, b, token=TOKEN) for b in (one_hertz, hour.read_bytes())]
    growth = _ingress_peak_rss() - before
    print(f"ingress peak RSS grew {growth / 2**20:.1f} MiB")
    assert answers[0][0] == 400 and "1 Hz" in answers[0][1]
    assert answers[1][0] == 400 and "3600.0 s" in answers[1][1]
    assert growth < 32 * 2**20  # docs/serving.md: under 32 MiB per request


def test_bad_uploads_get_a_400_naming_the_problem(server, utterance) -> None:
    cases = {
        "thousand_channels": _wav(np.zeros((10, 1000), np.float32), SR),
        "one_hertz": _wav(np.zeros(32_000, np.float32), 1),
        "random": np.random.default_rng(0).bytes(5000),
        "fifty_ms": _wav(utterance[: SR // 20], SR),
    }
    answers = {k: post_speech(server.base, v, token=TOKEN) for k, v in cases.items()}
    assert all(status == 400 for status, _ in answers.values()), answers
    assert "1000 channels, expected 1 to 8" in answers["thousand_channels"][1]
    assert "1 Hz, expected 8000-192000 Hz" in answers["one_hertz"][1]
    assert "not a readable audio file" in answers["random"][1]
    assert "BytesIO" not in answers["random"][1]
    assert "too short" in answers["fifty_ms"][1] and "0.1 s" in answers["fifty_ms"][1]
    status, text = post_speech(
        server.base, _wav(utterance, SR), token=TOKEN, params={"temprature": 0.5}
    )
    assert status == 400 and "temprature" in text and "temperature" in text
