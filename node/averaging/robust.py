"""Robust aggregation of one all-reduce part: what a reducer does with every member's copy of it.

In hivemind's butterfly all-reduce each reducer holds every member's part of its own share, so a
reducer can aggregate robustly without forking hivemind (``averaging.RobustPartReducer`` calls
:func:`aggregate` once per part). The reducer computes one result and sends the same bytes to
every member, so robust or not, every member still holds bit-identical averaged pseudo-gradients.

The manifest's ``hparams.aggregation`` picks the rule (hard to undo per run: it is in the manifest
hash, so all members of a run agree on it):

    mean            the token-weighted mean (hivemind's own rule); no defence, no flags
    centered_clip   weights capped at WEIGHT_CAP x their median; each member's part clipped to
                    CLIP x its expected norm (the median part norm times its weight / the median
                    weight, kept within 1/CLIP..CLIP: a faster node honestly moves further); then
                    CenteredClip (Karimireddy et al. 2021, as in BTARD): from the coordinate-wise median, ITERATIONS steps of
                    v += sum w_i (x_i - v) min(1, tau / |x_i - v|) / sum w_i, tau = the median
                    distance to the start
    trimmed_mean    the same weight cap and norm clip, then a coordinate-wise trimmed mean dropping
                    the TRIM share of values (at least one) at each end (unweighted)

What a reducer reports about each member, per all-reduce (``MemberStats``): the largest and
smallest ratio of its part norms to its expected norm, and the share of its norm clipped away. A
member is an *outlier* when a ratio is over CLIP (clipped) or under TINY (a free rider sending
zeros while claiming tokens). With fewer than MIN_GROUP
members nobody is flagged: the median of two cannot tell the liar from the honest one (clipping
still bounds both).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AGGREGATIONS", "CLIP", "MIN_GROUP", "TINY", "MemberStats", "aggregate", "outliers"]

AGGREGATIONS = ("mean", "centered_clip", "trimmed_mean")
CLIP = 2.0  # part norms above CLIP x the median norm are scaled down to it
TINY = 0.1  # part norms below TINY x the median norm mark a member that sends (almost) nothing
WEIGHT_CAP = 2.0  # token weights above WEIGHT_CAP x the median weight are capped there
TRIM = 0.2  # trimmed_mean: share of values dropped at each end of each coordinate
ITERATIONS = 3  # centered_clip
MIN_GROUP = 3  # members needed before anyone is called an outlier


@dataclass
class MemberStats:
    """What one reducer saw of one member over the parts it reduced."""

    parts: int = 0
    max_ratio: float = 1.0  # largest part norm / its expected norm (the median's, scaled by its weight)
    min_ratio: float = 1.0  # smallest
    weight_capped: bool = False
    clipped_share: float = 0.0  # of this member's norm, summed over parts: how much clipping removed
    norm_sum: float = 0.0

    def add(self, ratio: float, norm: float, kept: float, capped: bool) -> None:
        self.max_ratio = ratio if self.parts == 0 else max(self.max_ratio, ratio)
        self.min_ratio = ratio if self.parts == 0 else min(self.min_ratio, ratio)
        self.parts += 1
        self.weight_capped |= capped
        self.norm_sum += norm
        self.clipped_share += norm * (1 - kept)

    @property
    def clipped_fraction(self) -> float:
        return self.clipped_share / self.norm_sum if self.norm_sum > 0 else 0.0

    def outlier(self) -> bool:
        return self.max_ratio > CLIP or self.min_ratio < TINY


def _median(values: torch.Tensor) -> float:
    # the lower median: one of the values, so one huge member can never drag it up by itself
    return float(values.sort().values[(len(values) - 1) // 2])


def aggregate(
    parts: list[torch.Tensor], weights: list[float], method: str
) -> tuple[torch.Tensor, list[tuple[float, float, float, bool]]]:
    """One part from each member -> the aggregate, and per member (norm ratio, norm, kept share, weight capped)."""
    if method not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {method!r}")
    x = torch.stack([p.reshape(-1).float() for p in parts])  # members x values
    w = torch.tensor(weights, dtype=torch.float64)
    if method == "mean":
        avg = (x * (w / w.sum()).to(x.dtype)[:, None]).sum(0)
        return avg.view_as(parts[0]), []
    n = len(parts)
    w_med = _median(w)
    w_cap = WEIGHT_CAP * w_med
    capped = [bool(v > w_cap) for v in w]
    w = w.clamp(max=w_cap)
    # a member that did more (or fewer) tokens than the median honestly moved further (or less): its
    # expected norm is the median's times its relative weight, within [1/CLIP, CLIP]
    expect = (w / w_med).clamp(1 / CLIP, CLIP) if w_med > 0 else torch.ones_like(w)
    norms = x.norm(dim=1).double()
    med = _median(norms)
    if med > 0:
        ratios_t = norms / (med * expect)
        scale = torch.where(ratios_t > CLIP, CLIP / ratios_t, torch.ones_like(ratios_t))
        ratios = ratios_t.tolist()
    else:  # most members sent zeros: nothing to clip against
        scale, ratios = torch.ones_like(norms), [1.0 if v == 0 else float("inf") for v in norms.tolist()]
    x = x * scale.to(x.dtype)[:, None]
    stats = [(ratios[i], float(norms[i]), float(scale[i]), capped[i]) for i in range(n)]
    if method == "trimmed_mean":
        b = max(1, int(TRIM * n))
        if n <= 2 * b:
            avg = (x * (w / w.sum()).to(x.dtype)[:, None]).sum(0)
        else:
            avg = x.sort(dim=0).values[b: n - b].mean(0)
        return avg.view_as(parts[0]), stats
    v = x.median(dim=0).values  # the lower median per coordinate: deterministic, robust start
    wf = (w / w.sum()).to(x.dtype)
    tau = _median((x - v).norm(dim=1).double())
    for _ in range(ITERATIONS):
        diff = x - v
        dist = diff.norm(dim=1)
        c = torch.where(dist > tau, tau / dist.clamp_min(1e-30), torch.ones_like(dist)) if tau > 0 else torch.ones_like(dist)
        v = v + (diff * (wf * c)[:, None]).sum(0)
    return v.view_as(parts[0]), stats


def outliers(stats: dict[str, MemberStats]) -> dict[str, MemberStats]:
    """The members a reducer reports: only once the group is big enough to have a majority."""
    if len(stats) < MIN_GROUP:
        return {}
    return {peer: s for peer, s in stats.items() if s.outlier()}
