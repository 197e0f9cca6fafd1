"""PseudoGradientAverager: hivemind's DecentralizedAverager with our runner (``runner.py``), the
agreement on failed reducers over the DHT, and what a node serves (its state to joiners, its update
to validators).

Only this package and ``node/net/swarm.py`` touch hivemind's averaging internals.
"""
from __future__ import annotations


import asyncio
import logging
import multiprocessing as mp
import queue
import random
import time
import typing
from collections.abc import Callable, Sequence
from typing import Any

import torch
from hivemind.averaging import DecentralizedAverager
from hivemind.averaging.allreduce import AllreduceException, AveragingMode
from hivemind.compression import serialize_torch_tensor
from hivemind.proto import averaging_pb2
from hivemind.p2p import P2PContext, PeerID
from hivemind.utils import MPFuture, ValueWithExpiration, get_dht_time
from hivemind.utils.streaming import split_for_streaming
from hivemind.utils.asyncio import as_aiter, azip

from node.host import faults
from node.policies.agreement import Settlement, parse_failed, settle, wait_s
from node.policies.timeouts import first_part_timeout
from node.averaging.records import agreement_subkey, poster_of
from node.averaging.robust import MemberStats
from node.averaging.counters import ByteCounters
from node.averaging.parts import zero_failed_shares
from node.averaging.reduction import RobustPartReducer
from node.averaging.runner import ExactAverageRunner
from node.averaging.served import SharedUpdate, receive_tensors

logger = logging.getLogger(__name__)

AGREEMENT_TTL_S = 120.0  # the group's records of failed reducers outlive any round's agreement wait
AGREEMENT_POLL_S = 0.1  # re-read of the group's records while waiting for every member's


async def _copy_average(tensors: Sequence[torch.Tensor], runner: Any) -> None:
    async for tensor, averaged in azip(as_aiter(*tensors), runner):
        tensor.copy_(averaged)  # the average itself, bit-identical on every member


