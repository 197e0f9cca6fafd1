"""Where a node's run manifest comes from: the coordinator, a file, or its own flags."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from node.host.config import ConfigError, NodeConfig
from node.model.gpt import preset
from node.uplink.bootstrap import JoinError, fetch_signed_manifest
from protocol import DataSpec, Hyperparameters, IncompatibleVersion, ProtocolError, RunManifest, check_software_version
from protocol.manifest import ROUND_TOKENS, parse_manifest_file

__all__ = ["load_manifest_file", "manifest_from_flags", "resolve_manifest"]


def load_manifest_file(path: Path) -> RunManifest:
    """A manifest file is TOML (for people) or the canonical msgpack bytes (as served by a coordinator)."""
    data = Path(path).read_bytes()
    try:
        return parse_manifest_file(data, Path(path).name)
    except (ProtocolError, ValueError) as e:
        raise ConfigError(f"--manifest {path}: not a valid run manifest: {e}") from None


def _data_flags(cfg: NodeConfig) -> tuple[DataSpec, int]:
    """--data makes a files run; a prepared folder is pinned by its hash, with its vocabulary (size)."""
    if cfg.data is None:
        return DataSpec(), 256
    from node.data.shards import INDEX
    from node.model.tokenizer import sha256_file

    index_path = Path(cfg.data) / INDEX
    if not index_path.is_file():
        return DataSpec(source="files"), 256
    index = json.loads(index_path.read_text())
    spec = DataSpec(source="files", sha256=sha256_file(index_path), tokenizer_sha256=index.get("tokenizer_sha256", ""))
    return spec, int(index.get("vocab_size", 256))


def manifest_from_flags(cfg: NodeConfig) -> RunManifest:
    changes: dict[str, object] = {"batch_size": cfg.batch_size} if cfg.batch_size else {}
    if cfg.aggregation != "mean":
        changes["aggregation"] = cfg.aggregation
    hp = Hyperparameters.for_codec(cfg.codec, **changes)
    kwargs: dict[str, object] = {"round_tokens": cfg.round_tokens}
    try:
        data, vocab_size = _data_flags(cfg)
        model = preset(cfg.model, vocab_size)
        if cfg.init_checkpoint is not None:
            from node.model.tokenizer import sha256_file

            if not cfg.init_checkpoint.is_file():
                raise ConfigError(f"--init-checkpoint {cfg.init_checkpoint}: no such file")
            kwargs.update(init_sha256=sha256_file(cfg.init_checkpoint), init_source=str(cfg.init_checkpoint.resolve()))
        return RunManifest(run_id=cfg.run_id, model=model, data=data, hparams=hp, codec=cfg.codec,
                           algorithm=cfg.algorithm, **kwargs)
    except (ValueError, OSError) as e:
        raise ConfigError(str(e)) from None


def resolve_manifest(cfg: NodeConfig) -> tuple[RunManifest, str]:
    """The manifest, and the flags another volunteer needs to join the same run.

    Raises :class:`~node.uplink.bootstrap.JoinError` when the coordinator cannot be reached, its manifest
    is not signed by the pinned run key, or the run needs a newer capaswarm than this one.
    """
    if cfg.coordinator:
        manifest, run_key = fetch_signed_manifest(cfg.coordinator, cfg.state_dir, cfg.run_key)
        return manifest, f"--coordinator {shlex.quote(cfg.coordinator)} --run-key {run_key}"
    if cfg.manifest:
        m = load_manifest_file(cfg.manifest)
        try:
            check_software_version(m.min_version)
        except IncompatibleVersion as e:
            raise JoinError(f"--manifest {cfg.manifest}: {e}") from None
        return m, f"--manifest {shlex.quote(str(cfg.manifest))}"
    m = manifest_from_flags(cfg)
    flags = [f"--run-id {shlex.quote(cfg.run_id)}", f"--model {cfg.model}", f"--codec {cfg.codec}",
             f"--algorithm {cfg.algorithm}"]
    if cfg.round_tokens != ROUND_TOKENS:
        flags.append(f"--round-tokens {cfg.round_tokens}")
    if cfg.batch_size:
        flags.append(f"--batch-size {cfg.batch_size}")
    if cfg.aggregation != "mean":
        flags.append(f"--aggregation {cfg.aggregation}")
    if cfg.init_checkpoint is not None:
        flags.append(f"--init-checkpoint {shlex.quote(str(cfg.init_checkpoint))}")
    if cfg.data is not None:
        flags.append(f"--data {shlex.quote(str(cfg.data))}")
    return m, " ".join(flags)
