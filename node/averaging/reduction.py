"""A reducer's robust reduction: each part is aggregated with ``node.averaging.robust`` once every
sender's copy has arrived, and what it saw of each sender is kept for outlier reports."""
from __future__ import annotations


import asyncio
import logging
from collections.abc import Sequence

import torch
from hivemind.averaging.allreduce import AllreduceException
from hivemind.averaging.partition import BannedException, TensorPartReducer

from node.averaging.robust import MemberStats, aggregate

logger = logging.getLogger(__name__)


class RobustPartReducer(TensorPartReducer):
    """hivemind's reducer, but it keeps every sender's copy of the current part and aggregates them
    with ``node.averaging.robust.aggregate`` once all have arrived (instead of a running weighted sum).
    ``stats[sender_index]`` gathers what ``node.averaging.robust`` saw of each sender."""

    def __init__(self, part_shapes: Sequence[torch.Size], num_senders: int, *, method: str):
        self.method = method
        self.parts: dict[int, tuple[torch.Tensor, float]] = {}
        self.stats = [MemberStats() for _ in range(num_senders)]
        super().__init__(part_shapes, num_senders)

    def reset_accumulators(self) -> None:
        self.parts = {}
        super().reset_accumulators()

    async def accumulate_part(self, sender_index: int, part_index: int, tensor_part: torch.Tensor,
                              weight: float = 1.0) -> torch.Tensor:
        # as TensorPartReducer.accumulate_part, storing the part instead of adding it to a sum
        assert 0 <= sender_index < self.num_senders and 0 <= part_index < self.num_parts
        self.num_parts_received[sender_index] += 1
        while part_index > self.current_part_index:
            await asyncio.wait({self.current_part_future, asyncio.create_task(self.finished.wait())},
                               return_when=asyncio.FIRST_COMPLETED)
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
