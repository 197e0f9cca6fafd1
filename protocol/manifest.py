"""The run manifest: everything two nodes must agree on to train the same model together.

The content hash (sha256 of the canonical MessagePack of the manifest, hex) is the run's
fingerprint. Nodes publish it and refuse to average with a node whose hash differs
(:func:`check_same_run`). Since the hash covers canonical bytes, any field change, including
a hyper-parameter, is a different run. Fields are only appended, with defaults, so old
manifests keep their hash.
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, replace

from .codec import pack, unpack
from .errors import DecodeError, ManifestMismatch
from .schema import WireStruct
from .version import PROTOCOL_VERSION, parse_version

__all__ = ["DataSpec", "Hyperparameters", "ModelSpec", "ROUND_TOKENS", "RunManifest", "check_same_run", "parse_manifest_file"]

CODECS = ("none", "fp16", "int8", "q4", "q2ef", "topkef", "topk2ef")  # node/averaging/codecs.py
# the outer optimizer (lr, momentum) a codec is meant to run with, where it is not Hyperparameters'
# default. topk2ef (SparseLoCo): its decaying error feedback already accumulates like momentum, and
# Nesterov 0.7 / 0.9 on delayed sparse updates learns slowest; plain SGD at lr 2 was the best of
# 1 / 2 / 3 / 4 at H = 125 and second at H = 25 (lr 4 spiked; BENCHMARKS.md, "Quality")
CODEC_OUTER: dict[str, tuple[float, float]] = {"topk2ef": (2.0, 0.0)}
ALGORITHMS = ("diloco", "diloco-overlap", "sync")
AGGREGATIONS = ("mean", "centered_clip", "trimmed_mean")  # node/averaging/robust.py

DATA_SOURCES = ("stdlib", "files")

# the one default for a run's swarm-wide tokens per round (a node's --round-tokens, the coordinator's
# --run-id manifest); local swarms on one CPU (swarm demo, tests) pass a smaller one explicitly
ROUND_TOKENS = 200_000


def _is_sha256(value: str, *, allow_empty: bool) -> bool:
    return (allow_empty and value == "") or (len(value) == 64 and all(c in "0123456789abcdef" for c in value))


@dataclass(frozen=True)
class ModelSpec(WireStruct):
    preset: str = "tiny"  # node.model.gpt.PRESETS names the shapes; the numbers below are what counts
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128  # context length in bytes
    vocab_size: int = 256  # byte-level


@dataclass(frozen=True)
class DataSpec(WireStruct):
    source: str = "stdlib"  # "stdlib": the interpreter's own Lib/*.py; "files": each node's --data (required)
    val_fraction: float = 0.05  # share of files (by hash of path) held out for validation
    # appended after v1 (written only when set, so older manifests keep their hash):
    # the corpus every node must train on: node.data.corpus's content hash of --data (a prepared shard
    # folder's index, or the text files read); "" = not pinned
    sha256: str = field(default="", metadata={"omit_default": True})
    # the vocabulary: sha256 of its tokenizer.json ("" = bytes); shards and exports carry the file
    tokenizer_sha256: str = field(default="", metadata={"omit_default": True})

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {DATA_SOURCES}, not {self.source!r}")
        for name in ("sha256", "tokenizer_sha256"):
            if not _is_sha256(getattr(self, name), allow_empty=True):
                raise ValueError(f"data.{name} must be 64 lowercase hex digits")


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
    # appended (omit-default: manifests that keep "mean" keep their hash): how each reducer of the
    # all-reduce combines the members' parts; "centered_clip" / "trimmed_mean" bound what one
    # hostile member can do and report outliers (node/averaging/robust.py)
    aggregation: str = field(default="mean", metadata={"omit_default": True})

    @classmethod
    def for_codec(cls, codec: str, **changes: object) -> Hyperparameters:
        """The defaults, with the outer optimizer ``codec`` is meant to run with (``CODEC_OUTER``)."""
        if codec in CODEC_OUTER:
            changes = {"outer_lr": CODEC_OUTER[codec][0], "outer_momentum": CODEC_OUTER[codec][1], **changes}
        return cls(**changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunManifest(WireStruct):
    run_id: str
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    round_tokens: int = ROUND_TOKENS  # swarm-wide tokens per round (DiLoCo outer step)
    hparams: Hyperparameters = field(default_factory=Hyperparameters)
    codec: str = "fp16"
    algorithm: str = "diloco"
    seed: int = 0  # initial weights of round 0
    protocol_version: int = PROTOCOL_VERSION
    # appended after v1 (written only when set, so older manifests keep their hash): the oldest
    # capaswarm release that may train this run, e.g. "0.2.0"; "" = any
    min_version: str = field(default="", metadata={"omit_default": True})
    # appended after v1 (written only when set): start from these weights instead of the seed's.
    # init_sha256 is the sha256 of a model.safetensors file in the Hugging Face GPT-2 layout (as
    # ``swarm export`` writes): checkable before a byte of it is parsed. init_source says where to
    # get it: a local path, or an http(s) URL (a coordinator serves it at /api/v1/checkpoint/<sha256>);
    # a node may also be given a local copy (--init-checkpoint). Every node verifies the hash.
    init_sha256: str = field(default="", metadata={"omit_default": True})
    init_source: str = field(default="", metadata={"omit_default": True})

    KIND = "manifest"  # the run key signs the manifest as an envelope of this kind (routes.py)

    def __post_init__(self) -> None:
        if not self.run_id or len(self.run_id) > 64:
            raise ValueError("run_id must be 1..64 characters")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, not {self.codec!r}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, not {self.algorithm!r}")
        if self.hparams.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {self.hparams.aggregation!r}")
        if self.round_tokens <= 0:
            raise ValueError("round_tokens must be positive")
        if self.min_version:
            parse_version(self.min_version)  # ValueError names the bad value
        if not _is_sha256(self.init_sha256, allow_empty=True):
            raise ValueError("init_sha256 must be 64 lowercase hex digits")

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


def parse_manifest_file(data: bytes, name: str) -> RunManifest:
    """A manifest file's bytes: TOML when ``name`` ends in ``.toml`` (for people; the fields at top
    level or under ``[manifest]``), else the canonical msgpack (as a coordinator serves it).

    The one parser of manifest files (node ``--manifest``, coordinator ``--manifest``). Raises
    :class:`DecodeError` for bytes that are not a valid manifest (a field out of range included).
    """
    if not name.lower().endswith(".toml"):
        return RunManifest.from_bytes(data)
    try:
        wire = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DecodeError(f"not valid TOML: {e}") from None
    if set(wire) == {"manifest"} and isinstance(wire["manifest"], dict):
        wire = wire["manifest"]
    return RunManifest.from_wire(wire)


def check_same_run(ours: RunManifest, their_hash: str, peer: str = "peer") -> None:
    """Raise :class:`ManifestMismatch` with a message a volunteer can act on."""
    if their_hash != ours.content_hash:
        raise ManifestMismatch(
            f"{peer} trains run manifest {their_hash[:12]}..., we train {ours.content_hash[:12]}... "
            f"(run {ours.run_id!r}); refusing to average. Join with the same --manifest or --coordinator."
        )
