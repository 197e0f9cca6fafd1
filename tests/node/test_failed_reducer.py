"""A reducer that dies mid-stream: every survivor must zero the same values.

Survivors receive different numbers of the dying reducer's parts before it dies. hivemind's
container zeroes only the parts still missing, so without our rule two survivors would hold
different averages (a netns churn run saw exactly that). This drives hivemind's real
``TensorPartContainer`` the way the all-reduce does and checks our whole-share rule.
"""
from __future__ import annotations

import asyncio

import torch

from hivemind.averaging.partition import TensorPartContainer

from node.averaging.parts import missing_parts, share_views, zero_failed_shares

PART_BYTES = 4 * 1000  # 1,000 fp32 values a part: several parts per peer


def _survivor(parts_before_death: int, *, apply_rule: bool) -> tuple[torch.Tensor, int]:
    tensors = [torch.full((7_300,), 5.0), torch.full((4_100,), 5.0)]
    container = TensorPartContainer(tensors, peer_fractions=(1.0, 1.0, 1.0), part_size_bytes=PART_BYTES, return_deltas=True)
    views = share_views(container)
    assert all(len(v) >= 3 for v in views), "the test needs several parts per peer"
    dead = 1
    for peer in range(3):
        received = parts_before_death if peer == dead else container.num_parts_by_peer[peer]
        for part_index in range(received):
            size = views[peer][part_index].numel()
            container.register_processed_part(peer, part_index, torch.full((size,), 2.0))
    container.register_failed_reducer(dead)

    async def fill() -> None:
        outputs = container.iterate_output_tensors()
        for tensor in tensors:
            tensor.copy_(await outputs.__anext__())

    asyncio.run(fill())
    zeroed = zero_failed_shares(views, {dead}) if apply_rule else 0
    return torch.cat(tensors), zeroed


def test_every_survivor_zeroes_the_whole_share_of_a_dead_reducer():
    early, zeroed_early = _survivor(0, apply_rule=True)
    late, zeroed_late = _survivor(2, apply_rule=True)
    assert torch.equal(early, late), "survivors disagree on the average"
    assert zeroed_early == zeroed_late == int((early == 0).sum())
    share = 11_400 // 3
    assert abs(zeroed_early - share) <= 1000, "the zeroed span is not the dead reducer's share"
    assert set(early.unique().tolist()) == {0.0, 2.0}, "values outside the dead share were touched"
    # the share is one contiguous span of the flattened tensors, between the other two shares
    nonzero = (early != 0).nonzero().flatten()
    zero = (early == 0).nonzero().flatten()
    assert zero.min() > nonzero.min() and zero.max() < nonzero.max()
    assert int(zero.max() - zero.min()) + 1 == zeroed_early


def test_hivemind_alone_would_fork_the_survivors():
    """The reason for the rule: hivemind zeroes only the missing parts."""
    early, _ = _survivor(0, apply_rule=False)
    late, _ = _survivor(2, apply_rule=False)
    assert not torch.equal(early, late)


def test_a_reducer_that_dies_after_its_last_part_has_not_failed():
    """Every part arrived, then the stream broke: members that saw a clean end zero nothing, so the
    share must not count as failed here either."""
    tensors = [torch.ones(5_000)]
    container = TensorPartContainer(tensors, peer_fractions=(1.0, 1.0), part_size_bytes=PART_BYTES, return_deltas=True)
    views = share_views(container)
    assert missing_parts(container, 1) == len(views[1]) >= 2
    for part_index, view in enumerate(views[1]):
        container.register_processed_part(1, part_index, torch.full((view.numel(),), 2.0))
        assert missing_parts(container, 1) == len(views[1]) - part_index - 1
    assert missing_parts(container, 1) == 0
