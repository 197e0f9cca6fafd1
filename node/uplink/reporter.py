"""The contribution reporter: signed reports and heartbeats -> on-disk outbox -> coordinator.

The coordinator is never in the training path. ``submit`` only seals the message and writes it
to the outbox (tmp + fsync + rename), so a dead or slow coordinator costs the training loop one
small file write. A background thread with its own asyncio loop and one aiohttp session posts
the outbox in sequence order, deleting each file only after the coordinator acknowledged it
(2xx: stored, or a byte-identical duplicate). Transient failures (connection errors, timeouts,
429, 5xx) are retried with exponential backoff and full jitter (``node.policies.backoff``); any
other 4xx is final: the file moves to ``outbox/rejected/`` and the reason is logged. Files left
behind at ``stop`` are re-sent by the next Reporter started on the same outbox; sealing is
deterministic (Ed25519), so a re-send after a lost acknowledgement is a harmless duplicate.

Imports: stdlib, aiohttp, ``protocol``, ``node.policies``; never torch or hivemind.
"""
from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import random
import threading
import time
from pathlib import Path

import aiohttp

from node.policies.backoff import next_delay
from ops.atomic import write_atomic
from protocol import ContributionReport, Heartbeat, Identity, seal

__all__ = ["Reporter"]

logger = logging.getLogger(__name__)

REPORTS_PATH = "/api/v1/reports"
_SUFFIX = ".msg"


