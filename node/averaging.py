"""Pseudo-gradient averaging over hivemind: an exact-result butterfly all-reduce with byte counters.

Only this module and ``swarm.py`` touch hivemind's averaging internals.

Why a runner subclass (hard to undo): hivemind's reducers send each sender the *delta*
``average - sender_part``, compressed; the sender adds it to its own part. With any lossy
codec, or even fp32 rounding, every member then ends up with a slightly different "average",
and DiLoCo's global parameters drift apart across the swarm. Our reducers instead send the
averaged part itself, compressed once with one codec, and keep the same decompressed bytes
for their own share; every member of a group therefore holds bit-identical averaged
pseudo-gradients, hence bit-identical global parameters after the outer step. The bytes on
the wire are unchanged (the same number of parts, the same codec).

The runner also counts the protobuf bytes of every part it sends and receives into
shared-memory counters (the runner lives in the averager's child process).
"""
from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing as mp
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import torch
from hivemind.averaging import DecentralizedAverager
from hivemind.averaging.allreduce import AllreduceException, AllReduceRunner, AveragingMode
from hivemind.averaging.partition import BannedException, TensorPartContainer
from hivemind.compression import CompressionBase, CompressionInfo, deserialize_torch_tensor
from hivemind.proto import averaging_pb2, runtime_pb2
from hivemind.utils import get_dht_time
from hivemind.utils.asyncio import aiter_with_timeout, amap_in_executor, as_aiter, attach_event_on_finished, azip

from node import faults
from node.codecs import PART_VALUES, Codec, decode_sparse, get_codec

logger = logging.getLogger(__name__)

__all__ = ["ByteCounters", "PseudoGradientAverager", "WireCodec", "make_codec"]

_TAG = "capaswarm:"  # dtype field of parts in our own codecs; hivemind's codecs keep their own


