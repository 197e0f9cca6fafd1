"""Byte counters of the all-reduce: the protobuf bytes of every part sent and received, in shared memory
(the runner lives in the averager's child process)."""
from __future__ import annotations


import logging
import multiprocessing as mp
from collections.abc import AsyncIterator, Callable
from typing import Any



logger = logging.getLogger(__name__)


class ByteCounters:
    """Bytes sent/received by all-reduce, in shared memory so the averager process can write them."""

    def __init__(self) -> None:
        self._sent = mp.Value("q", 0, lock=True)
        self._received = mp.Value("q", 0, lock=True)

    def add_sent(self, n: int) -> None:
        with self._sent.get_lock():
            self._sent.value += n

    def add_received(self, n: int) -> None:
        with self._received.get_lock():
            self._received.value += n

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    @property
    def received(self) -> int:
        return int(self._received.value)


async def count_stream(stream: AsyncIterator[Any], add: Callable[[int], None]) -> AsyncIterator[Any]:
    async for msg in stream:
        add(msg.ByteSize())
        yield msg


class CountingStub:
    def __init__(self, stub: Any, counters: ByteCounters):
        self._stub, self._counters = stub, counters

    async def rpc_aggregate_part(self, inputs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        stream = await self._stub.rpc_aggregate_part(count_stream(inputs, self._counters.add_sent))
        return count_stream(stream, self._counters.add_received)
