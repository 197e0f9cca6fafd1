"""Config precedence (flags > SWARM_* env > TOML file > defaults), validation, and the frozen CLI surface."""
from __future__ import annotations

import subprocess
import sys

import pytest

from node.cli.main import JOIN_FLAGS, build_parser, join_overrides
from node.host.config import ConfigError, NodeConfig, load_config
from node.uplink.manifests import load_manifest_file, manifest_from_flags


def test_precedence(tmp_path, monkeypatch):
    f = tmp_path / "node.toml"
    f.write_text('public_name = "from-file"\nthreads = 2\nprice_per_hour = 0.5\n')
    assert load_config({}, f).public_name == "from-file"
    monkeypatch.setenv("SWARM_PUBLIC_NAME", "from-env")
    cfg = load_config({}, f)
    assert (cfg.public_name, cfg.threads, cfg.price_per_hour) == ("from-env", 2, 0.5)
    cfg = load_config({"public_name": "from-flag", "threads": None}, f)
    assert (cfg.public_name, cfg.threads) == ("from-flag", 2), "a flag not given must not override"


def test_defaults_and_derived_paths(tmp_path):
    cfg = load_config({"state_dir": tmp_path})
    assert cfg.key_path == tmp_path / "identity.key"
    assert cfg.nat_port_map is False, "no UPnP unless asked for"
    assert NodeConfig().state_dir.is_absolute()


@pytest.mark.parametrize("bad", [{"threads": "many"}, {"device": "tpu"}, {"price_per_hour": -1}, {"no_such_setting": 1}])
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="invalid configuration"):
        load_config(bad)


@pytest.mark.parametrize("bad, says", [({"schedule": "25:00-07:00"}, "schedule"), ({"schedule": "8-9"}, "schedule"),
                                       ({"pause_when_busy": 150}, "pause_when_busy"), ({"pause_when_busy": 0}, "pause_when_busy"),
                                       ({"max_gpu_memory_gb": -2}, "max_gpu_memory_gb"),
                                       ({"metrics_port": 70000}, "metrics_port")])
def test_bad_volunteer_limits_name_the_setting(bad, says):
    with pytest.raises(ConfigError, match=says):
        load_config(bad)


def test_volunteer_limits_from_flags():
    args = build_parser().parse_args(["join", "--schedule", "22:00-07:00", "--pause-when-busy", "80", "--max-gpu-memory-gb", "6",
                                      "--metrics-port", "9464"])
    cfg = load_config(join_overrides(args))
    assert (cfg.schedule, cfg.pause_when_busy, cfg.max_gpu_memory_gb, cfg.metrics_port, cfg.metrics_host) == (
        "22:00-07:00", 80.0, 6.0, 9464, "127.0.0.1")


def test_gpu_memory_cap_is_ignored_on_cpu_with_a_log_line(caplog):
    import logging

    from node.daemon.machine import cap_gpu_memory

    with caplog.at_level(logging.INFO, logger="node.daemon.machine"):
        cap_gpu_memory(load_config({"max_gpu_memory_gb": 4}), "cpu")
    assert "ignored, this node trains on the CPU" in caplog.text


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config({}, tmp_path / "nope.toml")


def test_underscore_spellings_are_accepted():
    p = build_parser()
    a = p.parse_args(["join", "--initial_peers", "/ip4/127.0.0.1/tcp/1/p2p/x", "--identity_path", "k", "--new-swarm"])
    b = p.parse_args(["join", "--initial-peers", "/ip4/127.0.0.1/tcp/1/p2p/x", "--identity-path", "k", "--new_swarm"])
    assert vars(a) == vars(b)


def test_cli_surface_is_frozen():
    """Removing or renaming a flag breaks volunteers' scripts: change this list on purpose only."""
    assert sorted(JOIN_FLAGS) == sorted([
        "aggregation", "algorithm", "announce-maddrs", "bandwidth-mbps", "batch-size", "codec", "coordinator", "data", "device",
        "devices",
        "heartbeat-interval-s", "host-maddrs", "identity-path", "init-checkpoint", "initial-peers", "manifest",
        "matchmaking-time-s",
        "max-rounds", "max-seconds", "model", "nat-port-map", "new-swarm", "plan-poll-s", "price-per-hour", "public-name",
        "round-tokens", "run-id", "run-key", "state-dir", "status-interval-s", "threads",
        "schedule", "pause-when-busy", "max-gpu-memory-gb", "metrics-port", "metrics-host",
        "bootstrap-wait-s", "role", "reachability-wait-s", "check", "check-steps", "memory-required-gb",
        "serve-updates", "spot-check-rate", "micro-batches", "activation-checkpointing",
    ])
    for flag in JOIN_FLAGS:
        assert flag.replace("-", "_") in NodeConfig.model_fields, f"--{flag} has no config field"


