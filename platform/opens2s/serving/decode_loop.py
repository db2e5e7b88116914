"""The batched decode loop of a model replica: one asyncio task steps every active response together.

Each response is explicit state (the decoder's per-session state, its unit blocker, its vocoder
stream); responses join the batch when their prefill is done and leave it when they finish or their
client goes away, so sessions of different lengths share each batched step (Moshi's
"desynchronized streams with batching"). Heavy work (prefill, step, vocoding) runs on one compute
thread, iteration after iteration, while the event loop streams the events out.

Nothing here knows Ray: the Serve deployment in ``model_deployment`` wraps it, and a test or a
benchmark can drive it directly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opens2s.config.serve import VocoderBlocks
from opens2s.serving.protocol import audio_delta, error_event, event


@dataclass
class TurnRequest:
    """One user turn to answer: the audio (float32, 16 kHz) and the conversation before it."""

    response_id: str
    audio: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    system_prompt: str | None = None
    voice: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    blocks: VocoderBlocks | None = None
    """Overrides the replica's vocoder block schedule (the benchmark compares schedules)."""


@dataclass
class _Active:
    req: TurnRequest
    queue: asyncio.Queue
    blocks: VocoderBlocks
    t_arrived: float
    loop: asyncio.AbstractEventLoop
    t_prefilled: float | None = None
    state: Any = None
    vocoder: Any = None
    vstream: Any = None
    held: list[int] = field(default_factory=list)  # units of a "whole" schedule, until done
    t_first_audio: float | None = None
    audio_samples: int = 0
    units: int = 0
    text: list[str] = field(default_factory=list)
    cancelled: bool = False


