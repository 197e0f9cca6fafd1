"""The exact-average butterfly runner: reducers return averaged parts (not deltas); counts bytes.

Why a runner subclass (hard to undo): hivemind's reducers send each sender the *delta*
``average - sender_part``, compressed; the sender adds it to its own part. With any lossy
codec, or even fp32 rounding, every member then ends up with a slightly different "average",
and DiLoCo's global parameters drift apart across the swarm. Our reducers instead send the
averaged part itself, compressed once with one codec, and keep the same decompressed bytes
for their own share; every member of a group therefore holds bit-identical averaged
pseudo-gradients, hence bit-identical global parameters after the outer step. The bytes on
the wire are unchanged (the same number of parts, the same codec).
"""
from __future__ import annotations


import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import torch
from hivemind.averaging.allreduce import AllreduceException, AllReduceRunner
from hivemind.averaging.partition import BannedException
from hivemind.proto import averaging_pb2
from hivemind.utils.asyncio import aiter_with_timeout, amap_in_executor, attach_event_on_finished

from node.host import faults
from node.averaging.codecs import CodecError
from node.averaging.counters import ByteCounters, CountingStub, count_stream
from node.averaging.parts import check_part, missing_parts, share_views
from node.averaging.reduction import RobustPartReducer
from node.averaging.wire import WireCodec

logger = logging.getLogger(__name__)


class ExactAverageRunner(AllReduceRunner):
    """Butterfly all-reduce whose reducers return averaged parts (not deltas); counts bytes."""

    def __init__(self, *, counters: ByteCounters, aggregation: str = "mean", **kwargs: Any):
        super().__init__(**kwargs)
        self.counters = counters
        self.aggregation = aggregation
        if aggregation != "mean":  # robust rules need every sender's copy of a part at once
            self.tensor_part_reducer = RobustPartReducer(self.tensor_part_reducer.part_shapes,
                                                         len(self.sender_peer_ids), method=aggregation)
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
        return CountingStub(super()._get_peer_stub(peer), self.counters)

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
                averaged = await self.tensor_part_reducer.accumulate_part(sender_index, part_index, tensor_part,
                                                                          weight=self.weight)
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
                if part_index >= len(self.share_views[peer_index]):
                    raise CodecError(f"reducer sent more than {len(self.share_views[peer_index])} parts")
                check_part(averaged, self.share_views[peer_index][part_index].shape)
                self.tensor_part_container.register_processed_part(peer_index, part_index, averaged)
                part_index += 1
            if part_index != self.tensor_part_container.num_parts_by_peer[peer_index]:
                expected = self.tensor_part_container.num_parts_by_peer[peer_index]
                raise AllreduceException(f"peer {peer_id} sent {part_index} parts, expected {expected}")
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
        async for msg in super().rpc_aggregate_part(count_stream(stream, self.counters.add_received), context):
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
                if part_index >= self.tensor_part_reducer.num_parts:
                    raise CodecError(f"sender sent more than {self.tensor_part_reducer.num_parts} parts")
                check_part(tensor_part, self.tensor_part_reducer.part_shapes[part_index], weight)
                try:
                    averaged = await self.tensor_part_reducer.accumulate_part(sender_index, part_index,
                                                                              tensor_part, weight=weight)
                    part_index += 1
                except BannedException:
                    break
                serialized = await loop.run_in_executor(None, self.codec.compress_down, averaged)
                yield averaging_pb2.AveragingData(code=averaging_pb2.AVERAGED_PART, tensor_part=serialized)
        finally:
            if part_index != self.tensor_part_reducer.num_parts:
                await self._ban_sender(self.sender_peer_ids[sender_index])
