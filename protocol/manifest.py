"""The run manifest: everything two nodes must agree on to train the same model together.

The content hash (sha256 of the canonical MessagePack of the manifest, hex) is the run's
fingerprint. Nodes publish it and refuse to average with a node whose hash differs
(:func:`check_same_run`). Since the hash covers canonical bytes, any field change, including
a hyper-parameter, is a different run. Fields are only appended, with defaults, so old
manifests keep their hash.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from .codec import pack, unpack
from .errors import ManifestMismatch
from .schema import WireStruct
from .version import PROTOCOL_VERSION

__all__ = ["DataSpec", "Hyperparameters", "ModelSpec", "RunManifest", "check_same_run"]

CODECS = ("none", "fp16", "int8", "q4", "q2ef", "topkef")  # node/codecs.py
ALGORITHMS = ("diloco", "diloco-overlap", "sync")


@dataclass(frozen=True)
class ModelSpec(WireStruct):
    preset: str = "tiny"  # node.model.PRESETS names the shapes; the numbers below are what counts
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128  # context length in bytes
    vocab_size: int = 256  # byte-level


@dataclass(frozen=True)
class DataSpec(WireStruct):
    source: str = "stdlib"  # "stdlib": the interpreter's own Lib/*.py; "files": each node's --data
    val_fraction: float = 0.05  # share of files (by hash of path) held out for validation


@dataclass(frozen=True)
class Hyperparameters(WireStruct):
    batch_size: int = 16  # sequences per inner step
    inner_lr: float = 1e-3  # AdamW
    weight_decay: float = 0.1
    warmup_steps: int = 20
    grad_clip: float = 1.0
    outer_lr: float = 0.7  # Nesterov SGD on pseudo-gradients (DiLoCo)
    outer_momentum: float = 0.9
    target_batch: int = 256  # sync algorithm only: samples per global step


@dataclass(frozen=True)
class RunManifest(WireStruct):
    run_id: str
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    round_tokens: int = 200_000  # swarm-wide tokens per round (DiLoCo outer step)
    hparams: Hyperparameters = field(default_factory=Hyperparameters)
    codec: str = "fp16"
    algorithm: str = "diloco"
    seed: int = 0  # initial weights of round 0
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if not self.run_id or len(self.run_id) > 64:
            raise ValueError("run_id must be 1..64 characters")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, not {self.codec!r}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, not {self.algorithm!r}")
        if self.round_tokens <= 0:
            raise ValueError("round_tokens must be positive")

    def to_bytes(self) -> bytes:
        return pack(self.to_wire())

    @classmethod
    def from_bytes(cls, data: bytes) -> RunManifest:
        return cls.from_wire(unpack(data))

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def with_changes(self, **changes: object) -> RunManifest:
        return replace(self, **changes)  # type: ignore[arg-type]


def check_same_run(ours: RunManifest, their_hash: str, peer: str = "peer") -> None:
    """Raise :class:`ManifestMismatch` with a message a volunteer can act on."""
    if their_hash != ours.content_hash:
        raise ManifestMismatch(
            f"{peer} trains run manifest {their_hash[:12]}..., we train {ours.content_hash[:12]}... "
            f"(run {ours.run_id!r}); refusing to average. Join with the same --manifest or --coordinator."
        )
