"""The Serve application end to end: real Ray Serve, real WebSocket / HTTP clients, real Chromium.

One app is deployed for the module (tiny model, real vocoder and VAD, auth on, autoscaling 1..2
with a low target so that four sessions scale it); tests run in file order and the last one kills
the model replica.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from conftest import free_port
from opens2s.serving.client import (
    connected_session,
    post_speech,
    realtime_session,
    receive_until,
    send_audio,
    speak_turn,
    wav_bytes,
)

pytestmark = pytest.mark.timeout(240)

APP = "opens2s-test"
TOKEN = "test-token-123"
SR = 16000
SENTENCE = "I had a really long day at work today."


class Server:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/v1/realtime?token={TOKEN}"


@pytest.fixture(scope="module")
def utterance(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """A spoken sentence (espeak-ng) at 16 kHz with 0.4 s of silence before and 1.2 s after."""
    from opens2s.audio.io import resample
    from opens2s.audio.tts import EspeakTTS

    tts = EspeakTTS()
    wave, sr = tts.synthesize(SENTENCE, tts.speakers()[0])
    wave = resample(wave, sr, SR)
    pad = np.zeros
    return np.concatenate([pad(int(0.4 * SR), np.float32), wave, pad(int(1.2 * SR), np.float32)])


@pytest.fixture(scope="module")
def serve_unit_tokenizer() -> Path:
    """The unit tokenizer the vocoder inverts (fitted on espeak speech once, then cached)."""
    from opens2s.config import load_config
    from opens2s.serving.speech_stack import demo_unit_tokenizer

    return demo_unit_tokenizer(load_config(None))


@pytest.fixture(scope="module")
def server(ray_local, serve_unit_tokenizer: Path) -> Server:
    """The app, deployed once for this module and deleted after it."""
    from opens2s.config import load_config
    from opens2s.serving.app import build_app
    from ray import serve
    from ray.serve.context import _get_global_client

    cfg = load_config(
        None,
        {
            "serve.app_name": APP,
            "serve.auth_token": TOKEN,
            "serve.transcribe_user_turns": True,
            "serve.unit_tokenizer": str(serve_unit_tokenizer),
            "serve.model_num_cpus": 0.25,
            "serve.ingress_num_cpus": 0.1,
            "serve.limits.max_upload_bytes": 1_000_000,
            "serve.limits.max_frame_bytes": 16_000,
            "serve.autoscaling": {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 1.5,
                "upscale_delay_s": 0.5,
                "downscale_delay_s": 2.0,
                # Serve warns below its 10 s metrics push interval; replicas report that seldom anyway.
                "look_back_period_s": 11.0,
            },
        },
    )
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    port = int(_get_global_client().http_config.port)
    serve.run(build_app(cfg), name=APP, route_prefix="/")
    yield Server(port)
    serve.delete(APP)


def model_replicas() -> int:
    from ray import serve

    app = serve.status().applications[APP]
    return app.deployments["S2SModel"].replica_states.get("RUNNING", 0)


def assert_valid_answer(reply, expect_sr: int | None = None) -> None:
    """Text deltas, audio deltas forming a real waveform, and a completed response.done."""
    types = reply.types
    assert types[0] == "response.created" and types[-1] == "response.done", types
    assert "response.text.delta" in types and "response.audio.delta" in types, set(types)
    done = reply.done
    assert done["status"] == "completed", done
    wave = reply.wave
    assert wave.size > 0 and np.isfinite(wave).all() and np.abs(wave).max() <= 1.0
    assert float(np.sqrt(np.mean(wave**2))) > 1e-3, "the answer is silent"
    assert abs(wave.size / reply.sample_rate - done["audio_seconds"]) < 0.01
    assert done["ttfa_ms"] is not None and done["ttfa_ms"] > 0
    assert done["rtf"] is not None and done["rtf"] > 0
    assert reply.text == done["text"]
    if expect_sr is not None:
        assert reply.sample_rate == expect_sr


def test_websocket_turn_streams_text_and_audio_then_a_second_turn_uses_the_conversation(
    server: Server, utterance: np.ndarray
) -> None:
    greedy = {"temperature": 0.0}
    [(before1, first), (before2, second)] = asyncio.run(
        realtime_session(server.ws, [utterance, utterance], greedy)
    )
    info = httpx.get(f"{server.base}/v1/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    for before, reply in ((before1, first), (before2, second)):
        before = [e for e in before if e["type"] != "input.transcript"]  # ASR runs alongside
        assert [e["type"] for e in before] == ["input.speech_started", "input.speech_stopped"]
        assert before[1]["reason"] == "vad"
        assert_valid_answer(reply, info["output_sample_rate"])
    # Greedy decoding of the same audio: only the conversation so far can change the answer.
    assert second.text != first.text


def test_user_turns_are_transcribed_for_the_client_and_the_conversation(
    server: Server, utterance
) -> None:
    from opens2s.audio.asr import word_error_rate

    async def one_turn() -> list[dict]:
        async with connected_session(server.ws) as (ws, _):
            await send_audio(ws, utterance)
            events = await receive_until(ws, {"response.done"})
            if not any(e["type"] == "input.transcript" for e in events):
                events += await receive_until(ws, {"input.transcript"})
            return events

    events = asyncio.run(one_turn())
    transcript = next(e["text"] for e in events if e["type"] == "input.transcript")
    assert word_error_rate(SENTENCE, transcript) <= 0.35, transcript


def test_http_speech_streams_the_same_events_as_ndjson(server: Server, utterance) -> None:
    status, reply = post_speech(server.base, wav_bytes(utterance), token=TOKEN)
    assert status == 200, reply
    assert_valid_answer(reply)


def test_bad_input_gets_a_clear_error_and_the_session_keeps_working(
    server: Server, utterance
) -> None:
    async def misbehave() -> list[dict]:
        async with connected_session(server.ws) as (ws, _):
            errors = []
            for bad in (b"\x01\x02\x03", b"\x00" * 20_000, "{not json", '{"type": "launch"}'):
                await ws.send(bad)
                errors += await receive_until(ws, {"error"})
            _, reply = await speak_turn(ws, utterance)
            return errors, reply

    errors, reply = asyncio.run(misbehave())
    assert [e["code"] for e in errors] == [
        "not_pcm",
        "frame_too_large",
        "invalid_json",
        "unknown_event",
    ]
    assert all(e["message"] for e in errors)
    assert_valid_answer(reply)

    async def no_token() -> list[dict]:
        async with websockets.connect(server.ws.split("?")[0]) as ws:
            return [json.loads(await ws.recv())]

    assert asyncio.run(no_token())[0]["code"] == "unauthorized"

    async def flood() -> dict:
        async with connected_session(server.ws) as (ws, _):
            frame = b"\x00\x00" * 8000  # 0.5 s of silence
            try:
                for _ in range(100):  # 50 s of audio at once: beyond the 30 s burst
                    await ws.send(frame)
            except websockets.ConnectionClosed:
                pass
            return (await receive_until(ws, {"error"}))[-1]

    assert asyncio.run(flood())["code"] == "audio_too_fast"
    body = wav_bytes(utterance)
    assert post_speech(server.base, body, token=None)[0] == 401
    assert post_speech(server.base, body, token="wrong")[0] == 401
    status, text = post_speech(server.base, b"\x00" * 1_200_000, token=TOKEN)
    assert status == 413 and "at most 1000000" in text
    status, text = post_speech(server.base, b"RIFF-not-really-audio", token=TOKEN)
    assert status == 400 and "not a readable audio file" in text
    status, text = post_speech(server.base, body, token=TOKEN, params={"temperature": -1})
    assert status == 422 and "temperature" in text
    status, reply = post_speech(server.base, body, token=TOKEN, params={"voice": "nobody"})
    assert status == 200 and reply.types == ["response.created", "error", "response.done"]
    assert reply.events[1]["code"] == "invalid_request" and "nobody" in reply.events[1]["message"]
    assert reply.done["status"] == "failed"


def test_four_concurrent_sessions_complete_while_another_client_misbehaves(
    server: Server, utterance
) -> None:
    async def garbage() -> list[str]:
        codes = []
        async with connected_session(server.ws) as (ws, _):
            for _ in range(5):
                await ws.send(b"\x01" * 33_333)
                codes += [e["code"] for e in await receive_until(ws, {"error"})]
        return codes

    def oversized_upload() -> int:
        return post_speech(server.base, b"\x00" * 2_000_000, token=TOKEN)[0]

    async def main():
        upload = asyncio.get_running_loop().run_in_executor(None, oversized_upload)
        sessions = [realtime_session(server.ws, [utterance]) for _ in range(4)]
        return await asyncio.gather(*sessions, garbage(), upload)

    *sessions, codes, upload_status = asyncio.run(main())
    assert upload_status == 413
    assert codes == ["frame_too_large"] * 5
    for [(before, reply)] in sessions:
        before = [e["type"] for e in before if e["type"] != "input.transcript"]
        assert before == ["input.speech_started", "input.speech_stopped"]
        assert_valid_answer(reply)


def test_speaking_during_an_answer_cancels_it_and_the_new_turn_is_answered(
    server: Server, utterance
) -> None:
    async def barge_in() -> tuple[list[dict], list[dict]]:
        async with connected_session(server.ws, {"max_units": 2000}) as (ws, _):
            await send_audio(ws, utterance)
            first = await receive_until(ws, {"response.audio.delta"})
            await send_audio(ws, utterance)  # the user talks over the answer
            rest = await receive_until(ws, {"input.speech_stopped"})
            rest += await receive_until(ws, {"response.done"})  # the interrupted answer's end
            while not (rest[-1]["type"] == "response.done" and rest[-1]["status"] != "cancelled"):
                rest += await receive_until(ws, {"response.done"})
            return first, rest

    first, rest = asyncio.run(barge_in())
    first_id = next(e["response_id"] for e in first if e["type"] == "response.created")
    cancelled = [e for e in rest if e["type"] == "response.done" and e["status"] == "cancelled"]
    assert [e["response_id"] for e in cancelled] == [first_id]
    types = [e["type"] for e in rest]
    assert types.index("input.speech_started") < types.index("response.done")
    assert rest[-1]["status"] == "completed" and rest[-1]["response_id"] != first_id


def test_prometheus_metrics_carry_ttfa_and_sessions(server: Server, utterance) -> None:
    import ray

    assert post_speech(server.base, wav_bytes(utterance), token=TOKEN)[0] == 200
    assert post_speech(server.base, b"junk", token=TOKEN)[0] == 400
    port = ray._private.worker.global_worker.node.metrics_export_port
    text = ""
    # Ray's metrics agent exports what replicas recorded every few seconds.
    while "opens2s_ttfa_seconds_bucket{" not in text or 'code="bad_audio"' not in text:
        time.sleep(1.0)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'route="http"' in text and "opens2s_rtf_bucket" in text
    assert "opens2s_active_sessions" in text and 'status="completed"' in text
    assert "ray_serve_num_http_requests" in text or "serve_num_http_requests" in text


def test_model_deployment_scales_to_two_replicas_under_load_and_back_to_one(
    server: Server, utterance
) -> None:
    assert model_replicas() >= 1
    stop = threading.Event()
    body = wav_bytes(utterance)

    def long_answers() -> None:
        # Long answers keep responses (ongoing requests) open above the target of 1.5.
        while not stop.is_set():
            post_speech(server.base, body, token=TOKEN, params={"max_units": 1500})

    threads = [threading.Thread(target=long_answers, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        while model_replicas() < 2:
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    while model_replicas() > 1:
        time.sleep(0.5)
    assert model_replicas() == 1


def test_web_page_in_headless_chromium_completes_a_turn_and_plays_audio(
    server: Server, utterance, artifacts_dir: Path, tmp_path: Path
) -> None:
    from opens2s.audio.io import write_audio
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    mic = write_audio(tmp_path / "mic.wav", np.concatenate([utterance, np.zeros(SR * 8)]), SR)
    os.environ["SE_AVOID_STATS"] = "true"  # else Selenium Manager tries the internet
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    home = tempfile.mkdtemp(prefix="chromium-home-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic.resolve()}",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={home}",
        "--window-size=1100,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        driver.get(f"{server.base}/?token={TOKEN}")
        assert "OpenS2S" in driver.title
        driver.find_element(By.ID, "start").click()
        state = {}
        while not (state.get("turnsDone", 0) >= 1 and state.get("buffersPlayed", 0) > 0):
            assert not (state.get("errors") or []), state["errors"]
            time.sleep(0.5)
            state = driver.execute_script("return window.opens2s")
        driver.save_screenshot(str(artifacts_dir / "serve_web_page.png"))
    finally:
        driver.quit()
        shutil.rmtree(home, ignore_errors=True)
    assert state["micLevelMax"] > 0.05, "the fake microphone delivered silence"
    assert state["audioSamplesReceived"] > 0 and state["playedLevelMax"] > 0.005
    assert state["lastTtfaMs"] is not None and state["texts"][0]
    assert (artifacts_dir / "serve_web_page.png").stat().st_size > 10_000


def test_killing_the_model_replica_mid_response_errors_that_client_then_serve_recovers(
    server: Server, utterance
) -> None:
    import ray

    async def killed_mid_response() -> list[dict]:
        async with connected_session(server.ws, {"max_units": 2000}) as (ws, _):
            await send_audio(ws, utterance)
            await receive_until(ws, {"response.audio.delta"})
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor["name"].startswith(f"SERVE_REPLICA::{APP}#S2SModel"):
                    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
            return await receive_until(ws, {"response.done"})

    tail = asyncio.run(killed_mid_response())
    errors = [e for e in tail if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["model_unavailable"]
    assert tail[-1]["status"] == "failed"
    while httpx.get(f"{server.base}/healthz", timeout=30).status_code != 200:
        time.sleep(0.5)
    [(_, reply)] = asyncio.run(realtime_session(server.ws, [utterance]))
    assert_valid_answer(reply)
