"""The swarm's global state (parameters, outer momentum, round), its hash, and checkpoints.

The *global* state is what every node must agree on after an outer step; its sha256 (over the
round number, then each tensor's shape and raw fp32 bytes: the parameters, then the outer
momentum) is how nodes compare it, what they announce in the DHT, how a joiner checks a download,
and what tests compare across nodes. (The momentum is covered since a forged momentum would
steer every later outer step; shapes so that the same bytes cut differently never match.)

Checkpoints are written after every round, atomically (write to a temporary file, fsync,
rename), so a crash leaves either the previous or the new checkpoint, never half of one. What a
node's ``checkpoint.pt`` holds is :class:`NodeCheckpoint` (a plain dict on disk; keys only grow).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ops.atomic import atomic_file, write_atomic

__all__ = [
    "CHECKPOINT_COUNTERS", "GlobalState", "NodeCheckpoint", "StateCheck", "StateDirInUse", "StateError", "claim_state_dir",
    "load_checkpoint", "save_checkpoint", "state_hash",
]

RUN_FILE = "run.json"  # which run a state dir's checkpoint belongs to


class StateDirInUse(ValueError):
    """The state dir holds another run's checkpoint; the message says which and what to do."""


def claim_state_dir(state_dir: Path, run_id: str, manifest_hash: str) -> None:
    """Refuse a state dir whose checkpoint is another run's (before anything starts); else record ours.

    Cheap on purpose: it reads a small JSON file, not the checkpoint, so the refusal comes before
    the DHT and the model are built. (The trainer still checks the checkpoint itself on resume.)
    """
    record = state_dir / RUN_FILE
    try:
        theirs = json.loads(record.read_text())
    except (FileNotFoundError, ValueError):
        theirs = None
    if isinstance(theirs, dict) and theirs.get("manifest_hash") != manifest_hash and (state_dir / "checkpoint.pt").exists():
        raise StateDirInUse(
            f"state dir {state_dir} holds a checkpoint of run {theirs.get('run_id')!r} (manifest "
            f"{str(theirs.get('manifest_hash'))[:12]}...), not of this run {run_id!r} ({manifest_hash[:12]}...): "
            f"use another --state-dir, or remove {state_dir / 'checkpoint.pt'} to start over")
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(record, json.dumps({"run_id": run_id, "manifest_hash": manifest_hash}), durable=True)


class StateError(ValueError):
    """A downloaded state that is not a state of this run's model (count, shape, dtype, non-finite)."""


def state_hash(round_: int, tensors: list[torch.Tensor]) -> str:
    """sha256 over the round, then every tensor's shape and fp32 bytes, in order."""
    h = hashlib.sha256(b"capaswarm/state/v2\x00" + round_.to_bytes(8, "big"))
    for t in tensors:
        h.update(len(t.shape).to_bytes(1, "big") + b"".join(d.to_bytes(8, "big") for d in t.shape))
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
        self.hash = state_hash(self.round, self.params + self.momentum)

    def to_wire(self, manifest_hash: str) -> tuple[dict[str, Any], list[torch.Tensor]]:
        meta = {"round": self.round, "state_hash": self.hash, "manifest_hash": manifest_hash, "n_params": len(self.params)}
        return meta, self.params + self.momentum

    @classmethod
    def from_wire(cls, meta: Any, tensors: list[Any], shapes: list[torch.Size]) -> GlobalState:
        """A downloaded state, checked against this run's parameter ``shapes``; raises :class:`StateError`."""
        if not isinstance(meta, dict):
            raise StateError("state metadata is not a map")
        round_ = meta.get("round")
        if isinstance(round_, bool) or not isinstance(round_, int) or not 0 <= round_ < 2**53:
            raise StateError(f"state round {str(round_)[:20]!r} is not a round number")
        n = len(shapes)
        if len(tensors) != 2 * n:
            raise StateError(f"state has {len(tensors)} tensors, expected {2 * n}")
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point or t.shape != shapes[i % n]:
                raise StateError(f"state tensor {i} is {getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}, "
                                 f"expected float {tuple(shapes[i % n])}")
            if not bool(torch.isfinite(t).all()):
                raise StateError(f"state tensor {i} holds non-finite values")
        return cls(round_, [t.float() for t in tensors[:n]], [t.float() for t in tensors[n:]])


