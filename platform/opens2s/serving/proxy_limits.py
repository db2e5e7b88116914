"""A cap on WebSocket messages in Serve's HTTP proxy, below uvicorn's 16 MiB default.

Serve's proxy runs uvicorn with its default ``ws_max_size`` (16 MiB) and exposes no setting for
it, so a client can send one 16 MiB binary frame that the proxy reads whole and forwards to the
ingress before the ingress refuses it (``frame_too_large``): ~50 MiB of peak RSS in the proxy and
~25 MiB in the ingress per such frame, most of it kept by the allocator afterwards
(``bench/robustness.py`` measured it). With the cap, a message over ``OPENS2S_PROXY_WS_MAX_BYTES``
(default 1 MiB) is refused by the proxy itself with close code 1009 while it arrives.

Serve calls the function named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` in each proxy
process before it starts uvicorn; :func:`cap_websocket_messages` is that function. Set
:func:`proxy_environment` in the environment of every Ray node (before ``ray start`` or a local
``ray.init``): the proxy inherits it from its raylet.
"""

from __future__ import annotations

import os
from typing import Any

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "opens2s.serving.proxy_limits:cap_websocket_messages"
MAX_BYTES_ENV = "OPENS2S_PROXY_WS_MAX_BYTES"
DEFAULT_MAX_BYTES = 2**20
"""1 MiB: far above the ingress's own limits (``max_frame_bytes`` 64 kB, JSON 16 kB), so frames
a little too large still get their ``error`` event and the session goes on."""


def proxy_environment(max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, str]:
    """Environment variables that make Serve's proxies cap WebSocket messages at ``max_bytes``."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    return {CALLBACK_ENV: CALLBACK, MAX_BYTES_ENV: str(max_bytes)}


def cap_websocket_messages() -> list[Any]:
    """Serve's proxy callback: uvicorn servers created in this process get ``ws_max_size`` =
    ``OPENS2S_PROXY_WS_MAX_BYTES``. Returns no middleware."""
    import uvicorn

    raw = os.environ.get(MAX_BYTES_ENV, str(DEFAULT_MAX_BYTES))
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{MAX_BYTES_ENV}={raw!r}: expected a positive number of bytes")
    limit = int(raw)
    base = uvicorn.Config
    if getattr(base, "opens2s_ws_max_size", None) == limit:
        return []

    class CappedConfig(base):  # Serve builds its server with uvicorn.Config(...) after this call
        opens2s_ws_max_size = limit

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("ws_max_size", limit)
            super().__init__(*args, **kwargs)

    uvicorn.Config = CappedConfig
    return []