class BatchedDecodeLoop:
    """Answers many turns at once with one batched decoder step per iteration.

    ``start(req) -> state`` prefills one request (the model deployment builds it from the
    decoder), ``decoder_step(states) -> list[list[event]]`` advances all of them by one step;
    ``vocoder_for(blocks)`` gives the vocoder (``sample_rate``, ``stream()`` with push/flush) that
    cuts blocks as ``blocks`` says.

    The compute thread runs iterations back to back while any response is active and hands each
    response's events to its event loop as soon as they exist (``call_soon_threadsafe``): no
    round trip through the event loop between two steps, and a response whose first block is
    ready is vocoded and sent before the others of that step are vocoded.
    """

    def __init__(
        self,
        start: Callable[[TurnRequest], Any],
        decoder_step: Callable[[list[Any]], list[list[Any]]],
        vocoder_for: Callable[[VocoderBlocks], Any],
        blocks: VocoderBlocks,
        max_batch: int = 16,
    ) -> None:
        self._start = start
        self._step = decoder_step
        self._vocoder_for = vocoder_for
        self.blocks = blocks
        self.sample_rate = int(vocoder_for(blocks).sample_rate)
        self.max_batch = max_batch
        self._lock = threading.Lock()  # guards _pending and _working
        self._pending: list[_Active] = []
        self._active: list[_Active] = []  # the compute thread's own
        self._working = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self.steps = 0
        self.batch_sizes: list[int] = []

    @property
    def active_count(self) -> int:
        """Responses admitted or waiting for their prefill."""
        return len(self._active) + len(self._pending)

    async def respond(self, req: TurnRequest) -> AsyncIterator[dict[str, Any]]:
        """Stream the events of one response; closing the iterator cancels the response."""
        entry = _Active(
            req=req,
            queue=asyncio.Queue(),
            blocks=req.blocks or self.blocks,
            t_arrived=time.perf_counter(),
            loop=asyncio.get_running_loop(),
        )
        with self._lock:
            self._pending.append(entry)
            if not self._working:
                try:
                    self._executor.submit(self._work)
                except RuntimeError:  # close()d: the replica is shutting down
                    self._pending.remove(entry)
                    self._fail(entry, "model_unavailable", "this model replica is shutting down")
                else:
                    self._working = True
        try:
            while True:
                ev = await entry.queue.get()
                if ev is None:
                    return
                yield ev
        finally:
            entry.cancelled = True

    # --- compute thread -------------------------------------------------------------------

    def _work(self) -> None:
        """Iterate until no response is active or waiting."""
        try:
            while self._iteration():
                pass
        except Exception as e:  # a bug here must not leave clients waiting forever
            with self._lock:
                everyone, self._pending, self._working = self._active + self._pending, [], False
            self._active = []
            for entry in everyone:
                self._fail(entry, "decode_failed", f"decode loop failed: {e}")

    def _iteration(self) -> bool:
        with self._lock:
            self._active = [a for a in self._active if not a.cancelled]
            if not self._pending and not self._active:
                self._working = False
                return False
            # One prefill per iteration: sessions already talking get a step between two
            # prefills instead of stalling while a crowd of new turns is prefilled.
            admit = None
            if self._pending and len(self._active) < self.max_batch:
                admit = self._pending.pop(0)
        if admit is not None and not admit.cancelled:
            try:
                self._prefill(admit)
                self._active.append(admit)
            except Exception as e:  # a bad turn must not stop the others
                code = "invalid_request" if isinstance(e, ValueError) else "decode_failed"
                self._fail(admit, code, f"could not start the response: {e}")
        if not self._active:
            return True
        batch = list(self._active)
        try:
            results = self._step([a.state for a in batch])
        except Exception as e:
            for entry in batch:
                self._fail(entry, "decode_failed", f"decode step failed: {e}")
            self._active = [a for a in self._active if a not in batch]
            return True
        self.steps += 1
        self.batch_sizes.append(len(batch))
        # Responses still waiting for their first audio are vocoded (and sent) first.
        order = sorted(range(len(batch)), key=lambda i: batch[i].t_first_audio is not None)
        for i in order:
            entry = batch[i]
            try:
                events, finished = self._handle(entry, results[i])
            except Exception as e:
                self._fail(entry, "decode_failed", f"vocoding failed: {e}")
                self._active.remove(entry)
                continue
            if finished:
                self._active.remove(entry)
            self._send(entry, events, finished)
        return True

    @staticmethod
    def _send(entry: _Active, events: list[dict[str, Any]], finished: bool) -> None:
        """Hand events to the response's event loop (from the compute thread)."""
        if not events and not finished:
            return
        items = [*events, None] if finished else events
        try:
            entry.loop.call_soon_threadsafe(_put_all, entry.queue, items)
        except RuntimeError:  # the client's event loop is closed: nobody is listening
            entry.cancelled = True

    @classmethod
    def _fail(cls, entry: _Active, code: str, message: str) -> None:
        rid = entry.req.response_id
        failed = [
            error_event(code, message, response_id=rid),
            event("response.done", response_id=rid, status="failed"),
        ]
        cls._send(entry, failed, finished=True)

    def _prefill(self, entry: _Active) -> None:
        entry.state = self._start(entry.req)
        entry.t_prefilled = time.perf_counter()
        entry.vocoder = self._vocoder_for(entry.blocks)
        entry.vstream = entry.vocoder.stream()

    def _handle(self, entry: _Active, events: list[Any]) -> tuple[list[dict[str, Any]], bool]:
        rid = entry.req.response_id
        out: list[dict[str, Any]] = []
        done_reason = None
        for ev in events:
            units = getattr(ev, "units", None)
            if units is not None:
                entry.units += len(units)
                if entry.blocks.schedule == "whole":
                    entry.held.extend(units)
                else:
                    out.extend(self._vocode(entry, entry.vstream.push(units)))
            elif hasattr(ev, "text"):
                entry.text.append(ev.text)
                out.append(event("response.text.delta", response_id=rid, delta=ev.text))
            else:
                done_reason = getattr(ev, "reason", "stop")
        if done_reason is None:
            return out, False
        if entry.blocks.schedule == "whole":
            # the baseline: one offline render of the whole answer
            out.extend(self._vocode(entry, entry.vocoder.decode(entry.held)))
        else:
            out.extend(self._vocode(entry, entry.vstream.flush()))
        out.append(self._done(entry, done_reason))
        return out, True

    def _vocode(self, entry: _Active, wave: np.ndarray) -> list[dict[str, Any]]:
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if wave.size == 0:
            return []
        if entry.t_first_audio is None:
            entry.t_first_audio = time.perf_counter()
        entry.audio_samples += int(wave.size)
        return [audio_delta(entry.req.response_id, wave, self.sample_rate)]

    def _done(self, entry: _Active, reason: str) -> dict[str, Any]:
        elapsed = time.perf_counter() - entry.t_arrived
        audio_s = entry.audio_samples / self.sample_rate
        ttfa = None if entry.t_first_audio is None else entry.t_first_audio - entry.t_arrived
        return event(
            "response.done",
            response_id=entry.req.response_id,
            status="completed",
            reason=str(reason),
            text="".join(entry.text),
            units=entry.units,
            audio_seconds=round(audio_s, 4),
            model_ttfa_ms=None if ttfa is None else round(ttfa * 1000, 2),
            prefill_ms=round((entry.t_prefilled - entry.t_arrived) * 1000, 2),
            rtf=None if audio_s == 0 else round(elapsed / audio_s, 4),
            schedule=entry.blocks.schedule,
        )

    def close(self) -> None:
        """Stop the compute thread (replica shutdown)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _put_all(queue: asyncio.Queue, items: list[Any]) -> None:
    for item in items:
        queue.put_nowait(item)