@dataclass(frozen=True)
class StateCheck:
    """Whether a downloaded ``(metadata, tensors)`` is a state to adopt: ``None`` if so, else why not.

    Picklable (it travels to the averager process, which tries peer after peer until one passes).
    With ``expected_hash`` (the majority's announcement) the state must hash to exactly that;
    without it, only to the hash its own server claims (a consistency check, no trust)."""

    manifest_hash: str
    shapes: tuple[tuple[int, ...], ...]
    expected_hash: str | None = None
    min_round: int = 0

    def __call__(self, meta: Any, tensors: list[Any]) -> str | None:
        if not isinstance(meta, dict) or meta.get("manifest_hash") != self.manifest_hash:
            return "state of another run manifest"
        try:
            state = GlobalState.from_wire(meta, list(tensors), [torch.Size(s) for s in self.shapes])
        except StateError as e:
            return str(e)
        claimed = self.expected_hash or meta.get("state_hash")
        if state.hash != claimed:
            who = "the majority's announced" if self.expected_hash else "its own"
            return f"state hash {state.hash[:12]} is not {who} {str(claimed)[:12]}"
        if state.round < self.min_round:
            return f"state of round {state.round}, older than ours ({self.min_round})"
        return None


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, durable=True) as f:
        torch.save(payload, f)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


# a trainer's running totals (``node.train.stats.TrainerStats``) that a checkpoint keeps, in this order
CHECKPOINT_COUNTERS = ("inner_steps", "tokens_total", "tokens_contributed", "rounds_done", "bytes_sent", "bytes_received",
                       "initial_val_bpb", "last_val_bpb", "val_history")


@dataclass
class NodeCheckpoint:
    """A node's ``checkpoint.pt``: the global state, and what its next round needs to continue exactly.

    On disk a dict (``torch.save``): ``manifest_hash``, ``manifest`` (its bytes), ``round``, ``params``,
    ``momentum``, ``inner_opt`` (AdamW's state dict), ``sampler_rng``, the counters, ``ef_residuals``.
    ``node.model.export`` reads ``params``, ``round`` and ``manifest`` of the same dict."""

    manifest_hash: str
    manifest: bytes
    state: GlobalState
    inner_opt: dict[str, Any]
    sampler_rng: torch.Tensor
    counters: dict[str, Any]  # of CHECKPOINT_COUNTERS; an older checkpoint may lack some
    ef_residuals: Any = None  # error feedback's residuals (None: the codec keeps none)

    def save(self, path: Path) -> None:
        save_checkpoint(path, {
            "manifest_hash": self.manifest_hash, "manifest": self.manifest, "round": self.state.round,
            "params": self.state.params, "momentum": self.state.momentum, "inner_opt": self.inner_opt,
            "sampler_rng": self.sampler_rng, **{k: self.counters[k] for k in CHECKPOINT_COUNTERS},
            "ef_residuals": self.ef_residuals,
        })

    @classmethod
    def load(cls, path: Path) -> NodeCheckpoint | None:
        ckpt = load_checkpoint(path)
        if ckpt is None:
            return None
        return cls(ckpt["manifest_hash"], ckpt.get("manifest", b""), GlobalState(ckpt["round"], ckpt["params"], ckpt["momentum"]),
                   ckpt["inner_opt"], ckpt["sampler_rng"], {k: ckpt[k] for k in CHECKPOINT_COUNTERS if k in ckpt},
                   ckpt.get("ef_residuals"))
