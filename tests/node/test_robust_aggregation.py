"""node.averaging.robust and the reducer that uses it: bounded influence, identical bytes, honest flags."""
from __future__ import annotations

import asyncio

import pytest
import torch

from node.averaging.parts import check_part

from node.averaging.reduction import RobustPartReducer
from node.averaging.codecs import CodecError
from node.averaging.robust import CLIP, MemberStats, aggregate, outliers

G = torch.Generator().manual_seed(0)


def _honest(n: int, d: int = 4096) -> list[torch.Tensor]:
    base = torch.randn(d, generator=G)
    return [base + 0.5 * torch.randn(d, generator=G) for _ in range(n)]


def test_mean_is_the_weighted_mean():
    parts = _honest(4)
    w = [1.0, 2.0, 3.0, 4.0]
    avg, stats = aggregate(parts, w, "mean")
    expected = sum(p * wi for p, wi in zip(parts, w)) / sum(w)
    assert torch.allclose(avg, expected, atol=1e-5) and stats == []


@pytest.mark.parametrize("method", ["centered_clip", "trimmed_mean"])
@pytest.mark.parametrize("attack", ["sign_flip_x100", "random_10x", "zeros_huge_weight"])
def test_one_attacker_of_eight_moves_the_result_little(method, attack):
    honest = _honest(7)
    clean = torch.stack(honest).mean(0)
    if attack == "sign_flip_x100":
        bad, w_bad = -100 * honest[0], 1.0
    elif attack == "random_10x":
        r = torch.randn(honest[0].numel(), generator=G)
        bad, w_bad = r / r.norm() * 10 * honest[0].norm(), 1.0
    else:
        bad, w_bad = torch.zeros_like(honest[0]), 1e6  # a free rider claiming a huge token count
    parts, weights = honest + [bad], [1.0] * 7 + [w_bad]
    robust, stats = aggregate(parts, weights, method)
    plain, _ = aggregate(parts, weights, "mean")
    err = float((robust - clean).norm() / clean.norm())
    assert err < 0.35, f"{method} under {attack}: relative error {err:.2f}"
    assert float((plain - clean).norm() / clean.norm()) > 3 * err  # the plain mean is moved far more
    ratio, _norm, kept, capped = stats[7]
    if attack == "zeros_huge_weight":
        assert ratio < 0.1 and capped
    else:
        assert ratio > CLIP and kept < 1


def test_outliers_need_a_group_of_three_and_name_clipped_and_empty_members():
    honest = _honest(4)
    parts = honest + [-100 * honest[0], torch.zeros_like(honest[0])]
    _, seen = aggregate(parts, [1.0] * 6, "centered_clip")
    stats = {f"p{i}": MemberStats() for i in range(6)}
    for i, (ratio, norm, kept, capped) in enumerate(seen):
        stats[f"p{i}"].add(ratio, norm, kept, capped)
    assert sorted(outliers(stats)) == ["p4", "p5"]
    assert outliers({k: stats[k] for k in ("p0", "p4")}) == {}  # two members: who is lying is unknowable


def test_robust_reducer_returns_one_result_to_every_sender():
    """hivemind's reducer interface: every sender awaits the same tensor (the exact-average property)."""
    parts = _honest(3, d=1000) + [torch.full((1000,), 50.0)]

    async def run():
        reducer = RobustPartReducer([torch.Size([1000]), torch.Size([10])], 4, method="centered_clip")
        first = await asyncio.gather(*(reducer.accumulate_part(i, 0, parts[i], weight=1.0) for i in range(4)))
        second = await asyncio.gather(*(reducer.accumulate_part(i, 1, torch.ones(10) * i, weight=1.0) for i in range(4)))
        return reducer, first, second

    reducer, first, second = asyncio.run(run())
    assert all(r is first[0] for r in first) and all(r is second[0] for r in second)
    expected, _ = aggregate(parts, [1.0] * 4, "centered_clip")
    assert torch.equal(first[0], expected)
    assert reducer.stats[3].max_ratio > CLIP and reducer.stats[3].parts == 2
    assert reducer.finished.is_set()


def test_parts_of_the_wrong_shape_or_weight_are_refused():
    check_part(torch.zeros(10), torch.Size([10]), 5.0)
    with pytest.raises(CodecError):
        check_part(torch.zeros(1), torch.Size([10]))  # would broadcast over the whole accumulator
    for w in (float("nan"), float("inf"), 0.0, -1.0, 2.0**60):
        with pytest.raises(CodecError):
            check_part(torch.zeros(10), torch.Size([10]), w)


def test_a_faster_honest_member_is_not_an_outlier():
    """Pseudo-gradient norms grow with the tokens a member processed: twice the median's tokens may
    move twice as far (and a slow node less far) without being clipped or reported."""
    honest = _honest(5)
    parts = honest[:3] + [2.2 * honest[3], 0.15 * honest[4]]
    _, seen = aggregate(parts, [1.0, 1.0, 1.0, 2.0, 0.15], "centered_clip")
    stats = {f"p{i}": MemberStats() for i in range(5)}
    for i, (ratio, norm, kept, capped) in enumerate(seen):
        stats[f"p{i}"].add(ratio, norm, kept, capped)
    assert outliers(stats) == {}
