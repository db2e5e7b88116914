"""Session limits and the stats route on a real Serve app with small limits: real WebSockets.

Its own app (route prefix ``/limits``) next to whatever else this Ray runs: at most 2 sessions per
ingress replica and 5 s per session, so that the limits show up in seconds.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
import websockets
from conftest import free_port
from opens2s.serving.client import connected_session, receive_until, send_audio, speak_turn

pytestmark = pytest.mark.timeout(240)

APP = "opens2s-limits"
TOKEN = "limits-token"
SR = 16000
MAX_SESSIONS = 2
MAX_SESSION_S = 5.0


class Server:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/limits"
        self.ws = f"ws://127.0.0.1:{port}/limits/v1/realtime?token={TOKEN}"

    def stats(self) -> dict:
        r = httpx.get(f"{self.base}/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def server(ray_local) -> Server:
    """The small-limits app, deployed once for this module and deleted after it."""
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
            "serve.route_prefix": "/limits",
            "serve.auth_token": TOKEN,
            "serve.unit_tokenizer": str(demo_unit_tokenizer(load_config(None))),
            "serve.model_num_cpus": 0.25,
            "serve.ingress_num_cpus": 0.1,
            "serve.limits.max_sessions_per_replica": MAX_SESSIONS,
            "serve.limits.max_session_seconds": MAX_SESSION_S,
            "serve.autoscaling": {"min_replicas": 1, "max_replicas": 1},
        },
    )
    try:  # another test module may have started Serve (with its own HTTP port) already
        _get_global_client()
    except RayServeException:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    port = int(_get_global_client().http_config.port)
    serve.run(build_app(cfg), name=APP, route_prefix="/limits")
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


def wait_for_sessions(server: Server, n: int) -> dict:
    """Stats once the ingress counts ``n`` open sessions (it updates them as sockets close)."""
    deadline = time.monotonic() + 10
    while (stats := server.stats())["sessions"] != n and time.monotonic() < deadline:
        time.sleep(0.1)
    return stats


def test_a_session_beyond_the_per_replica_limit_gets_busy_and_close_1013(server: Server) -> None:
    async def main() -> tuple[list[dict], int | None, dict]:
        async with (
            connected_session(server.ws, timeout=30),
            connected_session(server.ws, timeout=30),
        ):
            async with websockets.connect(server.ws) as extra:
                events = []
                try:
                    while True:  # until the server closes it
                        events.append(json.loads(await asyncio.wait_for(extra.recv(), 30)))
                except websockets.ConnectionClosed:
                    code = extra.close_code
        # one of the two left: a new session fits again
        async with connected_session(server.ws, timeout=30) as (_, created):
            pass
        return events, code, created

    errors_before = wait_for_sessions(server, 0)["errors"]
    events, code, created = asyncio.run(main())
    assert [e["type"] for e in events] == ["error"] and events[0]["code"] == "busy", events
    assert code == 1013
    assert created["type"] == "session.created", created
    stats = wait_for_sessions(server, 0)
    assert stats["sessions"] == 0 and stats["errors"] == errors_before + 1


def test_a_session_past_max_session_seconds_gets_session_expired_even_while_sending(
    server: Server,
) -> None:
    async def main() -> tuple[list[dict], float, int | None]:
        async with connected_session(server.ws, timeout=30) as (ws, _):
            t0 = time.monotonic()
            silence = np.zeros(1600, np.float32)  # 100 ms frames in real time, no speech

            async def talk() -> None:
                try:
                    while True:
                        await send_audio(ws, silence)
                        await asyncio.sleep(0.1)
                except websockets.ConnectionClosed:
                    pass

            sender = asyncio.ensure_future(talk())
            try:
                events = await receive_until(ws, {"error"}, timeout=MAX_SESSION_S + 20)
                elapsed = time.monotonic() - t0
                await ws.wait_closed()
            finally:
                sender.cancel()
            return events, elapsed, ws.close_code

    errors_before = wait_for_sessions(server, 0)["errors"]
    events, elapsed, code = asyncio.run(main())
    assert events[-1]["code"] == "session_expired", events
    assert f"{MAX_SESSION_S:g} s" in events[-1]["message"]
    assert MAX_SESSION_S - 0.5 <= elapsed <= MAX_SESSION_S + 10
    assert code == 1000
    assert wait_for_sessions(server, 0)["errors"] == errors_before + 1


def test_stats_count_open_sessions_answers_errors_and_need_the_token(
    server: Server, utterance: np.ndarray
) -> None:
    before = wait_for_sessions(server, 0)
    assert set(before) == {"sessions", "responses", "errors", "last_ttfa_ms"}
    assert httpx.get(f"{server.base}/v1/stats").status_code == 401
    assert server.stats()["errors"] == before["errors"] + 1  # the 401 is counted

    async def main() -> tuple[dict, dict]:
        async with connected_session(server.ws, {"max_units": 25}, timeout=30) as (ws, _):
            _, reply = await speak_turn(ws, utterance)
            during = await asyncio.to_thread(server.stats)
            return reply.done, during

    done, during = asyncio.run(main())
    assert done["status"] == "completed" and done["ttfa_ms"] > 0
    assert during["sessions"] == 1
    assert during["responses"] == before["responses"] + 1
    assert during["last_ttfa_ms"] == pytest.approx(done["ttfa_ms"], abs=0.1)
    assert during["errors"] == before["errors"] + 1  # the turn itself raised none
    after = wait_for_sessions(server, 0)
    assert after["sessions"] == 0 and after["responses"] == during["responses"]
