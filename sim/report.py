"""Write a run to disk: ``sim.json`` (config, summary, time series, rounds, trace hash) and PNG plots.

Plots (one file each): swarm tokens/s, compute utilization, work wasted, $ per 1M tokens (true and
as the coordinator's ledger bills it), bytes per peer, and peers online.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .config import SimConfig
from .run import Result
from .plots import line_chart, trailing_mean

__all__ = ["PLOTS", "to_json", "write_outputs"]

PLOTS = ("tokens_per_s.png", "utilization.png", "wasted.png", "usd_per_mtok.png", "bytes_per_peer.png", "peers.png")


def to_json(cfg: SimConfig, result: Result) -> dict[str, Any]:
    return {
        "config": dataclasses.asdict(cfg),
        "summary": result.summary,
        "series": result.series,
        "rounds": result.rounds,
        "trace_sha256": result.trace_sha256,
        "run": {"wall_s": result.wall_s, "events": result.events},  # the only fields a seed does not fix
    }


def plots(cfg: SimConfig, series: dict[str, list[Any]]) -> dict[str, bytes]:
    xs = series["t_h"]
    window = max(1, round(3600.0 / cfg.sample_s))  # rounds last minutes: rates are shown as 1 h means
    sub = f"{cfg.scenario}: {cfg.peers():,} peers, {cfg.codec}, seed {cfg.seed}"
    hourly = f"{sub}; trailing 1 h mean" if window > 1 else sub
    priced = [k for k, v in enumerate(series["ledger_usd"]) if v is not None]

    def mean(name: str) -> list[Any]:
        return trailing_mean(series[name], window)

    def pick(name: str) -> list[Any]:
        return [series[name][k] for k in priced]

    return {
        "tokens_per_s.png": line_chart(
            "Swarm tokens/s", xs, [("into the model", mean("tokens_per_s")), ("computed", mean("computed_tokens_per_s"))],
            subtitle=hourly, y_label="tokens/s"),
        "utilization.png": line_chart(
            "Compute utilization", xs, [("computing / online", mean("utilization"))], subtitle=hourly, y_label="share"),
        "wasted.png": line_chart(
            "Work wasted: failed rounds and leavers", xs, [("tokens", series["wasted_tokens"])], subtitle=sub,
            y_label="tokens, cumulative"),
        "usd_per_mtok.png": line_chart(
            "$ per 1M tokens", [xs[k] for k in priced],
            [("true (every online hour)", pick("true_usd_per_mtok")), ("ledger (reported rounds)", pick("ledger_usd_per_mtok"))],
            subtitle=sub, y_label="US$ / 1M tokens, cumulative"),
        "bytes_per_peer.png": line_chart(
            "Traffic per peer (sent + received)", xs, [("all-reduce + state", mean("mb_per_peer_h"))], subtitle=hourly,
            y_label="MB per peer-hour"),
        "peers.png": line_chart(
            "Peers", xs, [("online", series["online"]), ("computing", series["computing"])], subtitle=sub, y_label="peers"),
    }


def write_outputs(cfg: SimConfig, result: Result, out: Path, *, with_plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "sim.json"]
    written[0].write_text(json.dumps(to_json(cfg, result), indent=1, default=str) + "\n")
    if with_plots:
        for name, png in plots(cfg, result.series).items():
            (out / name).write_bytes(png)
            written.append(out / name)
    return written
