"""Calibration: predict a real run we can make, and say how far off the prediction is.

The twin of ``swarm demo --nodes 4 --report REPORT.json`` is the ``loopback4`` scenario: the same
nodes, model, codec, round size and matchmaking time, each node at the compute rate it measured
(``tokens / compute_s``), the measured evaluation time per round, and a loopback "link" whose
effective speed stands for the CPU-bound all-reduce. The simulator then predicts rounds per hour
and swarm tokens/s, which the real run measured too.

A summary dict (what :func:`calibrate` takes; :func:`summary_from_report` builds it)::

    nodes                int    peers in the run
    round_tokens         int    the manifest's swarm-wide tokens per round
    node_tokens_per_s    [float] each node's compute rate (tokens / compute seconds)
    rounds_per_hour      float  measured
    swarm_tokens_per_s   float  measured (all tokens the nodes processed / elapsed)
    matchmaking_time_s   float  min_matchmaking_time
    eval_s_per_round     float  evaluation after each round, per node (the report's eval_s also holds
                                the one evaluation before the first round, hence / (rounds + 1))
    contributed_tokens_per_s  float  optional, measured: tokens of rounds that went into the model / elapsed
    bytes_sent_per_round float  optional, measured: all-reduce bytes a node sent per successful round
    elapsed_s            float  optional: the run's length (default one hour)
    startup_s            float  optional: seconds before the first round starts (DHT, p2pd; default 0)

The prediction is reported next to a closed form, ``round = round_tokens / sum(rates) + lag +
matchmaking + all-reduce + eval``, which the simulator must reproduce for one group that never
fails (a test holds it to that).
"""
from __future__ import annotations

from typing import Any

from node.policies.model_size import param_count

from .allreduce import MBIT, butterfly_time
from .catalog import CODECS
from .run import simulate
from .scenarios import MODELS, loopback4

__all__ = ["analytic", "calibrate", "summary_from_report"]


def summary_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """The calibration summary from the JSON of ``swarm demo --report``. Missing swarm-level keys
    are derived from the per-node ones; a report without per-node tokens and compute time is an error."""
    nodes = report.get("nodes") or []
    rates = [n["tokens"] / n["compute_s"] for n in nodes if n.get("tokens") and n.get("compute_s")]
    if not rates:
        raise ValueError("the report has no node with both 'tokens' and 'compute_s'")
    if "round_tokens" not in report:
        raise ValueError("the report has no 'round_tokens'")
    elapsed = report.get("elapsed_s") or report.get("seconds")
    evaluations = sum((n.get("rounds") or 0) + 1 for n in nodes if n.get("eval_s"))
    summary: dict[str, Any] = {
        "nodes": len(nodes),
        "round_tokens": int(report["round_tokens"]),
        "node_tokens_per_s": rates,
        "matchmaking_time_s": float(report.get("matchmaking_time_s", 3.0)),
        "eval_s_per_round": sum(n.get("eval_s") or 0.0 for n in nodes) / evaluations if evaluations else 0.0,
        "rounds_per_hour": report.get("rounds_per_hour"),
        "swarm_tokens_per_s": report.get("swarm_tokens_per_s"),
        "elapsed_s": elapsed,
        "startup_s": float(report.get("startup_s", 0.0)),
    }
    contributed = [n["tokens_contributed"] for n in nodes if n.get("tokens_contributed") is not None]
    if contributed and elapsed:
        summary["contributed_tokens_per_s"] = sum(contributed) / elapsed
    sent = [(n["bytes_sent"], n["rounds"]) for n in nodes if n.get("bytes_sent") and n.get("rounds")]
    if sent:
        summary["bytes_sent_per_round"] = sum(b for b, _ in sent) / sum(r for _, r in sent)
    if summary["rounds_per_hour"] is None and elapsed:
        summary["rounds_per_hour"] = max(n.get("rounds") or 0 for n in nodes) * 3600.0 / elapsed
    if summary["swarm_tokens_per_s"] is None and elapsed:
        summary["swarm_tokens_per_s"] = sum(n.get("tokens") or 0 for n in nodes) / elapsed
    return summary


