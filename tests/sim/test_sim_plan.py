"""The cost plan in the simulator and ``swarm plan``: on the documented example fleets the plan beats
admitting everyone on $ per 1M confirmed tokens at equal or better time to target; standby nodes
are not billed; a paid node over the cap never trains; bad fleets get one clear line."""
from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.cost import PriceTable
from sim.fleet import FleetError, fleet_config, load_fleet, load_manifest
from sim.plancmp import EXAMPLES, compare, main
from sim.run import simulate

MANIFEST = load_manifest(EXAMPLES / "manifest.toml")
FLEETS = sorted(p for p in EXAMPLES.glob("*.toml") if not p.name.startswith("manifest"))


def test_there_are_at_least_three_example_fleets():
    assert len(FLEETS) >= 3


@pytest.mark.parametrize("path", FLEETS, ids=lambda p: p.stem)
def test_plan_beats_admit_everyone(path: Path):
    cmp = compare(load_fleet(path), MANIFEST, PriceTable(), path.stem)
    v = cmp["verdict"]
    assert v is not None and v["cheaper_per_mtok"] and v["no_slower"], cmp
    cap = cmp["cap_per_hour"]
    if cap is not None:
        assert cmp["plan"]["max_planned_burn"] <= cap + 1e-9


def small_fleet(cap: float | None) -> dict:
    return {"hours": 1, "target_tokens": 1e8, "sample_s": 60, "budget": {} if cap is None else {"cap_per_hour": cap},
            "devices": [
                {"name": "vol", "count": 2, "gpu": "cpu", "tokens_per_s": 3000, "bandwidth_mbps": 400},
                {"name": "cheap", "count": 1, "gpu": "cpu", "tokens_per_s": 3000, "price_per_hour": 1.0, "bandwidth_mbps": 400},
                {"name": "dear", "count": 1, "gpu": "cpu", "tokens_per_s": 3000, "price_per_hour": 2.0, "bandwidth_mbps": 400},
            ]}


def test_over_the_cap_the_dearer_node_never_trains_and_is_never_billed():
    tiny = load_manifest(EXAMPLES / "manifest.toml").with_changes(model=__import__("sim.scenarios").scenarios.MODELS["tiny"],
                                                                   round_tokens=20_000, codec="fp16")
    result = simulate(fleet_config(small_fleet(1.5), tiny, PriceTable(), plan=True))
    sw = result.swarm
    dear = 3  # ids are assigned population by population
    assert sw.acct.billed_s[dear] == 0 and sw.acct.reports[dear] == 0
    assert sw.acct.billed_s[2] > 0.9 * 3600 * 0.9  # the cheap one trained all along
    spend_rate = result.summary["cost"]["true_usd"] / 1.0
    assert spend_rate <= 1.5
    everyone = simulate(fleet_config(small_fleet(1.5), tiny, PriceTable(), plan=False))
    assert everyone.summary["cost"]["true_usd"] > 3.0  # the cap is the plan's, not the sim's


def test_plan_cli_prints_both_runs_and_draws_a_chart(tmp_path, capsys):
    assert main(["--fleet", str(FLEETS[0]), "--manifest", str(EXAMPLES / "manifest.toml"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "admit everyone" in out and "plan" in out and "time to target" in out
    assert (tmp_path / f"plan-{FLEETS[0].stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "plan.json").exists()


def test_bad_fleet_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[devices]]\nname = "x"\ncount = 2\ngpu = "Z80"\nbandwidth_mbps = 10\n')
    assert main(["--fleet", str(bad), "--manifest", str(EXAMPLES / "manifest.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gpu must be one of" in err
    assert main(["--fleet", str(bad)]) == 2
    with pytest.raises(FleetError):
        fleet_config({"devices": []}, MANIFEST, PriceTable())
