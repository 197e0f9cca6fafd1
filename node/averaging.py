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
import queue
import random
import time
import typing
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import torch
from hivemind.averaging import DecentralizedAverager
from hivemind.averaging.allreduce import AllreduceException, AllReduceRunner, AveragingMode
from hivemind.averaging.partition import BannedException, TensorPartContainer, TensorPartReducer
from hivemind.compression import CompressionBase, CompressionInfo, deserialize_torch_tensor, serialize_torch_tensor
from hivemind.proto import averaging_pb2, runtime_pb2
from hivemind.p2p import P2PContext, PeerID
from hivemind.utils import MPFuture, ValueWithExpiration, get_dht_time
from hivemind.utils.streaming import combine_from_streaming, split_for_streaming
from hivemind.utils.asyncio import aiter_with_timeout, amap_in_executor, as_aiter, attach_event_on_finished, azip

from node import faults
from node.agreement import union_of_failed, verdict, wait_s
from node.codecs import PART_VALUES, Codec, CodecError, check_hivemind, decode_sparse, get_codec
from node.robust import MemberStats, aggregate

logger = logging.getLogger(__name__)

__all__ = ["ByteCounters", "PseudoGradientAverager", "RobustPartReducer", "WireCodec", "make_codec"]

AGREEMENT_TTL_S = 120.0  # the group's records of failed reducers outlive any round's agreement wait
AGREEMENT_POLL_S = 0.1  # re-read of the group's records while waiting for every member's
MAX_WEIGHT = 2.0**53  # a sender's weight (its token claim) above this, non-finite or <= 0 bans it

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
        """A part from a peer -> fp32 values; raises :class:`CodecError` for anything malformed
        (another codec, a size over one part, non-finite values, a wrong byte count)."""
        size = list(serialized.size)
        if len(size) > 8 or any(d < 0 for d in size) or math.prod(size) > PART_VALUES:
            raise CodecError(f"part of shape {size[:8]} (at most {PART_VALUES} values)")
        n = math.prod(size)
        if not serialized.dtype.startswith(_TAG):
            if self.codec.kind != "hivemind":
                raise CodecError(f"peer sent a {serialized.dtype[:32]!r} part; this run uses {self.codec.name!r}")
            try:
                tensor = deserialize_torch_tensor(serialized)
            except Exception as e:  # protobuf / numpy / torch errors on garbage
                raise CodecError(f"not a hivemind tensor: {type(e).__name__}") from None
            return check_hivemind(tensor, n).view(*size)
        name = serialized.dtype[len(_TAG):].removesuffix(":down")
        if name != self.codec.name:
            raise CodecError(f"peer sent a {name[:32]!r} part; this run uses {self.codec.name!r}")
        if serialized.dtype.endswith(":down") and self.codec.kind == "topk":
            return decode_sparse(serialized.buffer, n).view(*size)
        return self.codec.decode(serialized.buffer, n).view(*size)

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


async def _receive_tensors(stream: AsyncIterator[Any], chunk_timeout: float,
                           max_bytes: float = math.inf) -> tuple[bytes | None, list[torch.Tensor]]:
    """A state or update download: (the serialized metadata of its first message, the tensors).
    Raises ``ValueError`` past ``max_bytes`` (a peer streaming more than the model holds)."""
    metadata, parts, tensors, received = None, [], [], 0
    async for message in aiter_with_timeout(stream, timeout=chunk_timeout):
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


async def _copy_average(tensors: Sequence[torch.Tensor], runner: Any) -> None:
    async for tensor, averaged in azip(as_aiter(*tensors), runner):
        tensor.copy_(averaged)  # the average itself, bit-identical on every member


def _phase_timeouts(allreduce_s: float | None, chunk_s: float | None) -> tuple[float | None, float | None]:
    """(our data phase's timeout, hivemind's all-reduce timeout): the latter adds the agreement's
    wait for the others' records, and a second for its own DHT calls."""
    if allreduce_s is None:
        return None, None
    return allreduce_s, allreduce_s + wait_s(chunk_s) + 1.0


def zero_failed_shares(views: list[list[torch.Tensor]], failed: set[int]) -> int:
    """Zero the whole share of every failed reducer, in place; returns how many values were zeroed."""
    zeroed = 0
    for peer_index in sorted(failed):
        for view in views[peer_index]:
            view.zero_()
            zeroed += view.numel()
    return zeroed


