"""What a node serves besides the all-reduce: its round's update in shared memory (for validators'
``rpc_download_update``), and the bounded streamed download of a peer's state or update."""
from __future__ import annotations


import asyncio
import logging
import math
import multiprocessing as mp
from collections.abc import AsyncIterator, Sequence
from typing import Any

import torch
from hivemind.compression import deserialize_torch_tensor
from hivemind.utils.streaming import combine_from_streaming


logger = logging.getLogger(__name__)


async def receive_tensors(stream: AsyncIterator[Any], chunk_timeout: float, max_bytes: float = math.inf, *,
                           first_timeout: float | None = None) -> tuple[bytes | None, list[torch.Tensor]]:
    """A state or update download: (the serialized metadata of its first message, the tensors).
    Waits ``first_timeout`` for the first message (the server readies the whole state before it sends:
    ``node.policies.timeouts.first_part_timeout``), ``chunk_timeout`` for each next one.
    Raises ``ValueError`` past ``max_bytes`` (a peer streaming more than the model holds)."""
    metadata, parts, tensors, received = None, [], [], 0
    async for message in _with_timeouts(stream, first_timeout or chunk_timeout, chunk_timeout):
        received += message.ByteSize()
        if received > max_bytes:
            raise ValueError(f"the peer sent more than {max_bytes:.0f} bytes")
        if message.metadata:
            metadata = message.metadata
        if message.tensor_part.dtype and parts:
            tensors.append(deserialize_torch_tensor(combine_from_streaming(parts)))
            parts = []
        parts.append(message.tensor_part)
    if parts:
        tensors.append(deserialize_torch_tensor(combine_from_streaming(parts)))
    return metadata, tensors


async def _with_timeouts(stream: AsyncIterator[Any], first_s: float, next_s: float) -> AsyncIterator[Any]:
    """``stream``'s messages; ``asyncio.TimeoutError`` past ``first_s`` for the first, ``next_s`` for each next."""
    it, timeout = aiter(stream), first_s
    while True:
        try:
            message = await asyncio.wait_for(anext(it), timeout)
        except StopAsyncIteration:
            return
        yield message
        timeout = next_s


class SharedUpdate:
    """One round's update in shared memory: written by the trainer (host process), read by the
    averager process when a validator asks (``rpc_download_update``)."""

    def __init__(self, like: Sequence[torch.Tensor]):
        ctx = mp.get_context("fork")
        self.tensors = [torch.zeros_like(t).share_memory_() for t in like]
        self.round, self.tokens = ctx.Value("q", -1, lock=False), ctx.Value("q", 0, lock=False)
        self.state_hash = ctx.Array("c", 64, lock=False)
        self.lock = ctx.Lock()

    def put(self, round_: int, tokens: int, state_hash: str, update: Sequence[torch.Tensor]) -> None:
        with self.lock:
            for mine, u in zip(self.tensors, update):
                mine.copy_(u)
            self.round.value, self.tokens.value = round_, tokens
            self.state_hash.value = state_hash.encode()[:64]

    def get(self) -> tuple[dict[str, Any], list[torch.Tensor]] | None:
        with self.lock:
            if self.round.value < 0:
                return None
            meta = {"round": self.round.value, "tokens": self.tokens.value, "state_hash": self.state_hash.value.decode()}
            return meta, [t.clone() for t in self.tensors]
