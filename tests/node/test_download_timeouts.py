"""A state download waits for the server to ready the whole state before its first part, then a
chunk's wait for each next part (``node.averaging.served.receive_tensors``); the first wait grows with
the state's size (``node.policies.timeouts.first_part_timeout``). Before, at 86M, 19 download attempts
gave up after the 2 s chunk floor while their servers were still copying the state."""
from __future__ import annotations

import asyncio

import pytest
import torch
from hivemind.compression import serialize_torch_tensor
from hivemind.proto import averaging_pb2
from hivemind.utils.streaming import split_for_streaming

from node.averaging.served import receive_tensors
from node.model.gpt import PRESETS
from node.policies.model_size import param_count
from node.policies.timeouts import chunk_timeout, first_part_timeout


def _served(tensors: list[torch.Tensor], first_delay_s: float, next_delay_s: float = 0.0):
    async def stream():
        await asyncio.sleep(first_delay_s)  # the server readying its state
        metadata = b"meta"
        for t in tensors:
            for part in split_for_streaming(serialize_torch_tensor(t), chunk_size_bytes=1024):
                yield averaging_pb2.DownloadData(tensor_part=part, metadata=metadata)
                metadata = b""
                await asyncio.sleep(next_delay_s)
    return stream()


def test_a_slow_first_part_is_waited_for_and_the_tensors_arrive_whole():
    tensors = [torch.arange(1000, dtype=torch.float32), torch.ones(3, 700)]
    meta, got = asyncio.run(receive_tensors(_served(tensors, 0.5), 0.1, first_timeout=2.0))
    assert meta == b"meta" and len(got) == 2
    assert all(torch.equal(a, b) for a, b in zip(got, tensors))


def test_without_the_first_wait_the_chunk_timeout_fires_and_a_stalled_stream_still_fails():
    tensors = [torch.zeros(1000)]
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(receive_tensors(_served(tensors, 0.5), 0.1))  # the old behaviour: one wait for every part
    with pytest.raises(asyncio.TimeoutError):  # the long first wait is not granted to the parts after it
        asyncio.run(receive_tensors(_served(tensors, 0.0, next_delay_s=0.5), 0.1, first_timeout=5.0))


def test_the_first_wait_grows_with_the_state_and_stays_a_chunk_wait_for_a_small_one():
    chunk_s = chunk_timeout(1000e6 / 8)  # the size benchmark's declared link: the 2 s floor
    state_86m = 2 * 4 * param_count(PRESETS["gpt2-small-bytes"])  # 688 MB: params and momentum
    assert first_part_timeout(state_86m, chunk_s) > 10 * chunk_s
    tiny = 2 * 4 * param_count(PRESETS["tiny"])
    assert first_part_timeout(tiny, chunk_s) < 1.2 * chunk_s
