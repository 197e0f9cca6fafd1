"""coordinator.cli: the parser surface, manifest and price-table files, and exit codes."""
from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.cli import build_parser, config_from_args, load_manifest, load_price_table, main
from protocol import RunManifest


def test_defaults_bind_to_loopback_and_freeze_the_flag_surface():
    parser = build_parser()
    args = parser.parse_args([])
    assert args.host == "127.0.0.1" and args.port == 8080 and args.manifest is None
    flags = sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))
    assert flags == sorted([
        "--help", "--host", "--port", "--db", "--run-key-file", "--manifest", "--run-id", "--target-tokens", "--max-age",
        "--max-future",
        "--rate", "--burst", "--max-body", "--price-table", "--electricity", "--stale-after", "--offline-after",
        "--snapshot-interval", "--port-file", "--log-level", "--log-file", "--log-format", "--log-max-mb", "--log-backups",
        "--cap-per-hour", "--budget-total", "--deadline",
        "--plan-every-rounds", "--plan-interval",
        "--public-url", "--tls-cert", "--tls-key", "--trust-forwarded-for", "--no-dialback",
        "--ip-rate", "--ip-burst", "--sse-per-ip", "--round-lead", "--start-round",
        "--sse-max-clients", "--sse-lifetime", "--sse-retry-after", "--sse-keepalive", "--seq-window",
        "--corpus-tokens", "--initial-checkpoint", "--validator", "--flag-quorum",
    ])


