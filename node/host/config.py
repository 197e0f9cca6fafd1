"""One typed configuration tree for a node, with units and defaults in one place.

Precedence (highest first): command-line flags > ``SWARM_*`` environment variables > the TOML
file given with ``--config`` > the defaults below. pydantic-settings does the merging and the
validation; the CLI only collects the flags the user actually passed.

``swarm join``'s flags are generated from these fields (node/cli/main.py): ``--field-name`` (and
``--field_name``), the help from the description, the type and choices from the annotation.
``json_schema_extra`` holds what argparse needs besides: ``metavar``, or ``flag: False`` for a
setting that only the environment or the TOML file sets.

Things the whole swarm must agree on (model shape, codec, round size, hyper-parameters) are
not here: they live in the run manifest (``protocol.RunManifest``). The fields marked
"new manifest" only shape the manifest a node builds when it has none to load.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from protocol.manifest import AGGREGATIONS, ALGORITHMS, CODECS, ROUND_TOKENS

__all__ = ["ConfigError", "NodeConfig", "load_config"]


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


MADDR: dict[str, Any] = {"metavar": "MADDR"}
NO_FLAG: dict[str, Any] = {"flag": False}  # set through SWARM_* or the TOML file only


class NodeConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWARM_", extra="forbid", frozen=True)

    # --- network -------------------------------------------------------------------------
    initial_peers: list[str] = Field(default_factory=list, description="multiaddrs of peers already in the swarm",
        json_schema_extra=MADDR)
    host_maddrs: list[str] = Field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/0"], description="where p2pd listens",
        json_schema_extra=MADDR)
    announce_maddrs: list[str] = Field(default_factory=list, description="addresses others should dial (behind NAT/port-forward)",
                                       json_schema_extra=MADDR)
    identity_path: Path | None = Field(None, description="Ed25519 key file (libp2p format); default <state_dir>/identity.key")
    nat_port_map: bool = Field(False, description="ask the home router for a port mapping (UPnP/NAT-PMP)")
    new_swarm: bool = Field(False, description="start a new swarm: no initial peers needed")
    bootstrap_wait_s: float = Field(120.0, ge=0, description="with --coordinator and no peers yet: wait this long for one")
    role: Literal["auto", "reducer", "client", "validator"] = Field(
        "auto", description="auto: reducer if the coordinator could dial us back, else client (sends, reduces nothing); "
        "validator: train nothing, spot-check others' updates (the coordinator must list this peer: --validator)")
    reachability_wait_s: float = Field(30.0, ge=0, description="how long to wait for the coordinator's dial-back verdict")

    # --- swarm join --check (node/cli/preflight.py) ---------------------------------------------
    check: bool = Field(False, description="run the preflight check and exit (0 ready, 1 not)")
    check_steps: int = Field(5, ge=1, description="training steps the check times")
    memory_required_gb: float | None = Field(None, gt=0, description="memory the run needs; default: estimated from the model")

    # --- run -----------------------------------------------------------------------------
    manifest: Path | None = Field(None, description="run manifest file (TOML or msgpack)")
    run_id: str = Field("capaswarm-demo", description="new manifest: run id")
    model: str = Field("tiny",
        description="new manifest: model preset (tiny | small | gpt2-small-bytes | gpt2-124m (needs --vocab bpe:50257 data))")
    codec: Literal[CODECS] = Field("fp16", description="new manifest: pseudo-gradient codec")  # type: ignore[valid-type]
    algorithm: Literal[ALGORITHMS] = Field(  # type: ignore[valid-type]
        "diloco", description="new manifest: diloco; diloco-overlap (all-reduce behind compute); sync = hivemind.Optimizer")
    aggregation: Literal[AGGREGATIONS] = Field(  # type: ignore[valid-type]
        "mean", description="new manifest: how reducers combine members' parts (robust: centered_clip, trimmed_mean)")
    round_tokens: int = Field(ROUND_TOKENS, gt=0, description="new manifest: swarm-wide tokens per round")
    batch_size: int | None = Field(None, description="new manifest: sequences per inner step")
    coordinator: str | None = Field(None, description="coordinator URL: fetch the manifest there and report contributions")
    run_key: str | None = Field(None,
        description="the run key's fingerprint from the join line: only a manifest it signed is accepted",
                                json_schema_extra={"metavar": "FINGERPRINT"})
    plan_poll_s: float = Field(10.0, gt=0, description="fetch the coordinator's cost plan this often")
    init_checkpoint: Path | None = Field(
        None, description="a model.safetensors to start from: a new manifest names it by sha256; "
                          "with a joined run, a local copy of the manifest's initial checkpoint (verified)")

    # --- this machine --------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to train (auto: a GPU when there is one)")
    devices: str = Field("", description="local devices trained data-parallel as one peer, e.g. 0,1 "
                                         "(default: every visible GPU; on a CPU, 0,1 means two ranks)",
                         json_schema_extra={"metavar": "IDS"})
    threads: int = Field(1, description="torch CPU threads (hivemind's helpers need the other cores)")
    # memory, not math: the same batch and the same update, in less memory (docs/models.md)
    micro_batches: int = Field(1, ge=1, le=1024, description="split each inner step's batch into this many micro-batches "
                                                           "(gradient accumulation; the batch size must divide by it)")
    activation_checkpointing: bool = Field(False, description="recompute each block's activations in the backward pass "
                                                              "(less memory, about a third more compute)")
    data: Path | None = Field(None,
        description="text files or folder (UTF-8; .gz/.xz/.zst read), or a `swarm data prepare` folder; "
                                                "default: the Python stdlib sources (a data.source='files' run requires it)")
    state_dir: Path = Field(Path("~/.capaswarm"), description="checkpoints, outbox, identity")
    public_name: str = Field("", description="name on the leaderboard")
    price_per_hour: float = Field(0.0, ge=0, description="declared cost of this node in $/h (0 for a volunteer)")

    # --- volunteer limits (node/host/gate.py; docs/volunteers.md) -------------------------------
    schedule: str | None = Field(None, description="train only inside these local hours, e.g. 22:00-07:00 (may span midnight)",
                                 json_schema_extra={"metavar": "HH:MM-HH:MM"})
    pause_when_busy: float | None = Field(
        None, gt=0, le=100,
        description="pause while other processes use this % of all CPU cores (or another process uses the GPU)",
        json_schema_extra={"metavar": "CPU%"})
    max_gpu_memory_gb: float | None = Field(None, gt=0, description="cap this node's GPU memory (GiB); ignored on CPU",
                                             json_schema_extra={"metavar": "GB"})

    # --- operations ----------------------------------------------------------------------
    metrics_port: int | None = Field(None, ge=0, le=65535,
                                     description="serve Prometheus /metrics on this port (0: any free port)",
                                     json_schema_extra={"metavar": "PORT"})
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds (loopback by default)",
                              json_schema_extra={"metavar": "ADDR"})

    # --- averaging -----------------------------------------------------------------------
    matchmaking_time_s: float = Field(3.0, gt=0, description="how long peers gather into a group")
    bandwidth_mbps: float = Field(20.0, gt=0, description="assumed slowest link in Mbit/s; timeouts derive from it")
    chunk_timeout_floor_s: float = Field(2.0, gt=0, description="least wait for the next all-reduce part before banning a peer",
                                         json_schema_extra=NO_FLAG)
    progress_expiration_s: float = Field(10.0, gt=0, description="a silent peer stops counting after this long",
                                         json_schema_extra=NO_FLAG)
    serve_updates: bool = Field(True, description="keep our last round's update for validators' spot checks "
                                                  "(one more copy of the model in memory)")

    # --- validator (--role validator; node/trust/validating.py) -----------------------------------
    spot_check_rate: float = Field(1.0, ge=0, le=1, description="validator: share of (peer, round) claims checked")
    validator_poll_s: float = Field(2.0, gt=0, description="validator: look for new states and updates this often",
                                    json_schema_extra=NO_FLAG)

    # --- lifecycle -----------------------------------------------------------------------
    status_interval_s: float = Field(30.0, gt=0, description="one-line status this often")
    heartbeat_interval_s: float = Field(30.0, gt=0, description="coordinator heartbeat this often")
    eval_batches: int = Field(4, ge=1, description="validation batches per evaluation", json_schema_extra=NO_FLAG)
    eval_windows: int = Field(16, ge=1, le=1024, description="validation windows (of the model's context) per batch; "
                              "fewer make each round's evaluation cheaper on a CPU node", json_schema_extra=NO_FLAG)
    max_rounds: int | None = Field(None, description="stop after this many rounds (tests, demos)")
    max_seconds: float | None = Field(None, description="stop after this many seconds (tests, demos)")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is not None:
            from node.policies.gate import parse_schedule

            parse_schedule(v)  # ValueError -> a validation error naming the setting
        return v

    @field_validator("state_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @property
    def key_path(self) -> Path:
        return self.identity_path or self.state_dir / "identity.key"

    @property
    def bandwidth(self) -> float:
        """``bandwidth_mbps`` in bytes/s: what the timeouts derive from."""
        return self.bandwidth_mbps * 1e6 / 8

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