def test_join_flags_come_from_the_config_fields():
    """Help is the field's description, choices its Literal, codec/algorithm names protocol's own lists."""
    from protocol.manifest import ALGORITHMS, CODECS

    join = next(a for a in build_parser()._subparsers._group_actions[0].choices.values() if a.prog.endswith("join"))
    actions = {a.dest: a for a in join._actions}
    for flag in JOIN_FLAGS:
        field = NodeConfig.model_fields[flag.replace("-", "_")]
        assert field.description and actions[flag.replace("-", "_")].help.startswith(field.description.replace("%", "%%")), flag
    assert actions["codec"].choices == list(CODECS) and actions["algorithm"].choices == list(ALGORITHMS)
    assert actions["threads"].type is int and actions["new_swarm"].default is None and actions["initial_peers"].nargs == "+"
    assert "--pause-when-busy" in join.format_help(), "a % in a description must not break --help"
    with pytest.raises(ConfigError, match="codec"):
        load_config({"codec": "gzip"})


def test_manifest_from_flags_is_deterministic_and_file_round_trips(tmp_path):
    cfg = NodeConfig(run_id="r1", model="small", codec="int8", round_tokens=12345, batch_size=8)
    m1, m2 = manifest_from_flags(cfg), manifest_from_flags(cfg)
    assert m1.content_hash == m2.content_hash and m1.model.n_embd == 384 and m1.hparams.batch_size == 8
    assert manifest_from_flags(NodeConfig(run_id="r1")).content_hash != m1.content_hash
    (tmp_path / "m.msgpack").write_bytes(m1.to_bytes())
    assert load_manifest_file(tmp_path / "m.msgpack") == m1
    (tmp_path / "bad.msgpack").write_bytes(b"\x93garbage")
    with pytest.raises(ConfigError, match="not a valid run manifest"):
        load_manifest_file(tmp_path / "bad.msgpack")
    with pytest.raises(ConfigError, match="unknown model preset"):
        manifest_from_flags(NodeConfig(model="gpt5"))


def test_a_sparse_codecs_run_gets_its_outer_optimizer_and_other_flags_stay():
    sparse = manifest_from_flags(NodeConfig(run_id="r1", codec="topk2ef", batch_size=8, aggregation="trimmed_mean"))
    assert (sparse.hparams.outer_lr, sparse.hparams.outer_momentum) == (2.0, 0.0)
    assert (sparse.hparams.batch_size, sparse.hparams.aggregation) == (8, "trimmed_mean")
    dense = manifest_from_flags(NodeConfig(run_id="r1", codec="q2ef"))
    assert (dense.hparams.outer_lr, dense.hparams.outer_momentum) == (0.7, 0.9)


def test_join_without_peers_or_new_swarm_exits_with_a_clear_message(tmp_path):
    out = subprocess.run([sys.executable, "-m", "node", "join", "--state-dir", str(tmp_path),
                          "--host-maddrs", "/ip4/127.0.0.1/tcp/0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "--new-swarm" in out.stderr and "--coordinator" in out.stderr and "Traceback" not in out.stderr


def test_documented_example_manifest_loads():
    from pathlib import Path

    from node.model.gpt import preset

    m = load_manifest_file(Path(__file__).resolve().parents[2] / "docs" / "examples" / "run.toml")
    assert m.model == preset("small") and m.codec == "int8" and m.round_tokens == 2_000_000


def test_swarm_delegates_sim_and_bench(capsys):
    from node.cli.main import main

    assert main(["sim", "--list"]) == 0
    assert "loopback4" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["bench", "quality", "--help"])
    assert e.value.code == 0 and "--replicas" in capsys.readouterr().out


def test_swarm_version(capsys):
    import re

    from node.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and re.fullmatch(r"capaswarm \S+ \(protocol \d+\)\n", capsys.readouterr().out)