def test_manifest_from_toml_and_msgpack(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('run_id = "toml-run"\nround_tokens = 5000\ncodec = "int8"\n[model]\nn_layer = 6\n[hparams]\nouter_lr = 1\n')
    manifest = load_manifest(toml)
    assert (manifest.run_id, manifest.round_tokens, manifest.codec, manifest.model.n_layer) == ("toml-run", 5000, "int8", 6)
    assert manifest.hparams.outer_lr == 1.0
    packed = tmp_path / "run.msgpack"
    packed.write_bytes(manifest.to_bytes())
    assert load_manifest(packed) == manifest
    args = build_parser().parse_args(["--manifest", str(packed), "--db", str(tmp_path / "x.sqlite3")])
    assert config_from_args(args).manifest.content_hash == manifest.content_hash


def test_without_a_manifest_the_run_id_names_the_run(tmp_path):
    args = build_parser().parse_args(["--run-id", "r7", "--target-tokens", "2e9"])
    config = config_from_args(args)
    assert config.manifest == RunManifest(run_id="r7") and config.target_tokens == 2_000_000_000


def test_environment_fills_in_what_flags_do_not(monkeypatch):
    monkeypatch.setenv("SWARM_COORDINATOR_TARGET_TOKENS", "123")
    monkeypatch.setenv("SWARM_COORDINATOR_HOST", "127.0.0.2")
    args = build_parser().parse_args(["--host", "127.0.0.3"])
    assert args.target_tokens == 123.0 and args.host == "127.0.0.3"


def test_price_table_file_overrides_defaults(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('electricity_usd_per_kwh = 0.3\ncpu_usd_per_hour = 0.05\n'
                    '[gpu_watts]\nH100 = 600\n[gpu_usd_per_hour]\nA100 = 1.2\n')
    table = load_price_table(path, electricity=None)
    assert (table.electricity_usd_per_kwh, table.cpu_usd_per_hour, table.gpu_watts["H100"]) == (0.3, 0.05, 600.0)
    assert table.gpu_watts["T4"] == 70.0 and table.gpu_usd_per_hour == {"A100": 1.2}
    assert load_price_table(path, electricity=0.1).electricity_usd_per_kwh == 0.1


@pytest.mark.parametrize("content", [b"\xc1not msgpack", b'run_id = ""\n'])
def test_a_bad_manifest_exits_2(tmp_path, content):
    path = tmp_path / ("bad.toml" if content.startswith(b"run_id") else "bad.msgpack")
    path.write_bytes(content)
    assert main(["--manifest", str(path), "--db", str(tmp_path / "l.sqlite3")]) == 2


def test_budget_command_needs_the_run_key_and_a_change(tmp_path, capsys):
    assert main(["budget", "--db", str(tmp_path / "none.sqlite3"), "--cap-per-hour", "3"]) == 2
    assert "no run key" in capsys.readouterr().err
    from protocol import Identity

    Identity.generate().save(tmp_path / "l.sqlite3.runkey")
    assert main(["budget", "--db", str(tmp_path / "l.sqlite3")]) == 2
    assert "nothing to change" in capsys.readouterr().err
    # nothing listens on port 9 of loopback: one line, exit 1
    assert main(["budget", "--db", str(tmp_path / "l.sqlite3"), "--url", "http://127.0.0.1:9", "--cap-per-hour", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach" in err


def test_config_reads_its_fields_from_the_environment(tmp_path, monkeypatch):
    """CoordinatorConfig is pydantic-settings: SWARM_COORDINATOR_<FIELD>, keyword arguments above it."""
    from pathlib import Path

    from coordinator.config import CoordinatorConfig

    toml = tmp_path / "run.toml"
    toml.write_text('[manifest]\nrun_id = "from-env"\ncodec = "int8"\n')
    monkeypatch.setenv("SWARM_COORDINATOR_MANIFEST", str(toml))
    monkeypatch.setenv("SWARM_COORDINATOR_TARGET_TOKENS", "2e9")
    monkeypatch.setenv("SWARM_COORDINATOR_DIALBACK_TIMEOUT_S", "1.5")  # a field with no flag
    config = CoordinatorConfig(db_path=Path("l.sqlite3"), port=0)
    assert (config.run_id, config.manifest.codec, config.target_tokens, config.dialback_timeout_s, config.port) == (
        "from-env", "int8", 2_000_000_000, 1.5, 0)
    assert config.replace(port=9).port == 9 and config.replace(port=9).manifest == config.manifest
    # through the CLI: the flag's spelling and the field's both fill in the flag's default
    monkeypatch.setenv("SWARM_COORDINATOR_MAX_AGE_S", "60")
    args = build_parser().parse_args(["--manifest", str(toml)])
    assert args.max_age == 60.0 and config_from_args(args).max_age_s == 60.0
    assert config_from_args(args).dialback and not config_from_args(build_parser().parse_args(["--no-dialback"])).dialback
    monkeypatch.setenv("SWARM_COORDINATOR_DIALBACK", "false")
    assert not config_from_args(args).dialback
    monkeypatch.setenv("SWARM_COORDINATOR_PORT", "many")
    with pytest.raises(ValueError, match="port"):
        CoordinatorConfig(db_path=Path("l.sqlite3"))


def test_field_flags_take_their_help_from_the_config():
    from coordinator.cli import FIELD_FLAGS
    from coordinator.config import CoordinatorConfig

    actions = {a.dest: a for a in build_parser()._actions}
    for flag, field in FIELD_FLAGS.items():
        assert actions[flag.replace("-", "_")].help == CoordinatorConfig.model_fields[field].description, flag


def test_a_postgresql_ledger_needs_a_named_run_key_and_a_reachable_server(tmp_path, capfd):
    url = f"postgresql://ops:s3cret@/ledger?host={tmp_path / 'no-server'}"
    assert main(["--db", url, "--port", "0"]) == 2  # coordinators sharing a ledger must share one key file
    assert "needs --run-key-file" in capfd.readouterr().err
    assert main(["--db", url, "--run-key-file", str(tmp_path / "run.runkey"), "--port", "0"]) == 1
    err = capfd.readouterr().err
    assert "cannot open the ledger postgresql://ops:***@/ledger" in err and "s3cret" not in err
    parsed = config_from_args(build_parser().parse_args(["--db", url, "--run-key-file", str(tmp_path / "k")]))
    assert parsed.db_path == url  # a URL stays a URL; a path becomes a Path
    assert isinstance(config_from_args(build_parser().parse_args(["--db", "l.sqlite3"])).db_path, Path)
