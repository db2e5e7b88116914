"""Robustness bench: fault and fuzz traffic against the real Serve app, with figures.

A local Ray Serve on 127.0.0.1 runs the real ingress and 2 model replicas (tiny preset, auth on,
the default limits). All traffic goes to 127.0.0.1; every phase is bounded in count and time.

1. HTTP: every upload kind we can think of, one request at a time, each measured for the peak
   RSS it adds to the ingress and model replicas (``/proc/PID/clear_refs`` resets the high-water
   mark, ``VmHWM`` reads it): the bombs (WAV headers saying 1 Hz with 16,000/32,000 samples; an
   hour of silence as FLAC 48 kHz stereo and 16 kHz mono, as OGG Vorbis and as a 3.6 MB MP3),
   wrong rates, many channels, lying headers (data sizes, FLAC frame counts), truncated files of
   every container, random bytes, oversized and chunked bodies, raw requests with lying
   ``Content-Length``, bad query options, and valid files of every container (answered).
2. WebSocket: ``--ws-frames`` fuzzed messages over many sessions (random PCM and binary, malformed
   JSON, unknown events, bad ``session.update`` values, protocol violations, floods), raw
   sessions that break the WebSocket framing (unmasked, reserved opcodes, bad UTF-8, oversized
   length claims, audio after close), then ``--cycles`` rapid connect/disconnect cycles.
   Meanwhile a client speaks valid turns and times them.
3. Auth: every endpoint with missing and wrong tokens; then the token is searched for in every
   body and event received and in every Ray log file of the run.
4. After: a valid turn over WebSocket and HTTP, open sessions back to 0, the replicas' actor ids
   unchanged (no restart) and their RSS against the start.

Usage: ``python bench/robustness.py [--ws-frames 10000] [--cycles 500] [--seed 0]``. Progress
goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import io
import json
import os
import random
import secrets
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

APP = "robustness"
SR = 16000
RSS_BOUND_MIB = 32.0  # docs/serving.md: "under 32 MiB per request with the default limits"
MIB = 2**20
CACHE = Path(tempfile.gettempdir()) / "opens2s-robustness-uploads"


def log(msg: str) -> None:
    print(f"[robustness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(xs), q)), 1) if xs else None


# ---- what the bench counts ---------------------------------------------------------------------


@dataclass
class Tally:
    """Requests tried, answers by kind, and anything that counts as a bug."""

    token: str
    requests: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    bugs: collections.Counter = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)
    token_in_answers: int = 0

    def bug(self, kind: str, detail: str) -> None:
        self.bugs[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}"[:300])

    def seen(self, text: str | bytes) -> None:
        """Every body and event received passes here: none may carry the token."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if self.token in text:
            self.token_in_answers += 1
            self.bug("token_in_answer", text[:120].replace(self.token, "<TOKEN>"))


@dataclass
class ValidTurns:
    """Valid turns spoken while the fuzz runs: tried, completed, latencies."""

    tried: int = 0
    completed: int = 0
    ttfa_ms: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


# ---- the replicas' processes -------------------------------------------------------------------


def _count_python_objects(_actor: object) -> int:
    import gc

    gc.collect()
    return len(gc.get_objects())


class Processes:
    """The app's replica actors (ids, pids) and their memory, through Ray's state API."""

    def __init__(self) -> None:
        self.exact_peaks = True
        self.peaks: dict[str, dict[str, float]] = {}
        self.timeline: dict[str, dict[str, float]] = {}

    def mark(self, when: str, pids: dict[str, list[int]]) -> None:
        """Current RSS (MiB) of each process, as ``timeline[when]``."""
        self.timeline[when] = {
            f"{role}{i}": round(self.rss(pid) / MIB, 1)
            for role, ps in pids.items()
            for i, pid in enumerate(ps)
        }

    async def python_objects(self) -> dict[str, int]:
        """Live Python objects (after a full collection) in each replica of the app: a leak
        per session or request shows here, where RSS also holds the allocator's free pages."""
        import ray

        counts = {}
        for actor in ray.util.list_named_actors(all_namespaces=True):
            prefix = f"SERVE_REPLICA::{APP}#"
            if actor["name"].startswith(prefix):
                handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
                ref = handle.__ray_call__.remote(_count_python_objects)
                counts[actor["name"][len(prefix) :]] = await asyncio.wrap_future(ref.future())
        return counts

    def replicas(self) -> dict[str, list[tuple[str, int]]]:
        """``{"ingress": [(actor_id, pid)], "model": [...], "proxy": [...]}``: the live replicas
        and Serve's HTTP proxy (which reads every request before the ingress does)."""
        from ray.util.state import list_actors

        out: dict[str, list[tuple[str, int]]] = {"ingress": [], "model": [], "proxy": []}
        import ray

        gcs = ray.get_runtime_context().gcs_address  # other Ray instances may run here
        for a in list_actors(address=gcs, filters=[("state", "=", "ALIVE")], limit=10_000):
            if a.class_name == f"ServeReplica:{APP}:Ingress":
                out["ingress"].append((a.actor_id, a.pid))
            elif a.class_name == f"ServeReplica:{APP}:S2SModel":
                out["model"].append((a.actor_id, a.pid))
            elif a.class_name == "ProxyActor":
                out["proxy"].append((a.actor_id, a.pid))
        return out

    @staticmethod
    def status(pid: int, key: str) -> int:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def rss(self, pid: int) -> int:
        return self.status(pid, "VmRSS")

    def reset_peak(self, pid: int) -> bool:
        """Set the process's high-water mark to its current RSS (Linux ``clear_refs`` 5)."""
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @contextlib.contextmanager
    def measure(self, kind: str, pids: dict[str, list[int]]):
        """Peak RSS growth of each process while the block runs (max over repeats of ``kind``)."""
        base = {pid: self.rss(pid) for ps in pids.values() for pid in ps}
        exact = all(self.reset_peak(pid) for pid in base)
        self.exact_peaks &= exact
        peak = dict(base)
        stop = threading.Event()

        def sample() -> None:  # without clear_refs: poll RSS (may miss a short peak)
            while not stop.wait(0.005):
                for pid in peak:
                    with contextlib.suppress(OSError):
                        peak[pid] = max(peak[pid], self.rss(pid))

        sampler = None if exact else threading.Thread(target=sample, daemon=True)
        if sampler:
            sampler.start()
        try:
            yield
        finally:
            stop.set()
            if sampler:
                sampler.join()
            if exact:
                for pid in peak:
                    with contextlib.suppress(OSError):
                        peak[pid] = self.status(pid, "VmHWM")
            row = self.peaks.setdefault(kind, {})
            for role, ps in pids.items():
                growth = max((peak[p] - base[p]) / MIB for p in ps)
                row[role] = round(max(row.get(role, 0.0), growth), 1)


# ---- uploads -----------------------------------------------------------------------------------


