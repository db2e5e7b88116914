"""Our Prometheus metrics, exported through Ray's metrics agent next to Serve's own.

Scrape them where Serve's metrics are (each node's metrics export port); names start ``opens2s_``
(Ray prefixes ``ray_``). ``GET /v1/stats`` on the ingress also shows this replica's view as JSON.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

_LATENCY_BOUNDS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0]
_RTF_BOUNDS = [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]


class ServingMetrics:
    """Time to first audio, real-time factor, active sessions, and errors by code."""

    def __init__(self) -> None:
        self.ttfa = Histogram(
            "opens2s_ttfa_seconds",
            description="End of the user's turn to the first audio chunk sent.",
            boundaries=_LATENCY_BOUNDS,
            tag_keys=("route",),
        )
        self.rtf = Histogram(
            "opens2s_rtf",
            description="Response wall time divided by its audio duration.",
            boundaries=_RTF_BOUNDS,
            tag_keys=("route",),
        )
        self.active_sessions = Gauge(
            "opens2s_active_sessions", description="Open realtime sessions on this ingress replica."
        )
        self.errors = Counter(
            "opens2s_client_errors", description="Error events sent, by code.", tag_keys=("code",)
        )
        self.responses = Counter(
            "opens2s_responses", description="Responses finished, by status.", tag_keys=("status",)
        )
        self.stats = {"sessions": 0, "responses": 0, "errors": 0, "last_ttfa_ms": None}
        self.sessions(0)  # exported from the start, not only after the first session

    def response_done(
        self, route: str, status: str, ttfa_s: float | None, rtf: float | None
    ) -> None:
        """Record one finished response."""
        self.responses.inc(tags={"status": status})
        if ttfa_s is not None:
            self.ttfa.observe(ttfa_s, tags={"route": route})
            self.stats["last_ttfa_ms"] = round(ttfa_s * 1000, 1)
        if rtf is not None:
            self.rtf.observe(rtf, tags={"route": route})
        self.stats["responses"] += 1

    def error(self, code: str) -> None:
        """Record one error event."""
        self.errors.inc(tags={"code": code})
        self.stats["errors"] += 1

    def sessions(self, n: int) -> None:
        """Set the number of open realtime sessions."""
        self.active_sessions.set(n)
        self.stats["sessions"] = n
