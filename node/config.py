"""One typed configuration tree for a node, with units and defaults in one place.

Precedence (highest first): command-line flags > ``SWARM_*`` environment variables > the TOML
file given with ``--config`` > the defaults below. pydantic-settings does the merging and the
validation; the CLI only collects the flags the user actually passed.

Things the whole swarm must agree on (model shape, codec, round size, hyper-parameters) are
not here: they live in the run manifest (``protocol.RunManifest``). The fields marked
"new manifest" only shape the manifest a node builds when it has none to load.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

__all__ = ["ConfigError", "NodeConfig", "load_config"]


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


class NodeConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWARM_", extra="forbid", frozen=True)

    # --- network -------------------------------------------------------------------------
    initial_peers: list[str] = Field(default_factory=list, description="multiaddrs of peers already in the swarm")
    host_maddrs: list[str] = Field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/0"], description="where p2pd listens")
    announce_maddrs: list[str] = Field(default_factory=list, description="addresses others should dial (behind NAT/port-forward)")
    identity_path: Path | None = Field(None, description="Ed25519 key file (libp2p format); default <state_dir>/identity.key")
    nat_port_map: bool = Field(False, description="ask the home router for a port mapping (UPnP/NAT-PMP)")
    new_swarm: bool = Field(False, description="start a new swarm: no initial peers needed")

    # --- run -----------------------------------------------------------------------------
    manifest: Path | None = Field(None, description="run manifest file (TOML or msgpack)")
    run_id: str = Field("capaswarm-demo", description="new manifest: run id")
    model: str = Field("tiny", description="new manifest: model preset (tiny | small | gpt2-124m)")
    codec: str = Field("fp16", description="new manifest: pseudo-gradient codec (none | fp16 | int8 | q4 | q2ef | topkef)")
    algorithm: Literal["diloco", "diloco-overlap", "sync"] = Field(
        "diloco", description="new manifest: diloco; diloco-overlap (all-reduce behind compute); sync = hivemind.Optimizer")
    round_tokens: int | None = Field(None, description="new manifest: swarm-wide tokens per round")
    batch_size: int | None = Field(None, description="new manifest: sequences per inner step")
    coordinator: str | None = Field(None, description="coordinator URL: fetch the manifest there and report contributions")

    # --- this machine --------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(1, description="torch CPU threads (hivemind's helpers need the other cores)")
    data: Path | None = Field(None, description="your own text files or folder; default: the Python stdlib sources")
    state_dir: Path = Field(Path("~/.capaswarm"), description="checkpoints, outbox, identity")
    public_name: str = Field("", description="name on the leaderboard")
    price_per_hour: float = Field(0.0, ge=0, description="declared cost of this node in $/h (0 for a volunteer)")

    # --- averaging -----------------------------------------------------------------------
    matchmaking_time_s: float = Field(3.0, gt=0, description="how long peers gather into a group")
    bandwidth_mbps: float = Field(20.0, gt=0, description="assumed slowest link in Mbit/s; timeouts derive from it")
    chunk_timeout_floor_s: float = Field(2.0, gt=0, description="least wait for the next all-reduce part before banning a peer")
    progress_expiration_s: float = Field(10.0, gt=0, description="a silent peer stops counting after this long")

    # --- lifecycle -----------------------------------------------------------------------
    status_interval_s: float = Field(30.0, gt=0, description="one-line status this often")
    heartbeat_interval_s: float = Field(30.0, gt=0, description="coordinator heartbeat this often")
    eval_batches: int = Field(4, ge=1, description="validation batches per evaluation")
    max_rounds: int | None = Field(None, description="stop after this many rounds (tests, demos)")
    max_seconds: float | None = Field(None, description="stop after this many seconds (tests, demos)")

    @field_validator("state_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @property
    def key_path(self) -> Path:
        return self.identity_path or self.state_dir / "identity.key"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_config(overrides: dict[str, Any] | None = None, config_file: Path | None = None) -> NodeConfig:
    """Build the config from flags (``overrides``), environment, an optional TOML file and defaults."""
    from pydantic import ValidationError

    cls: type[NodeConfig] = NodeConfig
    if config_file is not None:
        if not Path(config_file).is_file():
            raise ConfigError(f"--config {config_file}: no such file")
        cls = type("FileNodeConfig", (NodeConfig,), {"model_config": {**NodeConfig.model_config, "toml_file": str(config_file)}})
    try:
        return cls(**{k: v for k, v in (overrides or {}).items() if v is not None})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None