@dataclass
class Upload:
    name: str
    body: bytes
    expect: set[int]
    params: dict[str, Any] | None = None
    valid: bool = False  # a file that must be answered (200, response.done completed)


def _encode(data: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, data, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _silence_file(name: str, sr: int, ch: int, seconds: float, fmt: str, subtype: str) -> bytes:
    """Long silence encoded a block at a time (cached across runs: the MP3 takes seconds)."""
    import soundfile as sf

    path = CACHE / name
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        block = np.zeros((sr * 10, ch), np.float32)
        with sf.SoundFile(tmp, "w", sr, ch, format=fmt, subtype=subtype) as f:
            for _ in range(int(seconds // 10)):
                f.write(block)
        tmp.rename(path)
    return path.read_bytes()


def _patch(body: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(body)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _wav_data_offset(body: bytes) -> int:
    return body.index(b"data") + 4  # the data chunk's size field


def _declare_less(wav: bytes) -> bytes:
    """A WAV whose data chunk says 0.5 s (16 kHz PCM16) while it holds all of ``wav``'s samples."""
    return _patch(wav, _wav_data_offset(wav), "<I", SR)


def _flac_streaminfo_total(body: bytes, total: int | None = None, rate: int | None = None) -> bytes:
    """FLAC with STREAMINFO's 36-bit sample count and/or 20-bit rate rewritten."""
    b = bytearray(body)
    off = b.index(b"fLaC") + 4 + 4 + 10  # marker, block header, block sizes/frame sizes
    bits = int.from_bytes(b[off : off + 8], "big")
    if total is not None:
        bits = (bits & ~((1 << 36) - 1)) | (total & ((1 << 36) - 1))
    if rate is not None:
        bits = (bits & ~(((1 << 20) - 1) << 44)) | ((rate & ((1 << 20) - 1)) << 44)
    b[off : off + 8] = bits.to_bytes(8, "big")
    return bytes(b)


def upload_cases(utt: np.ndarray, max_upload: int, rng: np.random.Generator) -> list[Upload]:
    """Every upload the HTTP phase sends, with the statuses each may get."""
    from opens2s.audio.io import resample

    bad = {400}
    stereo44 = np.stack([resample(utt, SR, 44100)] * 2, axis=1)
    u48 = np.stack([resample(utt, SR, 48000)] * 2, axis=1)
    u22 = resample(utt, SR, 22050)
    wav = _encode(utt, SR, "WAV", "PCM_16")
    flac = _encode(u48, 48000, "FLAC", "PCM_16")
    ogg = _encode(u22, 22050, "OGG", "VORBIS")
    opus = _encode(resample(utt, SR, 48000), 48000, "OGG", "OPUS")
    mp3 = _encode(stereo44, 44100, "MP3", "MPEG_LAYER_III")
    seconds_under_limit = (max_upload - 1000) / (44100 * 2 * 2)  # 16-bit stereo 44.1 kHz
    largest = (rng.uniform(-0.3, 0.3, (int(seconds_under_limit * 44100), 2))).astype(np.float32)
    cases = [
        # valid files of every container we accept: answered
        Upload("valid_wav_16k_mono", wav, {200}, valid=True),
        Upload(
            "valid_wav_float_44k_stereo",
            _encode(stereo44, 44100, "WAV", "FLOAT"),
            {200},
            valid=True,
        ),
        Upload("valid_flac_48k_stereo", flac, {200}, valid=True),
        Upload("valid_ogg_vorbis_22k", ogg, {200}, valid=True),
        Upload("valid_ogg_opus_48k", opus, {200}, valid=True),
        Upload("valid_mp3_44k_stereo", mp3, {200}, valid=True),
        Upload(
            "valid_wav_8k_lowest_rate",
            _encode(resample(utt, SR, 8000), 8000, "WAV", "PCM_16"),
            {200},
            valid=True,
        ),
        Upload(
            "valid_wav_192k_highest_rate",
            _encode(resample(utt, SR, 192000)[: 192000 * 2], 192000, "WAV", "PCM_16"),
            {200},
            valid=True,
        ),
        Upload(
            "valid_wav_8_channels",
            _encode(np.stack([utt] * 8, axis=1), SR, "WAV", "PCM_16"),
            {200},
            valid=True,
        ),
        Upload(
            f"largest_wav_under_limit_{seconds_under_limit:.0f}s",
            _encode(largest, 44100, "WAV", "PCM_16"),
            {200},
            valid=True,
        ),
        # the bombs of issue 18: tiny files whose headers claim a lot
        Upload(
            "bomb_wav_1hz_16000_samples",
            _encode(np.zeros(16_000, np.float32), 1, "WAV", "PCM_16"),
            bad,
        ),
        Upload(
            "bomb_wav_1hz_32000_samples",
            _encode(np.zeros(32_000, np.float32), 1, "WAV", "PCM_16"),
            bad,
        ),
        Upload(
            "bomb_flac_hour_48k_stereo",
            _silence_file("hour48s.flac", 48000, 2, 3600, "FLAC", "PCM_16"),
            bad,
        ),
        Upload(
            "bomb_flac_hour_16k_mono",
            _silence_file("hour16m.flac", 16000, 1, 3600, "FLAC", "PCM_16"),
            bad,
        ),
        Upload(
            "bomb_ogg_vorbis_hour_16k",
            _silence_file("hour16m.ogg", 16000, 1, 3600, "OGG", "VORBIS"),
            bad,
        ),
        Upload(
            "bomb_mp3_hour_16k_3.6MB",
            _silence_file("hour16m.mp3", 16000, 1, 3600, "MP3", "MPEG_LAYER_III"),
            bad,
        ),
        # wrong rates and channel counts
        Upload("rate_7999", _encode(utt[:8000], 7999, "WAV", "PCM_16"), bad),
        Upload("rate_192001", _encode(np.zeros(192001, np.float32), 192001, "WAV", "PCM_16"), bad),
        Upload("rate_4e9_patched", _patch(wav, 24, "<I", 4_000_000_000), bad),
        Upload("rate_0_patched", _patch(wav, 24, "<I", 0), bad),
        Upload("channels_9", _encode(np.zeros((16000, 9), np.float32), SR, "WAV", "PCM_16"), bad),
        Upload(
            "channels_1000", _encode(np.zeros((10, 1000), np.float32), SR, "WAV", "PCM_16"), bad
        ),
        Upload("channels_65535_patched", _patch(wav, 22, "<H", 65535), bad),
        Upload("channels_0_patched", _patch(wav, 22, "<H", 0), bad),
        # lying headers
        Upload(
            "wav_data_size_4GB_short_body",
            _patch(wav, _wav_data_offset(wav), "<I", 0xFFFFFFF0),
            {200, 400},
        ),
        Upload("wav_riff_size_wrong", _patch(wav, 4, "<I", 12), {200, 400}),
        Upload("wav_bits_0_patched", _patch(wav, 34, "<H", 0), bad),
        Upload("wav_bits_64_patched", _patch(wav, 34, "<H", 64), {200, 400}),
        Upload("wav_block_align_patched", _patch(wav, 32, "<H", 7), {200, 400}),
        Upload(
            "wav_declares_0.5s_holds_60s",
            _declare_less(_encode(np.zeros(60 * SR, np.float32) + 0.01, SR, "WAV", "PCM_16")),
            {200, 400},
        ),
        Upload("flac_total_samples_2^36", _flac_streaminfo_total(flac, total=(1 << 36) - 1), bad),
        Upload("flac_total_samples_0_unknown", _flac_streaminfo_total(flac, total=0), {200, 400}),
        Upload("flac_rate_1hz_patched", _flac_streaminfo_total(flac, rate=1), bad),
        Upload("flac_rate_655350_patched", _flac_streaminfo_total(flac, rate=655350), bad),
        # truncated files of every container
        *[
            Upload(
                f"truncated_{name}_{cut}",
                body[: n if cut == "header" else len(body) // 2],
                {200, 400},
            )
            for name, body, n in (
                ("wav", wav, 30),
                ("flac", flac, 60),
                ("ogg", ogg, 60),
                ("opus", opus, 60),
                ("mp3", mp3, 20),
            )
            for cut in ("header", "half")
        ],
        # not audio at all
        Upload("random_bytes_5k", rng.bytes(5000), bad),
        Upload("zeros_1MB", bytes(1_000_000), bad),
        Upload("riff_magic_then_garbage", b"RIFF" + rng.bytes(2000), bad),
        Upload("flac_magic_then_garbage", b"fLaC" + rng.bytes(2000), bad),
        Upload("json_body", b'{"audio": "not really"}', bad),
        Upload("empty_body", b"", bad),
        Upload("over_limit_by_one_byte", bytes(max_upload + 1), {413}),
        # query options
        Upload("unknown_query_option", wav, {400}, params={"temprature": 0.5}),
        Upload("temperature_out_of_range", wav, {422}, params={"temperature": 9}),
        Upload("seed_negative", wav, {422}, params={"seed": -1}),
        Upload("max_units_not_a_number", wav, {422}, params={"max_units": "many"}),
        Upload("unknown_voice", wav, {200}, params={"voice": "nobody"}),
        Upload("system_prompt_too_long", wav, {422}, params={"system_prompt": "x" * 5000}),
    ]
    return cases


# ---- HTTP phase --------------------------------------------------------------------------------


async def post_upload(http, tally: Tally, case: Upload, token: str) -> tuple[int, list[dict], str]:
    """POST /v1/speech; (status, NDJSON events, error text)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.stream(
        "POST", "/v1/speech", content=case.body, params=case.params, headers=headers
    ) as r:
        raw = await r.aread()
    tally.seen(raw)
    if r.status_code != 200:
        return r.status_code, [], raw.decode("utf-8", "replace")
    events = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return 200, events, ""


async def raw_http(port: int, head: bytes, body: bytes = b"", *, eof: bool = False) -> str:
    """One hand-written request on a raw socket: the status line answered, or how it ended."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        if eof:
            writer.write_eof()
        line = await asyncio.wait_for(reader.readline(), 30)
        return line.decode("latin-1").strip() or "closed"
    except (ConnectionError, TimeoutError) as e:
        return type(e).__name__
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def http_phase(
    http, port: int, procs: Processes, pids, tally: Tally, token: str, cases: list[Upload]
) -> dict[str, Any]:
    statuses: dict[str, int | str] = {}
    for case in cases:
        tally.requests["http_upload"] += 1
        with procs.measure(f"upload:{case.name}", pids):
            try:
                status, events, text = await post_upload(http, tally, case, token)
            except Exception as e:  # the server hung up or timed out: never acceptable
                tally.bug("http_no_answer", f"{case.name}: {type(e).__name__}: {e}")
                statuses[case.name] = type(e).__name__
                continue
        statuses[case.name] = status
        if status != 200:
            tally.errors[f"http_{status}"] += 1
        if status >= 500:
            tally.bug("http_5xx", f"{case.name}: {status} {text[:200]}")
        elif status not in case.expect:
            tally.bug("http_unexpected_status", f"{case.name}: {status} {text[:200]}")
        if status == 200:
            done = [e for e in events if e["type"] == "response.done"]
            for e in events:
                if e["type"] == "error":
                    tally.errors[f"http_event_{e['code']}"] += 1
            if not done:
                tally.bug("http_answer_without_done", f"{case.name}: {[e['type'] for e in events]}")
            elif case.valid and done[-1]["status"] != "completed":
                tally.bug("http_valid_upload_not_answered", f"{case.name}: {done[-1]}")
    # A body larger than the limit sent in chunks (no Content-Length): 413 while reading.
    tally.requests["http_upload"] += 1

    async def chunks():
        for _ in range(80):
            yield bytes(65536)

    with procs.measure("upload:chunked_5MB_no_length", pids):
        try:
            r = await http.post(
                "/v1/speech", content=chunks(), headers={"Authorization": f"Bearer {token}"}
            )
            statuses["chunked_5MB_no_length"] = r.status_code
            tally.seen(r.content)
            tally.errors[f"http_{r.status_code}"] += 1
            if r.status_code != 413:
                tally.bug("http_unexpected_status", f"chunked 5 MB: {r.status_code}")
        except Exception as e:  # the server may close while we still send: that is fine
            statuses["chunked_5MB_no_length"] = f"closed ({type(e).__name__})"
    # Hand-written requests: lying or broken framing.
    auth = f"Authorization: Bearer {token}\r\n".encode()
    start = b"POST /v1/speech HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth
    raw_cases = {
        "content_length_1e11_no_body": (
            start + b"Content-Length: 99999999999\r\n\r\n",
            b"",
            False,
            ("413",),
        ),
        "content_length_not_a_number": (
            start + b"Content-Length: abc\r\n\r\n",
            b"",
            False,
            ("400",),
        ),
        "content_length_10k_body_1k_then_eof": (
            start + b"Content-Length: 10000\r\n\r\n",
            bytes(1000),
            True,
            ("closed", "HTTP/1.1 400"),
        ),
        "chunked_size_not_hex": (
            start + b"Transfer-Encoding: chunked\r\n\r\n",
            b"zz\r\nabc\r\n0\r\n\r\n",
            False,
            ("400",),
        ),
        "chunked_and_length_conflict": (
            start + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            False,
            ("400",),
        ),
    }
    for name, (head, body, eof, ok) in raw_cases.items():
        tally.requests["http_raw"] += 1
        with procs.measure(f"raw:{name}", pids):
            line = await raw_http(port, head, body, eof=eof)
        statuses[name] = line
        tally.errors[f"http_raw_{line.split(' ')[1] if line.startswith('HTTP') else line}"] += 1
        if " 5" in line[:12]:
            tally.bug("http_5xx", f"{name}: {line}")
        elif not any(o in line for o in ok):
            tally.bug("http_unexpected_status", f"{name}: {line}")
    return statuses


# ---- WebSocket fuzz ----------------------------------------------------------------------------

_MALFORMED_JSON = [
    "{",
    "}",
    "{not json",
    '{"type": "session.update", "session": {',
    '{"type": "session.update",,}',
    "[" * 5000 + "]" * 5000,
    '{"type": "session.update", "session": {"seed": ' + "9" * 5000 + "}}",
    '{"type": NaN}',
    "\x00\x01\x02",
    "null",
    "true",
    "12345",
    '"a string"',
    "[]",
    '[{"type": "input.commit"}]',
    "",
    " ",
    '{"type": "input.commit"}{"type": "input.commit"}',
]
_UNKNOWN_EVENTS = [
    {"type": "response.create"},
    {"type": "conversation.item.create", "item": {}},
    {"type": "input_audio_buffer.append", "audio": "AAAA"},
    {"type": "session.delete"},
    {"type": "INPUT.COMMIT"},
    {"type": ""},
    {"type": 5},
    {"type": None},
    {"type": ["input.commit"]},
    {"no_type": True},
    {"type": "x" * 1000},
]
_BAD_UPDATES: list[dict[str, Any]] = [
    {"temperature": -1},
    {"temperature": 3},
    {"temperature": "hot"},
    {"top_p": 0},
    {"top_p": 1.5},
    {"unit_temperature": -0.1},
    {"unit_top_p": 2},
    {"max_text_tokens": 0},
    {"max_text_tokens": 10**9},
    {"max_units": -5},
    {"max_units": 10**12},
    {"seed": -1},
    {"seed": 2**64},
    {"seed": 1.5},
    {"voice": "nobody"},
    {"voice": "v" * 100},
    {"voice": 7},
    {"system_prompt": "p" * 2001},
    {"system_prompt": ["a"]},
    {"input_sample_rate": 1},
    {"input_sample_rate": 7999},
    {"input_sample_rate": 10**9},
    {"input_sample_rate": "48k"},
    {"unknown_field": 1},
    {"turn_detection": {"type": "server_vad"}},
]
_VALID_UPDATES: list[dict[str, Any]] = [
    {},
    {"max_units": 12},
    {"temperature": 0.0, "seed": 3},
    {"voice": None, "system_prompt": None},
    {"input_sample_rate": 8000},
    {"input_sample_rate": 44100},
    {"input_sample_rate": 192000},
    {"input_sample_rate": None},
    {"system_prompt": "Be brief."},
]


def fuzz_message(rng: random.Random) -> tuple[str, str | bytes]:
    """(kind, message) of one fuzzed client message."""
    r = rng.random()
    if r < 0.22:  # quiet PCM (mostly below the VAD threshold)
        n = rng.randrange(1, 1601)
        pcm = np.random.default_rng(rng.randrange(2**32)).normal(0, 30, n).astype("<i2")
        return "pcm_quiet", pcm.tobytes()
    if r < 0.27:  # loud noise: VAD hears speech, turns and answers follow
        return "pcm_loud", rng.randbytes(2 * rng.randrange(1, 1601))
    if r < 0.31:
        return "binary_odd", rng.randbytes(2 * rng.randrange(0, 800) + 1)
    if r < 0.33:
        return "binary_empty", b""
    if r < 0.35:
        return "binary_too_large", rng.randbytes(rng.randrange(64_001, 200_000))
    if r < 0.352:
        return "binary_megabytes", bytes(rng.randrange(1, 5) * MIB)
    if r < 0.47:
        if rng.random() < 0.5:
            return "json_malformed", rng.choice(_MALFORMED_JSON)
        return "text_garbage", "".join(
            chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(1, 200))
        )
    if r < 0.57:
        return "unknown_event", json.dumps(rng.choice(_UNKNOWN_EVENTS))
    if r < 0.72:
        update = dict(rng.choice(_BAD_UPDATES))
        if rng.random() < 0.3:
            update |= rng.choice(_VALID_UPDATES)  # a bad field next to good ones
        return "bad_session_update", json.dumps({"type": "session.update", "session": update})
    if r < 0.76:
        bad = rng.choice([None, [], "x", 5, {"session": {}}])
        return "bad_session_update", json.dumps({"type": "session.update", "session": bad})
    if r < 0.82:
        update = rng.choice(_VALID_UPDATES)
        return "valid_session_update", json.dumps({"type": "session.update", "session": update})
    if r < 0.88:
        extra = rng.random() < 0.3
        return "input_commit", json.dumps({"type": "input.commit", **({"x": 1} if extra else {})})
    if r < 0.94:
        return "response_cancel", json.dumps({"type": "response.cancel"})
    if r < 0.97:
        return "text_too_large", json.dumps({"type": "session.update", "pad": "x" * 20_000})
    return "text_binary_confusion", b'{"type": "session.update", "session": {}}'


async def fuzz_session(
    url: str, rng: random.Random, n: int, tally: Tally, kinds: collections.Counter
) -> int:
    """One session of ``n`` fuzzed messages (or a flood); then a probe must be answered unless
    the server closed the session. Returns the messages sent."""
    import websockets

    sent = 0
    got_probe = asyncio.Event()
    closed = asyncio.Event()
    probe_prompt = f"probe-{rng.randrange(10**9)}"
    try:
        ws = await websockets.connect(url, max_size=None, open_timeout=30)
    except Exception as e:
        tally.bug("ws_connect_failed", f"{type(e).__name__}: {e}")
        return 0
    tally.requests["ws_sessions"] += 1

    async def read() -> None:
        try:
            async for msg in ws:
                tally.seen(msg)
                ev = json.loads(msg)
                if ev["type"] == "error":
                    tally.errors[f"ws_{ev['code']}"] += 1
                    if ev["code"] == "internal_error":
                        tally.bug("ws_internal_error", ev["message"])
                elif (
                    ev["type"] == "session.updated"
                    and ev["session"].get("system_prompt") == probe_prompt
                ):
                    got_probe.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            if ws.close_code not in (None, 1000):
                tally.errors[f"ws_close_{ws.close_code}"] += 1
            closed.set()

    reader = asyncio.ensure_future(read())
    flood = rng.random()
    try:
        if flood < 0.06:  # more messages a second than allowed
            for _ in range(600):
                await ws.send('{"type": "response.cancel"}')
                sent += 1
                kinds["flood_messages"] += 1
        elif flood < 0.12:  # more audio than real time allows
            for _ in range(40):
                await ws.send(bytes(64_000))
                sent += 1
                kinds["flood_audio"] += 1
        else:
            for _ in range(n):
                kind, msg = fuzz_message(rng)
                kinds[kind] += 1
                await ws.send(msg)
                sent += 1
                if rng.random() < 0.02:
                    await asyncio.sleep(0.05)  # let answers start, so cancels and barge-ins race
        probe = {"type": "session.update", "session": {"system_prompt": probe_prompt}}
        await ws.send(json.dumps(probe))
        waits = [asyncio.ensure_future(got_probe.wait()), asyncio.ensure_future(closed.wait())]
        done, pending = await asyncio.wait(waits, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        if not done:
            tally.bug("ws_hung_session", "no answer to a session.update within 60 s")
    except websockets.ConnectionClosed:
        pass  # the server closed it (rate limit, audio flood): counted by the reader
    finally:
        if rng.random() < 0.2:
            ws.transport.abort()  # vanish without a close frame
        else:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader, 30)
    return sent


class RawWebSocket:
    """A hand-written WebSocket client that can break the framing rules."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, path: str) -> tuple[RawWebSocket, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        return cls(reader, writer), head.split(b"\r\n")[0].decode()

    @staticmethod
    def frame(
        opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0,
        claim: int | None = None,
    ) -> bytes:  # fmt: skip
        n = len(payload) if claim is None else claim
        head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
        m = 0x80 if mask else 0
        if n < 126:
            head += bytes([m | n])
        elif n < 65536:
            head += bytes([m | 126]) + struct.pack(">H", n)
        else:
            head += bytes([m | 127]) + struct.pack(">Q", n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self, timeout: float) -> tuple[str, list[dict]]:
        """Read server frames until a close frame or EOF: (how it ended, JSON events)."""
        events: list[dict] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "hung", events
                b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), left)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
                payload = await asyncio.wait_for(self.reader.readexactly(n), left)
                if b0 & 0x0F == 0x8:
                    code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return f"close_{code}", events
                if b0 & 0x0F == 0x1:
                    events.append(json.loads(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            return "eof", events
        except TimeoutError:
            return "hung", events

    def abort(self) -> None:
        self.writer.transport.abort()


async def raw_ws_violations(port: int, path: str, tally: Tally, kinds: collections.Counter) -> dict:
    """Sessions that break the WebSocket rules: each must end (close frame or EOF), never hang."""
    pcm = bytes(3200)
    update = json.dumps({"type": "session.update", "session": {}}).encode()
    F = RawWebSocket.frame
    scenarios: dict[str, list[bytes]] = {
        "audio_after_client_close": [F(0x8, struct.pack(">H", 1000))] + [F(0x2, pcm)] * 5,
        "audio_after_close_no_code": [F(0x8, b"")] + [F(0x2, pcm)] * 5,
        "unmasked_client_frame": [F(0x2, pcm, mask=False)],
        "reserved_opcode_3": [F(0x3, b"abc")],
        "reserved_opcode_11": [F(0xB, b"abc")],
        "rsv1_without_extension": [F(0x2, pcm, rsv=4)],
        "invalid_utf8_text": [F(0x1, b"\xff\xfe\xfd")],
        "continuation_without_start": [F(0x0, pcm)],
        "fragmented_ping": [F(0x9, b"x", fin=False)],
        "ping_over_125_bytes": [F(0x9, b"x" * 126)],
        "close_code_999": [F(0x8, struct.pack(">H", 999))],
        "close_reason_bad_utf8": [F(0x8, struct.pack(">H", 1000) + b"\xff")],
        "length_claims_2^40_bytes": [F(0x2, pcm, claim=2**40)],
        "length_claims_32MB_sends_3KB": [F(0x2, pcm, claim=32 * MIB)],
        "half_a_frame_then_eof": [F(0x2, pcm)[:100]],
        "text_fragmented_valid": [
            F(0x1, update[:10], fin=False),
            F(0x0, update[10:20], fin=False),
            F(0x0, update[20:]),
        ],
        "interleaved_text_in_fragments": [F(0x1, update[:10], fin=False), F(0x1, update)],
        "many_pings": [F(0x9, b"p")] * 50,
    }
    outcomes = {}
    token_path = f"{path}?token={tally.token}"
    for name, frames in scenarios.items():
        tally.requests["ws_raw_sessions"] += 1
        try:
            ws, status = await RawWebSocket.open(port, token_path)
        except Exception as e:
            tally.bug("ws_raw_handshake_failed", f"{name}: {type(e).__name__}")
            continue
        if " 101 " not in status + " ":
            tally.bug("ws_raw_handshake_failed", f"{name}: {status}")
            continue
        for data in frames:
            kinds[f"raw:{name}"] += 1
            tally.requests["ws_raw_frames"] += 1
            with contextlib.suppress(ConnectionError):
                await ws.send(data)
        if name == "half_a_frame_then_eof" or name.startswith("length_claims"):
            ws.writer.write_eof()
        if name in ("text_fragmented_valid", "many_pings"):
            # legal: the session goes on; then the client leaves properly
            await asyncio.sleep(0.5)
            with contextlib.suppress(ConnectionError):
                await ws.send(F(0x8, struct.pack(">H", 1000)))
        how, events = await ws.until_closed(30)
        for ev in events:
            tally.seen(json.dumps(ev))
            if ev["type"] == "error":
                tally.errors[f"ws_{ev['code']}"] += 1
        outcomes[name] = how
        tally.errors[f"ws_raw_{how}"] += 1
        if how == "hung":
            tally.bug("ws_hung_session", f"raw {name}: no close within 30 s")
        ws.abort()
    return outcomes


UVICORN_WS_MAX_BYTES = 16 * MIB  # Serve's proxy without opens2s.serving.proxy_limits


async def big_ws_frames(
    url: str, procs: Processes, pids, tally: Tally, proxy_cap: int
) -> dict[str, str]:
    """One binary frame each of 64 kB + 1, 1, 8 and 16 MiB and 16 MiB + 1, each measured for peak
    RSS: up to the proxy's cap the ingress refuses them (``frame_too_large``, the session goes
    on), beyond it the proxy closes the connection (1009) while the frame arrives."""
    import websockets
    from opens2s.serving.client import connected_session

    outcomes = {}
    sizes = {"64kB+1": 64_001, "1MiB": MIB, "8MiB": 8 * MIB, "16MiB": 16 * MIB}
    sizes["16MiB+1"] = 16 * MIB + 1
    for label, size in sizes.items():
        tally.requests["ws_big_frames"] += 1
        with procs.measure(f"ws_frame:{label}", pids):
            try:
                async with connected_session(url, timeout=60) as (ws, _):
                    await ws.send(bytes(size))
                    msg = await asyncio.wait_for(ws.recv(), 60)
                    tally.seen(msg)
                    outcomes[label] = json.loads(msg).get("code", "?")
            except websockets.ConnectionClosed as e:
                outcomes[label] = f"close_{e.rcvd.code if e.rcvd else None}"
            except Exception as e:
                outcomes[label] = type(e).__name__
        want = "frame_too_large" if size <= proxy_cap else "close_1009"
        if outcomes[label] != want:
            tally.bug("ws_big_frame_unexpected", f"{label}: {outcomes[label]}, expected {want}")
    return outcomes


async def connect_cycles(
    url: str, n: int, concurrency: int, rng: random.Random, tally: Tally
) -> collections.Counter:
    """``n`` rapid connects and disconnects, ``concurrency`` at a time, in varied manners."""
    import websockets

    outcomes: collections.Counter = collections.Counter()
    base = url.split("?")[0]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        manner = rng.choice(
            ["wait_created_close"] * 5
            + ["close_at_once"] * 2
            + ["abort"] * 2
            + ["no_token", "wrong_token"]
        )
        target = {"no_token": base, "wrong_token": base + "?token=wrong"}.get(manner, url)
        async with sem:
            tally.requests["ws_connect_cycles"] += 1
            try:
                async with asyncio.timeout(60):
                    ws = await websockets.connect(target, open_timeout=30)
                    if manner == "abort":
                        ws.transport.abort()
                    elif manner == "close_at_once":
                        await ws.close()
                    else:
                        first = json.loads(await ws.recv())
                        tally.seen(json.dumps(first))
                        if manner in ("no_token", "wrong_token"):
                            if first.get("code") != "unauthorized":
                                tally.bug("auth_not_refused", f"cycle {manner}: {first}")
                            with contextlib.suppress(websockets.ConnectionClosed):
                                await ws.recv()
                            if ws.close_code != 1008:
                                tally.bug(
                                    "auth_not_refused", f"cycle {manner}: close {ws.close_code}"
                                )
                        elif first["type"] != "session.created":
                            tally.errors[f"ws_{first.get('code')}"] += 1
                        await ws.close()
                outcomes[manner] += 1
            except Exception as e:
                tally.bug("ws_cycle_failed", f"{manner}: {type(e).__name__}: {e}")

    await asyncio.gather(*(one(i) for i in range(n)))
    return outcomes


# ---- valid turns -------------------------------------------------------------------------------


async def valid_ws_turn(url: str, wave: np.ndarray, turns: ValidTurns, tally: Tally) -> None:
    """One valid turn on a fresh session, timed from the client's last frame."""
    from opens2s.serving.client import connected_session, send_audio

    turns.tried += 1
    try:
        async with connected_session(url, {"max_units": 40}, timeout=60) as (ws, _):
            await send_audio(ws, wave)
            t_sent = time.perf_counter()
            ttfa = None
            while True:
                msg = await asyncio.wait_for(ws.recv(), 120)
                tally.seen(msg)
                ev = json.loads(msg)
                if ev["type"] == "response.audio.delta" and ttfa is None:
                    ttfa = time.perf_counter() - t_sent
                elif ev["type"] == "error":
                    turns.lost.append(f"{ev['code']}: {ev['message']}"[:200])
                    return
                elif ev["type"] == "response.done":
                    if ev["status"] != "completed" or ttfa is None:
                        turns.lost.append(f"done {ev['status']} without audio"[:200])
                        return
                    turns.completed += 1
                    turns.ttfa_ms.append(ttfa * 1000)
                    turns.done_ms.append((time.perf_counter() - t_sent) * 1000)
                    return
    except Exception as e:
        turns.lost.append(f"{type(e).__name__}: {e}"[:200])


async def valid_turns_until(stop: asyncio.Event, url: str, wave: np.ndarray, turns, tally) -> None:
    while not stop.is_set():
        await valid_ws_turn(url, wave, turns, tally)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


# ---- auth --------------------------------------------------------------------------------------


async def auth_phase(http, port: int, prefix: str, token: str, tally: Tally, wav: bytes) -> dict:
    """Every endpoint with missing and wrong tokens: all refused (401 / unauthorized + 1008)."""
    import websockets

    wrong_headers = {
        "missing": {},
        "wrong_bearer": {"Authorization": "Bearer wrong"},
        "empty_bearer": {"Authorization": "Bearer"},
        "token_plus_char": {"Authorization": f"Bearer {token}x"},
        "token_prefix": {"Authorization": f"Bearer {token[:-1]}"},
        "basic_scheme": {
            "Authorization": "Basic " + base64.b64encode(f"u:{token}".encode()).decode()
        },
        "no_scheme": {"Authorization": token},
        "other_header": {"X-Auth-Token": token},
    }
    wrong_query = {"wrong_query": {"token": "wrong"}, "query_plus_char": {"token": token + "x"}}
    refused, tried = 0, 0
    routes = [("GET", "/v1/info", None), ("GET", "/v1/stats", None), ("POST", "/v1/speech", wav)]
    for method, route, body in routes:
        variants = [(h, None) for h in wrong_headers.values()] + [
            ({}, q) for q in wrong_query.values()
        ]
        for headers, params in variants:
            tried += 1
            tally.requests["auth_probes"] += 1
            r = await http.request(method, route, headers=headers, params=params, content=body)
            tally.seen(r.content)
            if r.status_code == 401:
                refused += 1
            else:
                tally.bug(
                    "auth_not_refused", f"{method} {route} {headers} {params}: {r.status_code}"
                )
    base = f"ws://127.0.0.1:{port}{prefix}/v1/realtime"
    ws_variants = [
        (base, {}),
        (base + "?token=wrong", {}),
        (base + f"?token={token}x", {}),
        (base, {"Authorization": "Bearer wrong"}),
        (base, {"Authorization": f"Bearer {token[:-1]}"}),
        (base + f"?token={token}", {"Authorization": "Bearer wrong"}),  # the header decides
    ]
    for url, headers in ws_variants:
        tried += 1
        tally.requests["auth_probes"] += 1
        async with websockets.connect(url, additional_headers=headers, open_timeout=30) as ws:
            first = await asyncio.wait_for(ws.recv(), 30)
            tally.seen(first)
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
            if json.loads(first).get("code") == "unauthorized" and ws.close_code == 1008:
                refused += 1
            else:
                tally.bug("auth_not_refused", f"WS {url.split('?')[-1]} {headers}: {first[:100]}")
    # the right token is accepted both ways
    ok = [
        (await http.get("/v1/info", headers={"Authorization": f"Bearer {token}"})).status_code,
        (await http.get("/v1/info", params={"token": token})).status_code,
    ]
    if ok != [200, 200]:
        tally.bug("auth_refuses_the_right_token", str(ok))
    return {"probes": tried, "refused": refused, "right_token_accepted": ok == [200, 200]}


def token_in_logs(session_dir: Path, token: str) -> dict[str, int]:
    """Log files of this Ray session that contain the token (must be none)."""
    needle = token.encode()
    hits: dict[str, int] = {}
    for path in (session_dir / "logs").rglob("*"):
        if path.is_file():
            with contextlib.suppress(OSError):
                n = path.read_bytes().count(needle)
                if n:
                    hits[str(path.relative_to(session_dir))] = n
    return hits


KNOWN_PROXY_ERROR = "proxy_client_gone_ray_64077"
"""Serve's proxy logs "Request failed due to unexpected error ... GeneratorExit" when it cannot
forward a WebSocket message because the client already left (ray-project/ray#64077: log noise,
nothing leaks). The ingress no longer sends its close after the client's, which was the common
case; a client that vanishes while events are on their way still triggers it."""


def server_error_lines(session_dir: Path) -> dict[str, int]:
    """ERROR log lines of Serve (proxy, controller, replicas) by component; the proxy's known
    client-disconnect error (:data:`KNOWN_PROXY_ERROR`) apart."""
    out: collections.Counter = collections.Counter()
    for path in (session_dir / "logs" / "serve").glob("*.log"):
        with contextlib.suppress(OSError):
            lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if not (line.startswith("ERROR ") or " ERROR " in line):
                continue
            parts = path.stem.split("_")  # replica_<app>_<deployment>_<id>, proxy_<ip>, ...
            where = "_".join(parts[::2][:2]) if parts[0] == "replica" else parts[0]
            if where == "proxy" and any(x.strip() == "GeneratorExit" for x in lines[i + 1 : i + 6]):
                where = KNOWN_PROXY_ERROR
            out[where] += 1
    return dict(out)


# ---- the run -----------------------------------------------------------------------------------


def spoken_question() -> np.ndarray:
    from opens2s.audio.io import resample
    from opens2s.audio.tts import EspeakTTS

    tts = EspeakTTS()
    wave, sr = tts.synthesize("What should I cook tonight?", tts.speakers()[0])
    return np.concatenate(
        [np.zeros(SR // 5, np.float32), resample(wave, sr, SR), np.zeros(int(1.2 * SR), np.float32)]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(token: str, proxy_ws_max_bytes: int) -> tuple[int, Path]:
    """Local Ray + Serve on 127.0.0.1 with the app (2 model replicas); (port, session dir)."""
    import ray
    from opens2s.config import AUTH_TOKEN_ENV, load_config
    from opens2s.serving.app import build_app
    from opens2s.serving.proxy_limits import proxy_environment
    from opens2s.serving.speech_stack import demo_unit_tokenizer
    from ray import serve

    # As in production, the token reaches the replicas only through their environment.
    os.environ[AUTH_TOKEN_ENV] = token
    if proxy_ws_max_bytes:  # docs/serving.md: what a cluster sets on its nodes
        os.environ.update(proxy_environment(proxy_ws_max_bytes))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "platform"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    ctx = ray.init(
        address="local", num_cpus=8, include_dashboard=True, log_to_driver=False,
        configure_logging=False,
    )  # fmt: skip
    session_dir = Path(ctx.address_info["session_dir"])
    cfg = load_config(
        None,
        {
            "serve.app_name": APP,
            "serve.unit_tokenizer": str(demo_unit_tokenizer(load_config(None))),
            "serve.model_num_cpus": 0.25,
            "serve.ingress_num_cpus": 0.1,
            "serve.autoscaling": {"min_replicas": 2, "max_replicas": 2},
        },
    )
    assert cfg.serve.auth_token == token
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg.without_secrets()), name=APP, route_prefix="/")
    return port, session_dir


async def wait_healthy(http, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if (await http.get("/healthz")).status_code == 200:
                return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"/healthz did not answer 200 within {timeout:g} s")


async def open_sessions(http, token: str, want: int = 0, timeout: float = 30) -> int:
    """The ingress's open-session count once it reaches ``want`` (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = (await http.get("/v1/stats", headers={"Authorization": f"Bearer {token}"})).json()
        if stats["sessions"] == want or time.monotonic() > deadline:
            return stats["sessions"]
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, port: int, session_dir: Path, token: str) -> dict:
    import httpx
    from opens2s.config.serve import LimitsSection

    t_start = time.monotonic()
    limits = LimitsSection()
    rng = random.Random(args.seed)
    tally = Tally(token)
    procs = Processes()
    url = f"ws://127.0.0.1:{port}/v1/realtime?token={token}"
    wave = spoken_question()
    from opens2s.serving.client import wav_bytes

    wav = wav_bytes(wave)
    log("building the uploads")
    cases = upload_cases(wave, limits.max_upload_bytes, np.random.default_rng(args.seed))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        await wait_healthy(http)
        # warm-up: every code path once (first decodes and answers allocate), then the baseline
        warm = ValidTurns()
        for _ in range(2):
            await valid_ws_turn(url, wave, warm, tally)
        for case in cases:
            if case.valid:
                await post_upload(http, tally, case, token)
        replicas0 = procs.replicas()
        pids = {role: [pid for _, pid in rs] for role, rs in replicas0.items()}
        if [len(pids[k]) for k in ("ingress", "model", "proxy")] != [1, 2, 1]:
            raise RuntimeError(f"expected 1 ingress and 2 model replicas, found {replicas0}")
        rss0 = {pid: procs.rss(pid) for ps in pids.values() for pid in ps}
        procs.mark("start", pids)
        objects0 = await procs.python_objects()

        log(f"HTTP: {len(cases)} uploads + raw requests, one at a time")
        statuses = await http_phase(http, port, procs, pids, tally, token, cases)
        procs.mark("after_http", pids)

        log(f"WebSocket: {args.ws_frames} fuzzed messages, valid turns alongside")
        turns = ValidTurns()
        stop = asyncio.Event()
        speaker = asyncio.ensure_future(valid_turns_until(stop, url, wave, turns, tally))
        kinds: collections.Counter = collections.Counter()
        deadline = time.monotonic() + args.max_fuzz_seconds
        with procs.measure("ws_fuzz", pids):
            total = 0
            lock = asyncio.Lock()

            async def worker(wid: int) -> None:
                nonlocal total
                wrng = random.Random(args.seed * 1000 + wid)
                while time.monotonic() < deadline:
                    async with lock:
                        if total >= args.ws_frames:
                            return
                        n = min(wrng.randrange(60, 240), args.ws_frames - total)
                        total += n  # reserved; the session may send fewer if closed early
                    sent = await fuzz_session(url, wrng, n, tally, kinds)
                    tally.requests["ws_fuzz_messages"] += sent
                    async with lock:
                        total += sent - n  # a session closed early sent fewer, a flood more

            await asyncio.gather(*(worker(i) for i in range(args.ws_concurrency)))
        if time.monotonic() >= deadline:
            tally.bug(
                "phase_out_of_time", f"WebSocket fuzz stopped after {args.max_fuzz_seconds} s"
            )
        with procs.measure("ws_raw_violations", pids):
            raw = await raw_ws_violations(port, "/v1/realtime", tally, kinds)
        big = await big_ws_frames(
            url, procs, pids, tally, args.proxy_ws_max_bytes or UVICORN_WS_MAX_BYTES
        )
        procs.mark("after_ws_fuzz", pids)
        log(f"WebSocket: {args.cycles} connect/disconnect cycles")
        with procs.measure("ws_connect_cycles", pids):
            cycles = await connect_cycles(url, args.cycles, args.cycle_concurrency, rng, tally)
        procs.mark("after_cycles", pids)
        stop.set()
        await speaker
        leaked = await open_sessions(http, token, 0)
        if leaked:
            tally.bug(
                "leaked_sessions", f"{leaked} sessions still open 30 s after the clients left"
            )

        log("auth")
        auth = await auth_phase(http, port, "", token, tally, wav)

        log("after: a valid turn each way, replicas, memory")
        final = ValidTurns()
        await valid_ws_turn(url, wave, final, tally)
        status, events, _ = await post_upload(http, tally, Upload("final", wav, {200}), token)
        http_final_ok = status == 200 and events[-1].get("status") == "completed"
        await asyncio.sleep(3)  # let the last sessions' memory go back
        replicas1 = procs.replicas()
        rss1 = {pid: procs.rss(pid) for rs in replicas1.values() for _, pid in rs}
        with contextlib.suppress(OSError):
            procs.mark("end", pids)
        objects1 = await procs.python_objects()

    ids0 = {a for rs in replicas0.values() for a, _ in rs}
    ids1 = {a for rs in replicas1.values() for a, _ in rs}
    restarts = len(ids0 - ids1)
    upload_peaks = {
        k[len("upload:") :]: v for k, v in procs.peaks.items() if k.startswith("upload:")
    }
    under_limit = {
        k: v
        for k, v in upload_peaks.items()
        if k not in ("over_limit_by_one_byte", "chunked_5MB_no_length")
    }
    leaks_in_logs = token_in_logs(session_dir, token)
    errors_logged = server_error_lines(session_dir)

    def mib(x: float) -> float:
        return round(x / MIB, 1)

    rss_roles = {}
    for role in ("ingress", "model", "proxy"):
        for i, (_, pid) in enumerate(replicas0[role]):
            start, end = rss0[pid], rss1.get(pid)
            rss_roles[f"{role}{i}"] = {
                "start_mib": mib(start),
                "end_mib": None if end is None else mib(end),
                "growth_mib": None if end is None else mib(end - start),
            }
    growths = [r["growth_mib"] for r in rss_roles.values() if r["growth_mib"] is not None]
    bugs = dict(tally.bugs)
    lost_valid = len(turns.lost) + len(final.lost) + (not http_final_ok)
    result = {
        "requests": dict(tally.requests),
        "ws_messages": tally.requests["ws_fuzz_messages"] + tally.requests["ws_raw_frames"],
        "ws_sessions": tally.requests["ws_sessions"] + tally.requests["ws_raw_sessions"],
        "connect_cycles": tally.requests["ws_connect_cycles"],
        "ws_message_kinds": dict(sorted(kinds.items())),
        "errors_by_kind": dict(sorted(tally.errors.items())),
        "bugs": bugs,
        "bugs_total": sum(bugs.values()),
        "bug_examples": tally.examples,
        "replica_restarts": restarts,
        "replicas": {role: len(rs) for role, rs in replicas1.items()},
        "valid_turns_tried": turns.tried + final.tried + 1,
        "valid_turns_completed": turns.completed + final.completed + int(http_final_ok),
        "valid_turns_lost": lost_valid,
        "valid_turns_lost_reasons": (turns.lost + final.lost)[:10],
        "valid_turn_ttfa_ms_p50": pct(turns.ttfa_ms, 50),
        "valid_turn_ttfa_ms_p95": pct(turns.ttfa_ms, 95),
        "valid_turn_done_ms_p95": pct(turns.done_ms, 95),
        "valid_turns_during_fuzz": turns.tried,
        "peak_rss_growth_mib": procs.peaks,
        "peak_rss_growth_exact": procs.exact_peaks,  # False: sampled every 5 ms instead
        "upload_peak_rss_growth_mib_max": max(max(v.values()) for v in under_limit.values()),
        "upload_peak_rss_growth_worst": max(
            under_limit, key=lambda k: max(under_limit[k].values())
        ),
        "rss_bound_mib": RSS_BOUND_MIB,
        "rss": rss_roles,
        "rss_growth_mib_max": max(growths) if growths else None,
        "rss_timeline_mib": procs.timeline,
        # growth of live Python objects per replica, start to end (a leak grows with traffic)
        "python_objects_growth": {k: objects1.get(k, 0) - n for k, n in objects0.items()},
        "python_objects_growth_max": max(objects1.get(k, 0) - n for k, n in objects0.items()),
        "open_sessions_after": leaked,
        "auth": auth,
        "auth_not_refused": tally.bugs.get("auth_not_refused", 0),
        "token_in_answers": tally.token_in_answers,
        "token_in_log_files": len(leaks_in_logs),
        "token_log_files": sorted(leaks_in_logs)[:10],
        "server_error_log_lines": errors_logged,
        "server_errors_unexplained": sum(
            n for k, n in errors_logged.items() if k != KNOWN_PROXY_ERROR
        ),
        "http_statuses": statuses,
        "ws_raw_outcomes": raw,
        "ws_big_frames": big,
        "connect_cycle_manners": dict(cycles),
        "seconds": round(time.monotonic() - t_start, 1),
        "proxy_ws_max_bytes": args.proxy_ws_max_bytes or UVICORN_WS_MAX_BYTES,
        "limits": {
            "max_upload_bytes": limits.max_upload_bytes,
            "max_frame_bytes": limits.max_frame_bytes,
        },
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ws-frames", type=int, default=10_000, help="fuzzed WebSocket messages")
    ap.add_argument("--ws-concurrency", type=int, default=6, help="fuzz sessions at once")
    ap.add_argument("--cycles", type=int, default=500, help="rapid connect/disconnect cycles")
    ap.add_argument("--cycle-concurrency", type=int, default=8)
    ap.add_argument("--max-fuzz-seconds", type=float, default=300, help="bound on the WS fuzz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--proxy-ws-max-bytes",
        type=int,
        default=2**20,
        help="WebSocket message cap in Serve's proxy (opens2s.serving.proxy_limits); 0: Serve's "
        "own 16 MiB",
    )
    args = ap.parse_args()

    import ray
    from ray import serve

    token = secrets.token_urlsafe(24)
    t0 = time.monotonic()
    log("starting Ray and Serve on 127.0.0.1")
    port, session_dir = deploy(token, args.proxy_ws_max_bytes)
    log(f"deployed in {time.monotonic() - t0:.0f} s on port {port}")
    try:
        result = asyncio.run(run(args, port, session_dir, token))
    finally:
        serve.shutdown()
        ray.shutdown()
    result["setup_s"] = round(time.monotonic() - t0 - result["seconds"], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