def _allreduce_s(summary: dict[str, Any], loopback_mbps: float, codec: str) -> float:
    n = int(summary["nodes"])
    return butterfly_time(CODECS[codec].payload_bytes(param_count(MODELS["tiny"]), n), n, loopback_mbps * MBIT)


def analytic(summary: dict[str, Any], *, loopback_mbps: float = 400.0, progress_lag_s: float = 0.0,
             codec: str = "fp16") -> dict[str, float]:
    """Closed-form steady state of one always-healthy group."""
    rate = sum(summary["node_tokens_per_s"])
    inner = summary["round_tokens"] / rate
    period = inner + progress_lag_s + summary["matchmaking_time_s"] + _allreduce_s(summary, loopback_mbps, codec) \
        + summary["eval_s_per_round"]
    computed_per_round = summary["round_tokens"] + rate * progress_lag_s
    return {"round_s": period, "rounds_per_hour": 3600.0 / period, "swarm_tokens_per_s": computed_per_round / period,
            "inner_s": inner}


def _rel(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or not measured:
        return None
    return predicted / measured - 1.0


def calibrate(summary: dict[str, Any], *, loopback_mbps: float = 400.0, progress_lag_s: float = 0.0,
              codec: str = "fp16", seed: int = 0) -> dict[str, Any]:
    """Simulate the run's twin; return predicted vs measured figures with relative errors
    (``predicted / measured - 1``; None where the run did not measure the figure)."""
    elapsed = float(summary.get("elapsed_s") or 3600.0)
    startup = float(summary.get("startup_s") or 0.0)
    training = max(elapsed - startup, 1.0)
    rates = tuple(float(r) for r in summary["node_tokens_per_s"])
    cfg = loopback4(
        peers=int(summary["nodes"]), hours=max(training, 3600.0) / 3600.0, seed=seed, tokens_per_s=rates,
        round_tokens=int(summary["round_tokens"]), matchmaking_s=float(summary["matchmaking_time_s"]),
        eval_s=float(summary["eval_s_per_round"]), loopback_mbps=loopback_mbps, progress_lag_s=progress_lag_s,
        codec=codec,
    )
    result = simulate(cfg)
    period = result.summary["rounds"]["mean_period_s"]
    steady_rate = result.summary["tokens"]["computed"] / cfg.duration_s
    share = training / elapsed  # the run spent this share of its time training
    acct = result.swarm.acct if result.swarm else None
    rounds_done = sum(1 for r in result.rounds if r["last_done"] >= 0)
    predicted = {
        "round_s": period / share if period else None,
        "rounds_per_hour": 3600.0 / period * share if period else None,
        "swarm_tokens_per_s": steady_rate * share,
        "contributed_tokens_per_s": result.summary["tokens"]["ok"] / cfg.duration_s * share,
        "bytes_sent_per_round": acct.bytes_sent[0] / rounds_done if acct and rounds_done else None,
    }
    measured_rph = summary.get("rounds_per_hour")
    measured = {
        "round_s": 3600.0 / measured_rph if measured_rph else None,
        "rounds_per_hour": measured_rph,
        "swarm_tokens_per_s": summary.get("swarm_tokens_per_s"),
        "contributed_tokens_per_s": summary.get("contributed_tokens_per_s"),
        "bytes_sent_per_round": summary.get("bytes_sent_per_round"),
    }
    return {
        "predicted": predicted,
        "measured": measured,
        "relative_error": {k: _rel(predicted[k], measured[k]) for k in predicted},
        "analytic": analytic(summary, loopback_mbps=loopback_mbps, progress_lag_s=progress_lag_s, codec=codec),
        "inputs": {**summary, "loopback_mbps": loopback_mbps, "progress_lag_s": progress_lag_s, "codec": codec},
    }