def _phase_timeouts(allreduce_s: float | None, chunk_s: float | None) -> tuple[float | None, float | None]:
    """(our data phase's timeout, hivemind's all-reduce timeout): the latter adds the agreement's
    wait for the others' records, and a second for its own DHT calls."""
    if allreduce_s is None:
        return None, None
    return allreduce_s, allreduce_s + wait_s(chunk_s) + 1.0


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
        # members that claimed reducer failures no other member saw: (group size, [peer id]) per all-reduce
        self._dissent: Any = mp.get_context("fork").Queue()
        # hivemind's all-reduce timeout covers our data phase *and* the agreement after it (node/policies/agreement.py)
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

    def drain_dissent(self) -> list[tuple[int, list[str]]]:
        """Every ``(members, [dissenting peer id])`` our agreement produced since the last call."""
        out = []
        while True:
            try:
                out.append(self._dissent.get_nowait())
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
            chunk_s = self._chunk_timeout()
            metadata, tensors = await asyncio.wait_for(
                receive_tensors(stream, chunk_s, max_bytes=1.05 * expected + 65536,
                                first_timeout=first_part_timeout(expected, chunk_s)), timeout)
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
            state_bytes = 2 * sum(4 * b.numel() for b in self._averaged_tensors)  # fp32 parameters and momentum
            for peer in sorted(priority, key=priority.get, reverse=True):
                if peer == self.peer_id:
                    continue
                try:
                    stub = self.get_stub(self._p2p, peer, namespace=self.prefix)
                    stream = await stub.rpc_download_state(averaging_pb2.DownloadRequest())
                    raw, tensors = await receive_tensors(stream, chunk_timeout,
                                                         first_timeout=first_part_timeout(state_bytes, chunk_timeout))
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
                                 own: set[int]) -> Settlement:
        """Post the reducers we saw fail (``own``, signed: ``records.py``) and read the others' until
        nothing they could still post would change our decision, or our deadline (``agreement.settle``)."""
        members = [peer.to_base58() for peer, mode in zip(group_info.peer_ids, runner.modes) if mode != AveragingMode.AUX]
        reducers = {i for i, n in enumerate(runner.tensor_part_container.num_parts_by_peer) if n > 0}
        me = self.peer_id.to_base58()
        if len(members) <= 1:
            return settle(own, {}, [me], me, reducers, final=True)
        wait = wait_s(runner.sender_timeout)
        await self._post_own_record(group_id, own, len(group_info.peer_ids), wait)
        deadline = time.monotonic() + wait
        malformed: set[str] = set()
        while True:
            records = await self._read_records(group_id, len(group_info.peer_ids), malformed)
            settled = settle(own, records, members, me, reducers, final=time.monotonic() >= deadline)
            if settled is not None:
                break
            await asyncio.sleep(AGREEMENT_POLL_S)
        for peer in malformed:
            logger.warning("agreement: peer %s posted a malformed record of failed reducers; ignored", peer[-8:])
        if settled.unheard:
            logger.info("agreement: decided without a record from %d member(s) (%s)", len(settled.unheard),
                        ", ".join(p[-8:] for p in settled.unheard))
        if settled.dissenters:
            logger.warning("agreement: %s claimed reducer failures no other member saw",
                           ", ".join(p[-8:] for p in settled.dissenters))
            self._dissent.put((len(members), list(settled.dissenters)))
        if settled.drop is None and settled.failed - own:
            logger.info("agreement: zeroing %d share(s) that a majority of the group saw fail", len(settled.failed - own))
        return settled

    def _agreement_key(self, group_id: bytes) -> str:
        return f"{self.prefix}.failed_reducers.{group_id.hex()}"

    async def _read_records(self, group_id: bytes, group_size: int, malformed: set[str]) -> dict[str, frozenset[int]]:
        """The well-formed records of our group (their signatures were checked by our DHT's validator)."""
        try:
            found = await self.dht.get(self._agreement_key(group_id), latest=True, return_future=True)
        except Exception as e:
            logger.warning("agreement: reading the group's failed reducers failed: %r", e)
            return {}
        if found is None or not isinstance(found.value, dict):
            return {}
        records = {}
        for sub, v in found.value.items():
            poster = poster_of(sub)
            if poster is None or not isinstance(v, ValueWithExpiration):
                continue
            parsed = parse_failed(v.value, group_size)
            if parsed is None:
                malformed.add(poster)
            else:
                records[poster] = parsed
        return records

    async def _post_own_record(self, group_id: bytes, own: set[int], group_size: int, wait: float) -> None:
        fault = faults.agreement_fault()  # test seam: a member that lies, withholds or stalls; None here
        if fault == "withhold":
            return
        if fault == "stall":
            await asyncio.sleep(wait + 1.0)
        await self._post_failed(group_id, set(range(group_size)) if fault == "lie" else own)

    async def _post_failed(self, group_id: bytes, failed: set[int]) -> None:
        try:
            await self.dht.store(self._agreement_key(group_id), subkey=agreement_subkey(self.peer_id.to_base58()),
                                 value=sorted(failed), expiration_time=get_dht_time() + AGREEMENT_TTL_S, return_future=True)
        except Exception as e:  # the others then decide without us
            logger.warning("agreement: could not post our failed reducers: %r", e)

    async def _run_allreduce_inplace_(self, tensors: Sequence[torch.Tensor], group_info: Any,
                                      group_id: bytes | None = None, **kwargs: Any) -> None:
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
        except BaseException as e:  # our data phase failed: we drop the round; the others need not wait for us
            if not isinstance(e, asyncio.CancelledError):
                await self._post_failed(group_id, set(range(len(group_info.peer_ids))))
            raise AllreduceException(f"our all-reduce failed: {e!r}") if isinstance(e, asyncio.TimeoutError) else e
        settled = await self._agree_on_failures(runner, group_info, group_id, set(runner.failed_reducers))
        if settled.drop is not None:
            raise AllreduceException(f"we drop this round: {settled.drop}")
        if failed := settled.failed:
            zeroed = zero_failed_shares(runner.share_views, failed)
            logger.warning("%d reducer(s) failed (%d seen here): %d values of this round's average are zero",
                           len(failed), len(runner.failed_reducers), zeroed)
        reducer = runner.tensor_part_reducer
        if isinstance(reducer, RobustPartReducer):
            self._reducer_stats.put({str(runner.sender_peer_ids[i]): s for i, s in enumerate(reducer.stats) if s.parts})
        self.last_updated = get_dht_time()
        self._state_updated.set()
