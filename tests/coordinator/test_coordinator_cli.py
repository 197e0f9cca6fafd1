"""coordinator.cli: the parser surface, manifest and price-table files, and exit codes."""
from __future__ import annotations

import pytest

from coordinator.cli import build_parser, config_from_args, load_manifest, load_price_table, main
from protocol import RunManifest


def test_defaults_bind_to_loopback_and_freeze_the_flag_surface():
    parser = build_parser()
    args = parser.parse_args([])
    assert args.host == "127.0.0.1" and args.port == 8080 and args.manifest is None
    flags = sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))
    assert flags == sorted([
        "--help", "--host", "--port", "--db", "--manifest", "--run-id", "--target-tokens", "--max-age", "--max-future",
        "--rate", "--burst", "--max-body", "--price-table", "--electricity", "--stale-after", "--offline-after",
        "--snapshot-interval", "--port-file", "--log-level",
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
    path.write_text('electricity_usd_per_kwh = 0.3\ncpu_usd_per_hour = 0.05\n[gpu_watts]\nH100 = 600\n[gpu_usd_per_hour]\nA100 = 1.2\n')
    table = load_price_table(path, electricity=None)
    assert (table.electricity_usd_per_kwh, table.cpu_usd_per_hour, table.gpu_watts["H100"]) == (0.3, 0.05, 600.0)
    assert table.gpu_watts["T4"] == 70.0 and table.gpu_usd_per_hour == {"A100": 1.2}
    assert load_price_table(path, electricity=0.1).electricity_usd_per_kwh == 0.1


@pytest.mark.parametrize("content", [b"\xc1not msgpack", b'run_id = ""\n'])
def test_a_bad_manifest_exits_2(tmp_path, content):
    path = tmp_path / ("bad.toml" if content.startswith(b"run_id") else "bad.msgpack")
    path.write_bytes(content)
    assert main(["--manifest", str(path), "--db", str(tmp_path / "l.sqlite3")]) == 2