def _endpoint(url: str, path: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith(path) else url + path


class Reporter:
    """Delivers one node's signed messages to a coordinator, at least once, in ``seq`` order."""

    def __init__(
        self,
        identity: Identity,
        url: str,
        outbox_dir: Path,
        *,
        timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.identity = identity
        self.url = _endpoint(url, REPORTS_PATH)
        self.outbox = Path(outbox_dir)
        self.rejected_dir = self.outbox / "rejected"
        self.timeout = timeout
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.rng = rng or random.Random()
        self.delivered = 0  # acknowledged by the coordinator (stored or duplicate)
        self.rejected = 0  # refused for good (4xx other than 429), moved to rejected/
        self.last_error: str | None = None
        # the coordinator's dial-back verdict on this node's addresses, from heartbeat answers:
        # "public" | "private" | "unknown" (peerbook.py)
        self.reachability = "unknown"
        self._lock = threading.Lock()
        self._queue: list[int] = []  # heap of seq numbers with a file in the outbox
        self._queued: set[int] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._deadline: float | None = None  # monotonic; set by stop()
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.rejected_dir.mkdir(exist_ok=True)
        self._scan()

    # --- the caller's side (any thread) -------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages in the outbox not yet acknowledged (including one in flight)."""
        with self._lock:
            return len(self._queue)

    def _path(self, seq: int) -> Path:
        return self.outbox / f"{seq:012d}{_SUFFIX}"

    def _scan(self) -> None:
        for tmp in self.outbox.glob(".*.tmp"):  # a crash between write and rename (ops.atomic.temp_path)
            tmp.unlink(missing_ok=True)
        for path in self.outbox.glob("*" + _SUFFIX):
            if path.stem.isdigit():
                self._enqueue(int(path.stem))

    def _enqueue(self, seq: int) -> None:
        with self._lock:
            if seq not in self._queued:
                self._queued.add(seq)
                heapq.heappush(self._queue, seq)

    def submit(self, message: ContributionReport | Heartbeat) -> None:
        """Seal ``message`` and write it to the outbox; return once it is on disk.

        Raises ``ValueError`` if the outbox already holds *different* bytes under the same seq
        (the caller reused a sequence number), ``LocalProtocolError`` for an unsendable message.
        """
        if message.seq < 0:
            raise ValueError("seq must be >= 0")
        data = seal(message, self.identity)
        path = self._path(message.seq)
        with self._lock:
            if path.exists():
                if path.read_bytes() != data:
                    raise ValueError(f"seq {message.seq} is already in the outbox with other content")
                return
            write_atomic(path, data, durable=True)
        self._enqueue(message.seq)
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop already closed: the file waits for the next Reporter
                pass

    def start(self) -> None:
        """Start the sender thread (returns once its loop runs)."""
        if self._thread is not None:
            raise RuntimeError("a Reporter starts once")
        self._scan()
        self._thread = threading.Thread(target=self._run, name=f"reporter-{self.identity.peer_id[-6:]}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10.0):
            raise RuntimeError("reporter thread did not start")

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Try for up to ``flush_timeout`` seconds to deliver what is pending, then stop.
        Undelivered files stay in the outbox."""
        if self._thread is None:
            return
        self._deadline = time.monotonic() + max(flush_timeout, 0.0)
        self._stopping = True
        self._poke()
        self._thread.join(timeout=max(flush_timeout, 0.0) + 5.0)
        if self._thread.is_alive():
            logger.error("reporter thread did not stop; %d messages stay in %s", self.pending, self.outbox)

    # --- the sender thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # never let the thread die silently
            logger.exception("reporter thread crashed; %d messages stay in %s", self.pending, self.outbox)
        finally:
            self._loop = None

    def _remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    async def _sleep(self, seconds: float | None) -> None:
        """Sleep up to ``seconds`` (forever if None), waking early on submit or stop."""
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    async def _main(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        attempt = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            while True:
                remaining = self._remaining()
                if remaining is not None and remaining <= 0:
                    break
                with self._lock:
                    head = self._queue[0] if self._queue else None
                if head is None:
                    if self._stopping:
                        break
                    await self._sleep(None)
                    continue
                if await self._send(session, head):
                    attempt = 0
                    continue
                delay = next_delay(attempt, self.rng, self.backoff_base, self.backoff_cap)
                attempt += 1
                remaining = self._remaining()
                await self._sleep(delay if remaining is None else min(delay, max(remaining, 0.0)))

    def _done(self, seq: int) -> None:
        with self._lock:
            self._queued.discard(seq)
            if self._queue and self._queue[0] == seq:
                heapq.heappop(self._queue)
            elif seq in self._queue:
                self._queue.remove(seq)
                heapq.heapify(self._queue)

    async def _send(self, session: aiohttp.ClientSession, seq: int) -> bool:
        """Post one file; True when it is settled (acknowledged or refused for good)."""
        path = self._path(seq)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._done(seq)
            return True
        remaining = self._remaining()
        timeout = self.timeout if remaining is None else max(min(self.timeout, remaining), 0.01)
        try:
            async with session.post(
                self.url, data=data, headers={"Content-Type": "application/msgpack"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            self.last_error = f"{type(e).__name__}: {e}"
            logger.debug("seq %d not delivered (%s); will retry", seq, self.last_error)
            return False
        if 200 <= status < 300:
            verdict = _field(body, "reachability")
            if verdict in ("public", "private", "unknown"):
                self.reachability = verdict
            path.unlink(missing_ok=True)
            self._done(seq)
            self.delivered += 1
            return True
        if 400 <= status < 500 and status not in (408, 429):
            reason = _reason(body)
            os.replace(path, self.rejected_dir / path.name)
            self._done(seq)
            self.rejected += 1
            self.last_error = f"HTTP {status}: {reason}"
            logger.warning("coordinator refused seq %d (HTTP %d: %s); moved to %s", seq, status, reason, self.rejected_dir)
            return True
        self.last_error = f"HTTP {status}"
        logger.debug("seq %d got HTTP %d; will retry", seq, status)
        return False


def _reason(body: bytes) -> str:
    try:
        payload = json.loads(body)
        return f"{payload.get('error')}: {payload.get('detail', '')}"
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _field(body: bytes, name: str) -> object:
    try:
        payload = json.loads(body)
        return payload.get(name) if isinstance(payload, dict) else None
    except ValueError:
        return None
