"""A TCP load balancer on 127.0.0.1 for the failover test: what a Kubernetes Service or an HAProxy
does in front of two coordinators. Each new connection goes to the next backend in turn; one that
refuses (a killed coordinator) is skipped. Bytes are copied both ways until either side closes.
Runs its own event loop in a thread; ``close()`` ends it and every connection."""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Sequence

__all__ = ["FailoverProxy"]


class FailoverProxy:
    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0
        self.connections = [0] * len(self.backends)  # per backend, connections it took
        self._thread = threading.Thread(target=self._run, name="failover-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            start = next(self._turn)
            for k in range(len(self.backends)):
                i = (start + k) % len(self.backends)
                try:
                    up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.backends[i]), 2.0)
                except (OSError, asyncio.TimeoutError):
                    continue
                self.connections[i] += 1
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
                return
        finally:
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.close()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