class RobustPartReducer(TensorPartReducer):
    """hivemind's reducer, but it keeps every sender's copy of the current part and aggregates them
    with ``node.robust.aggregate`` once all have arrived (instead of a running weighted sum).
    ``stats[sender_index]`` gathers what ``node.robust`` saw of each sender."""

    def __init__(self, part_shapes: Sequence[torch.Size], num_senders: int, *, method: str):
        self.method = method
        self.parts: dict[int, tuple[torch.Tensor, float]] = {}
        self.stats = [MemberStats() for _ in range(num_senders)]
        super().__init__(part_shapes, num_senders)

    def reset_accumulators(self) -> None:
        self.parts = {}
        super().reset_accumulators()

    async def accumulate_part(self, sender_index: int, part_index: int, tensor_part: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        # as TensorPartReducer.accumulate_part, storing the part instead of adding it to a sum
        assert 0 <= sender_index < self.num_senders and 0 <= part_index < self.num_parts
        self.num_parts_received[sender_index] += 1
        while part_index > self.current_part_index:
            await asyncio.wait({self.current_part_future, asyncio.create_task(self.finished.wait())}, return_when=asyncio.FIRST_COMPLETED)
            if self.finished.is_set():
                raise AllreduceException(f"attempted to aggregate part in a finalized {type(self).__name__}")
        if self.sender_failed_after[sender_index] != float("inf"):
            raise BannedException(f"sender {sender_index} was banned in background")
        assert part_index == self.current_part_index
        future = self.current_part_future
        if part_index < self.sender_failed_after[sender_index]:
            self.parts[sender_index] = (tensor_part, weight)
            self.current_part_accumulated_from += 1
            self.check_current_part_finished()
        return await future

    def check_current_part_finished(self) -> None:
        assert self.current_part_accumulated_from <= self.num_current_senders
        if self.current_part_accumulated_from != self.num_current_senders:
            return
        senders = sorted(self.parts)
        if not senders:
            result = torch.zeros(self.part_shapes[self.current_part_index])
        else:
            result, seen = aggregate([self.parts[i][0] for i in senders], [self.parts[i][1] for i in senders], self.method)
            for i, (ratio, norm, kept, capped) in zip(senders, seen):
                self.stats[i].add(ratio, norm, kept, capped)
        self.current_part_future.set_result(result)
        self.reset_accumulators()


def check_part(tensor: torch.Tensor, shape: torch.Size, weight: float | None = None) -> None:
    """A decoded part from a peer must have the expected shape (a 1-value part would broadcast over
    the whole accumulator) and, from a sender, a finite positive weight."""
    if tensor.shape != shape:
        raise CodecError(f"part of shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    if weight is not None and not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
        raise CodecError(f"sender weight {weight!r} out of range")


class ExactAverageRunner(AllReduceRunner):
    """Butterfly all-reduce whose reducers return averaged parts (not deltas); counts bytes."""

    def __init__(self, *, counters: ByteCounters, aggregation: str = "mean", **kwargs: Any):
        super().__init__(**kwargs)
        self.counters = counters
        self.aggregation = aggregation
        if aggregation != "mean":  # robust rules need every sender's copy of a part at once
            self.tensor_part_reducer = RobustPartReducer(self.tensor_part_reducer.part_shapes, len(self.sender_peer_ids), method=aggregation)
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
                if part_index >= len(self.share_views[peer_index]):
                    raise CodecError(f"reducer sent more than {len(self.share_views[peer_index])} parts")
                check_part(averaged, self.share_views[peer_index][part_index].shape)
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
                if part_index >= self.tensor_part_reducer.num_parts:
                    raise CodecError(f"sender sent more than {self.tensor_part_reducer.num_parts} parts")
                check_part(tensor_part, self.tensor_part_reducer.part_shapes[part_index], weight)
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

    def __init__(self, buffers: Sequence[torch.Tensor], dht: Any, *, state_provider: StateProvider, aggregation: str = "mean",
                 serve_updates: bool = True, **kwargs: Any):
        self.counters = ByteCounters()
        # our last round's update (pseudo-gradient), in shared memory for validators (``rpc_download_update``)
        self._update = SharedUpdate(buffers) if serve_updates else None
        self._state_provider = state_provider
        self.aggregation = aggregation
        # what our reducer saw of each sender, one dict per robust all-reduce, from the averager
        # process to the trainer (which signs it into an OutlierReport)
        self._reducer_stats: Any = mp.get_context("fork").Queue()
        # hivemind's all-reduce timeout covers our data phase *and* the agreement after it (node/agreement.py)
        chunk_s = kwargs.get("sender_timeout", kwargs.get("next_chunk_timeout"))
        self._data_timeout_s, kwargs["allreduce_timeout"] = _phase_timeouts(kwargs.get("allreduce_timeout"), chunk_s)
        super().__init__(buffers, dht, **kwargs)

    def drain_reducer_stats(self) -> list[dict[str, MemberStats]]:
        """Every ``{sender peer id: MemberStats}`` our reducer produced since the last call."""
        out = []
        while True:
            try:
                out.append(self._reducer_stats.get_nowait())
            except queue.Empty:
                return out

    def set_timeouts(self, *, chunk_s: float, allreduce_s: float) -> None:
        """Re-derive the all-reduce timeouts (from the host process; applied in the averager process)."""
        self._outer_pipe.send(("_set_timeouts", [], dict(chunk_s=chunk_s, allreduce_s=allreduce_s)))

    async def _set_timeouts(self, chunk_s: float, allreduce_s: float) -> None:
        self.allreduce_kwargs.update(sender_timeout=chunk_s, reducer_timeout=2 * chunk_s)
        self._data_timeout_s, self._allreduce_timeout = _phase_timeouts(allreduce_s, chunk_s)

    def publish_update(self, round_: int, tokens: int, state_hash: str, update: Sequence[torch.Tensor]) -> None:
        """Keep this round's update (what we average, before any codec) for validators to download."""
        if self._update is not None:
            self._update.put(round_, tokens, state_hash, update)

    async def rpc_download_update(self, _request: averaging_pb2.DownloadRequest,
                                  _context: P2PContext) -> typing.AsyncIterator[averaging_pb2.DownloadData]:
        """Our last round's update, for a validator's spot check: metadata ``{round, tokens, state_hash}``
        with the first part, then the fp32 tensors, uncompressed (the validator hashes them). (hivemind
        tells a streaming RPC by a ``typing.AsyncIterator`` return hint, not ``collections.abc``'s.)"""
        got = self._update.get() if self._update is not None else None
        if got is None:
            return
        meta, tensors = got
        metadata: bytes | None = self.serializer.dumps(meta)
        for tensor in tensors:
            for part in split_for_streaming(serialize_torch_tensor(tensor)):
                yield averaging_pb2.DownloadData(tensor_part=part, metadata=metadata or b"")
                metadata = None

    def load_update(self, peer: str, timeout: float) -> tuple[dict[str, Any], list[torch.Tensor]] | None:
        """A peer's last round's update (``rpc_download_update``), or None if it served none in time."""
        future = MPFuture()
        self._outer_pipe.send(("_load_update", [], dict(peer=peer, timeout=timeout, future=future)))
        return future.result(timeout=timeout + 5.0)

    async def _load_update(self, peer: str, timeout: float, future: Any) -> None:
        try:
            stub = self.get_stub(self._p2p, PeerID.from_base58(peer), namespace=self.prefix)
            stream = await stub.rpc_download_update(averaging_pb2.DownloadRequest())
            expected = sum(4 * b.numel() for b in self._averaged_tensors)  # fp32, plus framing below
            metadata, tensors = await asyncio.wait_for(
                _receive_tensors(stream, self._chunk_timeout(), max_bytes=1.05 * expected + 65536), timeout)
            future.set_result((self.serializer.loads(metadata), tensors) if metadata else None)
        except Exception as e:  # a peer that serves no update, died or sent garbage
            logger.info("update download from %s failed: %r", peer, e)
        finally:
            if not future.done():
                future.set_result(None)

    def _chunk_timeout(self) -> float:
        return self.next_chunk_timeout if self.next_chunk_timeout is not None else self.request_timeout

    def load_state_from_peers(self, wait: bool = True, timeout: float | None = None, *,
                              accept: Callable[[Any, list[torch.Tensor]], str | None] | None = None) -> Any:
        """hivemind's download, but peer after peer until one serves a state that ``accept``
        (run in the averager process) finds acceptable: it returns None to accept, or why not.
        Without ``accept``, the first state any peer serves (hivemind's behaviour)."""
        future = MPFuture()
        self._outer_pipe.send(("_load_state_from_peers", [], dict(timeout=timeout, future=future, accept=accept)))
        return future.result(timeout=timeout) if wait else future

    async def _load_state_from_peers(self, future: Any, timeout: float | None = None, accept: Any = None) -> None:
        try:
            key_manager = self._matchmaking.group_key_manager
            found, _ = self.dht.get(f"{key_manager.prefix}.all_averagers", latest=True) or ({}, None)
            priority = {PeerID(peer): (float(info.value), random.random()) for peer, info in (found or {}).items()
                        if isinstance(info, ValueWithExpiration) and isinstance(info.value, (float, int))}
            chunk_timeout = self._chunk_timeout()
            for peer in sorted(priority, key=priority.get, reverse=True):
                if peer == self.peer_id:
                    continue
                try:
                    stub = self.get_stub(self._p2p, peer, namespace=self.prefix)
                    stream = await stub.rpc_download_state(averaging_pb2.DownloadRequest())
                    raw, tensors = await _receive_tensors(stream, chunk_timeout)
                    metadata = self.serializer.loads(raw) if raw else None
                except Exception as e:  # a peer that died or sent garbage: try the next one
                    logger.warning("state download from %s failed: %r", peer, e)
                    continue
                why_not = "sent no metadata" if not metadata else (accept(metadata, tensors) if accept is not None else None)
                if why_not is not None:
                    logger.warning("state from %s refused: %s; trying the next peer", peer, why_not)
                    continue
                future.set_result((metadata, tensors))
                return
        finally:
            if not future.done():
                future.set_result(None)

    def get_current_state(self) -> tuple[Any, Sequence[torch.Tensor], None]:
        metadata, tensors = self._state_provider()
        return metadata, tensors, None

    async def _agree_on_failures(self, runner: ExactAverageRunner, group_info: Any, group_id: bytes,
                                 own: set[int]) -> tuple[set[int], str | None]:
        """Post the reducers we saw fail (``own``) and read every other member's (node/agreement.py).
        Returns the union to zero and why the round must be dropped (None: apply it)."""
        members = [peer.to_base58() for peer, mode in zip(group_info.peer_ids, runner.modes) if mode != AveragingMode.AUX]
        reducers = {i for i, n in enumerate(runner.tensor_part_container.num_parts_by_peer) if n > 0}
        me = self.peer_id.to_base58()
        if len(members) <= 1:
            return own, verdict(own, [], reducers)
        await self._post_failed(group_id, own)
        deadline = time.monotonic() + wait_s(runner.sender_timeout)
        while True:
            try:
                found = await self.dht.get(self._agreement_key(group_id), latest=True, return_future=True)
            except Exception as e:
                logger.warning("agreement: reading the group's failed reducers failed: %r", e)
                found = None
            records = {str(sub): v.value for sub, v in found.value.items() if isinstance(v, ValueWithExpiration)} \
                if found is not None and isinstance(found.value, dict) else {}
            failed, missing, malformed = union_of_failed(own, records, members, me, len(group_info.peer_ids))
            if not missing or time.monotonic() >= deadline:
                break
            await asyncio.sleep(AGREEMENT_POLL_S)
        for peer in malformed:
            logger.warning("agreement: peer %s posted a malformed record of failed reducers; ignored", peer)
        if missing:
            logger.warning("agreement: no record from %d member(s) (%s) in time", len(missing), ", ".join(p[-8:] for p in missing))
        elif failed - own:
            logger.info("agreement: zeroing %d share(s) that other members saw fail", len(failed - own))
        return failed, verdict(failed, missing, reducers)

    def _agreement_key(self, group_id: bytes) -> str:
        return f"{self.prefix}.failed_reducers.{group_id.hex()}"

    async def _post_failed(self, group_id: bytes, failed: set[int]) -> None:
        try:
            await self.dht.store(self._agreement_key(group_id), subkey=self.peer_id.to_base58(), value=sorted(failed),
                                 expiration_time=get_dht_time() + AGREEMENT_TTL_S, return_future=True)
        except Exception as e:  # the others then wait for us until their deadline, and drop the round
            logger.warning("agreement: could not post our failed reducers: %r", e)

    async def _run_allreduce_inplace_(self, tensors: Sequence[torch.Tensor], group_info: Any, group_id: bytes | None = None, **kwargs: Any) -> None:
        started = time.monotonic()  # the all-reduce's own timeout runs from about here
        group_id = group_info.group_id if group_id is None else group_id
        runner = ExactAverageRunner(
            counters=self.counters,
            aggregation=self.aggregation,
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
        timeout = None if self._data_timeout_s is None else max(0.0, self._data_timeout_s - (time.monotonic() - started))
        try:
            await asyncio.wait_for(_copy_average(tensors, runner), timeout)
        except BaseException as e:  # our data phase failed: tell the group to drop the round at once
            if not isinstance(e, asyncio.CancelledError):
                await self._post_failed(group_id, set(range(len(group_info.peer_ids))))
            raise AllreduceException(f"our all-reduce failed: {e!r}") if isinstance(e, asyncio.TimeoutError) else e
        failed, drop = await self._agree_on_failures(runner, group_info, group_id, set(runner.failed_reducers))
        if drop is not None:
            raise AllreduceException(f"the group drops this round: {drop}")
        if failed:
            zeroed = zero_failed_shares(runner.share_views, failed)
            logger.warning("%d reducer(s) failed (%d seen here): %d values of this round's average are zero",
                           len(failed), len(runner.failed_reducers), zeroed)
        reducer = runner.tensor_part_reducer
        if isinstance(reducer, RobustPartReducer):
            self._reducer_stats.put({str(runner.sender_peer_ids[i]): s for i, s in enumerate(reducer.stats) if s.parts})
        self.last_updated = get_dht_time()
        self._state_updated.set()
