"""An all-reduce's parts: every peer's share as views, what is missing, zeroing a failed reducer's
share, and the checks a decoded part must pass (shape, the sender's weight)."""
from __future__ import annotations


import logging
import math

import torch
from hivemind.averaging.partition import TensorPartContainer

from node.averaging.codecs import CodecError

logger = logging.getLogger(__name__)


MAX_WEIGHT = 2.0**53  # a sender's weight (its token claim) above this, non-finite or <= 0 bans it


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


def check_part(tensor: torch.Tensor, shape: torch.Size, weight: float | None = None) -> None:
    """A decoded part from a peer must have the expected shape (a 1-value part would broadcast over
    the whole accumulator) and, from a sender, a finite positive weight."""
    if tensor.shape != shape:
        raise CodecError(f"part of shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    if weight is not None and not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
        raise CodecError(f"sender weight {weight!r} out of range")
