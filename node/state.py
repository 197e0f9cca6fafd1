"""The swarm's global state (parameters, outer momentum, round), its hash, and checkpoints.

The *global* state is what every node must agree on after an outer step; its sha256 over
the raw fp32 bytes (in parameter order, plus the round number) is how nodes compare it, how a
joiner checks a download, and what tests compare across nodes.

Checkpoints are written after every round, atomically (write to a temporary file, fsync,
rename), so a crash leaves either the previous or the new checkpoint, never half of one.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["GlobalState", "load_checkpoint", "save_checkpoint", "state_hash"]


def state_hash(round_: int, tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256(round_.to_bytes(8, "big"))
    for t in tensors:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class GlobalState:
    """What joiners download: the latest *completed* round's global parameters and momentum."""

    round: int
    params: list[torch.Tensor]  # fp32, CPU
    momentum: list[torch.Tensor]  # outer Nesterov buffers, fp32, CPU (zeros before the first step)
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.hash = state_hash(self.round, self.params)

    def to_wire(self, manifest_hash: str) -> tuple[dict[str, Any], list[torch.Tensor]]:
        meta = {"round": self.round, "state_hash": self.hash, "manifest_hash": manifest_hash, "n_params": len(self.params)}
        return meta, self.params + self.momentum

    @classmethod
    def from_wire(cls, meta: dict[str, Any], tensors: list[torch.Tensor]) -> GlobalState:
        n = int(meta["n_params"])
        if len(tensors) != 2 * n:
            raise ValueError(f"state has {len(tensors)} tensors, expected {2 * n}")
        return cls(int(meta["round"]), [t.float() for t in tensors[:n]], [t.float() for t in tensors[n:]])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
