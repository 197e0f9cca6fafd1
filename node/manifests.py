"""Where a node's run manifest comes from: the coordinator, a file, or its own flags."""
from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

from node.config import ConfigError, NodeConfig
from node.model import preset
from protocol import Hyperparameters, ProtocolError, RunManifest

__all__ = ["load_manifest_file", "manifest_from_flags", "resolve_manifest"]


def load_manifest_file(path: Path) -> RunManifest:
    """A manifest file is TOML (for people) or the canonical msgpack bytes (as served by a coordinator)."""
    data = Path(path).read_bytes()
    try:
        if path.suffix == ".toml":
            return RunManifest.from_wire(tomllib.loads(data.decode()))
        return RunManifest.from_bytes(data)
    except (ProtocolError, tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"--manifest {path}: not a valid run manifest: {e}") from None


def manifest_from_flags(cfg: NodeConfig) -> RunManifest:
    hp = Hyperparameters()
    if cfg.batch_size:
        hp = Hyperparameters(**{**hp.to_wire(), "batch_size": cfg.batch_size})
    kwargs = {"round_tokens": cfg.round_tokens} if cfg.round_tokens else {}
    try:
        return RunManifest(run_id=cfg.run_id, model=preset(cfg.model), hparams=hp, codec=cfg.codec,
                           algorithm=cfg.algorithm, **kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def resolve_manifest(cfg: NodeConfig) -> tuple[RunManifest, str]:
    """The manifest, and the flags another volunteer needs to join the same run."""
    if cfg.coordinator:
        from node.reporter import fetch_manifest

        return fetch_manifest(cfg.coordinator), f"--coordinator {shlex.quote(cfg.coordinator)}"
    if cfg.manifest:
        return load_manifest_file(cfg.manifest), f"--manifest {shlex.quote(str(cfg.manifest))}"
    m = manifest_from_flags(cfg)
    flags = [f"--run-id {shlex.quote(cfg.run_id)}", f"--model {cfg.model}", f"--codec {cfg.codec}", f"--algorithm {cfg.algorithm}"]
    if cfg.round_tokens:
        flags.append(f"--round-tokens {cfg.round_tokens}")
    if cfg.batch_size:
        flags.append(f"--batch-size {cfg.batch_size}")
    return m, " ".join(flags)
