"""Serve's proxy refuses WebSocket messages over 1 MiB itself (opens2s.serving.proxy_limits).

Without the cap the proxy reads a message of up to 16 MiB whole and forwards it to the ingress
before the ingress can refuse it (bench/robustness.py measured ~50 MiB of proxy RSS per 16 MiB
frame). conftest.py sets the proxy callback in the environment before Ray starts, as
docs/serving.md tells a cluster to; a tiny echo deployment shows what reaches a replica.
"""

from __future__ import annotations

import asyncio

import pytest
import websockets
from conftest import free_port
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

pytestmark = pytest.mark.timeout(180)

APP = "opens2s-proxy-cap"
echo_api = FastAPI()


@echo_api.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            data = await ws.receive_bytes()
            await ws.send_text(str(len(data)))
    except WebSocketDisconnect:
        pass


def test_the_proxy_closes_on_a_message_over_1_mib_and_forwards_one_under_it(ray_local) -> None:
    from opens2s.serving.proxy_limits import DEFAULT_MAX_BYTES, cap_websocket_messages
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.exceptions import RayServeException

    @serve.deployment(ray_actor_options={"num_cpus": 0.05})
    @serve.ingress(echo_api)
    class Echo:
        pass

    try:
        _get_global_client()
    except RayServeException:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    port = int(_get_global_client().http_config.port)
    serve.run(Echo.bind(), name=APP, route_prefix="/proxy-cap")
    url = f"ws://127.0.0.1:{port}/proxy-cap/echo"

    async def send(size: int) -> str:
        async with websockets.connect(url, open_timeout=30) as ws:
            await ws.send(bytes(size))
            try:
                return await asyncio.wait_for(ws.recv(), 60)
            except websockets.ConnectionClosed as e:
                return f"closed {e.rcvd.code if e.rcvd else None}"

    try:
        under, over = asyncio.run(send(DEFAULT_MAX_BYTES)), asyncio.run(send(DEFAULT_MAX_BYTES + 1))
    finally:
        serve.delete(APP)
    assert under == str(DEFAULT_MAX_BYTES)
    assert over == "closed 1009"
    # the callback itself: uvicorn servers built after it get the cap
    import uvicorn

    original = uvicorn.Config
    try:
        assert cap_websocket_messages() == []
        assert uvicorn.Config(echo_api).ws_max_size == DEFAULT_MAX_BYTES
    finally:
        uvicorn.Config = original