class WireCodec(CompressionBase):
    """A ``node.codecs.Codec`` in hivemind's compression slot, for both directions of the all-reduce."""

    compression_type = runtime_pb2.CompressionType.NONE  # unused: our parts are told apart by dtype

    def __init__(self, codec: Codec):
        self.codec = codec

    def compress(self, tensor: torch.Tensor, info: CompressionInfo, allow_inplace: bool = False) -> runtime_pb2.Tensor:
        return self._wrap(tensor, down=False)

    def compress_down(self, tensor: torch.Tensor) -> runtime_pb2.Tensor:
        return self._wrap(tensor, down=True)

    def _wrap(self, tensor: torch.Tensor, down: bool) -> runtime_pb2.Tensor:
        if self.codec.kind == "hivemind":
            return self.codec.to_hivemind(tensor)
        data = self.codec.encode_down(tensor) if down else self.codec.encode(tensor)
        tag = f"{_TAG}{self.codec.name}{':down' if down else ''}"
        return runtime_pb2.Tensor(buffer=data, size=list(tensor.shape), dtype=tag, requires_grad=False)

    def extract(self, serialized: runtime_pb2.Tensor) -> torch.Tensor:
        if not serialized.dtype.startswith(_TAG):
            return deserialize_torch_tensor(serialized)
        name = serialized.dtype[len(_TAG):].removesuffix(":down")
        if name != self.codec.name:
            raise ValueError(f"peer sent a {name!r} part; this run uses {self.codec.name!r}")
        n = math.prod(serialized.size)
        if serialized.dtype.endswith(":down") and self.codec.kind == "topk":
            return decode_sparse(serialized.buffer, n).view(*serialized.size)
        return self.codec.decode(serialized.buffer, n).view(*serialized.size)

    def estimate_compression_ratio(self, info: CompressionInfo) -> float:
        # hivemind cuts parts of int(part_size_bytes / (4 * ratio)) values: make that exactly PART_VALUES,
        # so that part boundaries (where our quantization blocks restart) are known to the node
        return 2**19 / (4 * PART_VALUES)

    def roundtrip_down(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.extract(self.compress_down(tensor))


def make_codec(name: str) -> WireCodec:
    """Codec name from the run manifest -> the all-reduce's wire codec."""
    return WireCodec(get_codec(name))


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


async def _count(stream: AsyncIterator[Any], add: Callable[[int], None]) -> AsyncIterator[Any]:
    async for msg in stream:
        add(msg.ByteSize())
        yield msg


class _CountingStub:
    def __init__(self, stub: Any, counters: ByteCounters):
        self._stub, self._counters = stub, counters

    async def rpc_aggregate_part(self, inputs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        stream = await self._stub.rpc_aggregate_part(_count(inputs, self._counters.add_sent))
        return _count(stream, self._counters.add_received)


def share_views(container: TensorPartContainer) -> list[list[torch.Tensor]]:
    """Views, into the tensors being averaged, of every peer's share (call before any part is sent)."""
    return [[part for part, _info in parts] for parts in container._input_parts_by_peer]


def missing_parts(container: TensorPartContainer, peer_index: int) -> int:
    """How many of ``peer_index``'s averaged parts have not arrived yet."""
    return container.num_parts_by_peer[peer_index] - container._outputs_registered_by_peer[peer_index]


def zero_failed_shares(views: list[list[torch.Tensor]], failed: set[int]) -> int:
    """Zero the whole share of every failed reducer, in place; returns how many values were zeroed."""
    zeroed = 0
    for peer_index in sorted(failed):
        for view in views[peer_index]:
            view.zero_()
            zeroed += view.numel()
    return zeroed


class ExactAverageRunner(AllReduceRunner):
    """Butterfly all-reduce whose reducers return averaged parts (not deltas); counts bytes."""

    def __init__(self, *, counters: ByteCounters, **kwargs: Any):
        super().__init__(**kwargs)
        self.counters = counters
        # A reducer that dies mid-all-reduce: its *whole* share becomes a zero pseudo-gradient on
        # every survivor, so the round still counts and the replicas stay identical. hivemind's
        # container only zeroes the parts not yet received (``return_deltas`` stays True), and
        # survivors receive different numbers of parts before the reducer dies (a netns churn run
        # saw 396,800 vs 396,544 zeroed values and forked states), so after the loop we zero the
        # parts already received too. (Filling the share with each member's own part, hivemind's
        # choice for averaged values, would make the replicas differ as well.)
        self.share_views = share_views(self.tensor_part_container)
        self.failed_reducers: set[int] = set()

    def _get_peer_stub(self, peer: Any) -> Any:
        return _CountingStub(super()._get_peer_stub(peer), self.counters)

    async def _generate_input_for_peer(self, peer_index: int) -> AsyncIterator[Any]:
        first = True
        async for msg in super()._generate_input_for_peer(peer_index):
            yield msg
            if first:
                faults.maybe_fail_mid_allreduce()  # test seam; a no-op unless CAPASWARM_FAULT is set
                first = False

    @property
    def codec(self) -> WireCodec:
        return self.tensor_part_container.compression

    async def _communicate_with_peer(self, peer_id: Any) -> None:
        peer_index = self.ordered_peer_ids.index(peer_id)
        loop = asyncio.get_event_loop()
        if peer_id == self.peer_id:  # our own share: keep exactly what remote senders will decode
            sender_index = self.sender_peer_ids.index(peer_id)
            for part_index, tensor_part in enumerate(self.parts_for_local_averaging):
                averaged = await self.tensor_part_reducer.accumulate_part(sender_index, part_index, tensor_part, weight=self.weight)
                averaged = await loop.run_in_executor(None, self.codec.roundtrip_down, averaged)
                self.tensor_part_container.register_processed_part(peer_index, part_index, averaged)
            return
        # a remote reducer: as hivemind's, but parts are decoded by our codec
        try:
            done_sending = asyncio.Event()
            inputs_aiter = attach_event_on_finished(self._generate_input_for_peer(peer_index), done_sending)
            stream = await self._get_peer_stub(peer_id).rpc_aggregate_part(inputs_aiter)
            if self.should_delay_results(self.peer_id):
                await done_sending.wait()
            part_index = 0

            def _decode(msg: Any) -> torch.Tensor:
                if msg.code != averaging_pb2.AVERAGED_PART:
                    raise AllreduceException(f"{peer_id} sent {averaging_pb2.MessageCode.Name(msg.code)}")
                return self.codec.extract(msg.tensor_part)

            async for averaged in amap_in_executor(
                _decode, aiter_with_timeout(stream, self.reducer_timeout), max_prefetch=self.tensor_part_container.prefetch
            ):
                self.tensor_part_container.register_processed_part(peer_index, part_index, averaged)
                part_index += 1
            if part_index != self.tensor_part_container.num_parts_by_peer[peer_index]:
                raise AllreduceException(f"peer {peer_id} sent {part_index} parts, expected {self.tensor_part_container.num_parts_by_peer[peer_index]}")
        except BaseException as e:
            if missing := missing_parts(self.tensor_part_container, peer_index):
                self.failed_reducers.add(peer_index)
                logger.warning("reducer %s failed with %d of %d parts missing: %r", peer_id, missing,
                               self.tensor_part_container.num_parts_by_peer[peer_index], e)
            # else: every part arrived and only the stream's end failed (the reducer died just after);
            # a member that saw a clean end zeroes nothing, so neither may we
            self.tensor_part_container.register_failed_reducer(peer_index)
            raise

    async def rpc_aggregate_part(self, stream: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for msg in super().rpc_aggregate_part(_count(stream, self.counters.add_received), context):
            self.counters.add_sent(msg.ByteSize())
            yield msg

    async def _accumulate_parts_streaming(self, stream: AsyncIterator[Any], sender_index: int) -> AsyncIterator[Any]:
        part_index = 0
        try:
            loop = asyncio.get_event_loop()
            async for tensor_part, weight in amap_in_executor(
                lambda msg: (self.codec.extract(msg.tensor_part), msg.weight),
                stream,
                max_prefetch=self.tensor_part_container.prefetch,
            ):
                try:
                    averaged = await self.tensor_part_reducer.accumulate_part(sender_index, part_index, tensor_part, weight=weight)
                    part_index += 1
                except BannedException:
                    break
                serialized = await loop.run_in_executor(None, self.codec.compress_down, averaged)
                yield averaging_pb2.AveragingData(code=averaging_pb2.AVERAGED_PART, tensor_part=serialized)
        finally:
            if part_index != self.tensor_part_reducer.num_parts:
                await self._ban_sender(self.sender_peer_ids[sender_index])


StateProvider = Callable[[], tuple[dict[str, Any], Sequence[torch.Tensor]]]


class PseudoGradientAverager(DecentralizedAverager):
    """Averages one flat fp32 buffer per parameter; serves the node's global state to joiners.

    :param state_provider: called in the host process when a peer downloads our state; returns
      ``(metadata, tensors)`` of the latest completed round (a snapshot, never live tensors).
    """

    def __init__(self, buffers: Sequence[torch.Tensor], dht: Any, *, state_provider: StateProvider, **kwargs: Any):
        self.counters = ByteCounters()
        self._state_provider = state_provider
        super().__init__(buffers, dht, **kwargs)

    def set_timeouts(self, *, chunk_s: float, allreduce_s: float) -> None:
        """Re-derive the all-reduce timeouts (from the host process; applied in the averager process)."""
        self._outer_pipe.send(("_set_timeouts", [], dict(chunk_s=chunk_s, allreduce_s=allreduce_s)))

    async def _set_timeouts(self, chunk_s: float, allreduce_s: float) -> None:
        self.allreduce_kwargs.update(sender_timeout=chunk_s, reducer_timeout=2 * chunk_s)
        self._allreduce_timeout = allreduce_s

    def get_current_state(self) -> tuple[Any, Sequence[torch.Tensor], None]:
        metadata, tensors = self._state_provider()
        return metadata, tensors, None

    async def _run_allreduce_inplace_(self, tensors: Sequence[torch.Tensor], group_info: Any, group_id: bytes | None = None, **kwargs: Any) -> None:
        group_id = group_info.group_id if group_id is None else group_id
        runner = ExactAverageRunner(
            counters=self.counters,
            p2p=self._p2p,
            servicer_type=type(self),
            prefix=self.prefix,
            tensors=tensors,
            group_id=group_id,
            ordered_peer_ids=group_info.peer_ids,
            **kwargs,
        )
        assert group_id in self._running_groups, f"group {group_id} was not registered"
        self._running_groups[group_id].set_result(runner)
        faults.allreduce_started()
        if runner.modes[group_info.peer_ids.index(self.peer_id)] == AveragingMode.AUX:
            async for _ in runner:
                raise ValueError("aux peers should not receive averaged tensors")
            return
        async for tensor, averaged in azip(as_aiter(*tensors), runner):
            tensor.copy_(averaged)  # the average itself, bit-identical on every member
        if runner.failed_reducers:
            zeroed = zero_failed_shares(runner.share_views, runner.failed_reducers)
            logger.warning("%d reducer(s) failed: %d values of this round's average are zero", len(runner.failed_reducers), zeroed)
        self.last_updated = get_dht_time()
        self._state_updated.set()
