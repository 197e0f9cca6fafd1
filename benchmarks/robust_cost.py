"""Cost of robust aggregation per round against the plain mean, for a model preset (default small).

    python -m benchmarks.robust_cost --out bench-out/robust-cost

In a group of G, each reducer holds every member's copy of its share (1/G of the payload) and
aggregates them part by part (``PART_VALUES`` values each) when the last copy has arrived; the plain
mean (hivemind's running weighted sum) does the same additions as they arrive. So the extra work of a
robust rule per round is, on every reducer at once, ``node.averaging.robust.aggregate`` over G x P/G values
minus the weighted sum over the same values. Both are timed here on this machine's CPU, one torch
thread (the node's default), on random parts, median of ``--repeats``.

The round it is compared with: the inner phase of one node (``round_tokens / G`` tokens of real
AdamW steps of the preset, timed here) plus the all-reduce time given by ``--allreduce-s`` (default:
the small preset's fp16 all-reduce at 50 Mbit/s in BENCHMARKS.md, 6.24 s). The figure is
(robust - mean) / round time; the goal is <= 5 %.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.quality import MODELS
from node.averaging.codecs import PART_VALUES
from node.train.diloco import inner_optimizer, inner_step, warmup_lr
from node.model.gpt import GPT
from node.averaging.robust import aggregate
from protocol import Hyperparameters, RunManifest

__all__ = ["build_parser", "main", "time_reducer"]


def time_reducer(params: int, group: int, method: str, repeats: int) -> float:
    """Median seconds one reducer spends aggregating its share of one round with ``method``."""
    share = -(-params // group)
    sizes = [min(PART_VALUES, share - i) for i in range(0, share, PART_VALUES)]
    gen = torch.Generator().manual_seed(0)
    parts = [[torch.randn(n, generator=gen) * 1e-3 for _ in range(group)] for n in sizes]
    weights = [float(4096 * (1 + i % 3)) for i in range(group)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for members in parts:
            aggregate(members, weights, method)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_inner_steps(preset: str, steps: int) -> float:
    """Median seconds of one AdamW inner step of ``preset`` (batch and block of the default manifest)."""
    spec, hp = MODELS[preset], Hyperparameters()
    torch.manual_seed(0)
    model = GPT(spec)
    opt = inner_optimizer(model.parameters(), hp)
    x = torch.randint(0, 256, (hp.batch_size, spec.block_size))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        inner_step(model, opt, x, x, lr=warmup_lr(hp, i), grad_clip=hp.grad_clip)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first step allocates


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robust_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/robust-cost"))
    parser.add_argument("--model", default="small", choices=sorted(MODELS))
    parser.add_argument("--groups", nargs="+", type=int, default=[2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="inner steps timed for the round's compute")
    parser.add_argument("--round-tokens", type=int, default=RunManifest(run_id="x").round_tokens)
    parser.add_argument("--allreduce-s", type=float, default=6.24, help="all-reduce seconds per round (BENCHMARKS.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    spec, hp = MODELS[args.model], Hyperparameters()
    with torch.device("meta"):
        params = GPT(spec).num_params()
    step_s = time_inner_steps(args.model, args.steps)
    rows: list[dict[str, Any]] = []
    for g in args.groups:
        mean = time_reducer(params, g, "mean", args.repeats)
        steps = args.round_tokens / g / (hp.batch_size * spec.block_size)
        round_s = steps * step_s + args.allreduce_s
        row = {"group": g, "mean_s": mean, "inner_steps_per_node": steps, "round_s": round_s}
        for method in ("centered_clip", "trimmed_mean"):
            t = time_reducer(params, g, method, args.repeats)
            row[f"{method}_s"] = t
            row[f"{method}_extra_pct_of_round"] = (t - mean) / round_s * 100
        rows.append(row)
    report = {"command": "python -m benchmarks.robust_cost " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "params": params, "inner_step_s": step_s, "allreduce_s": args.allreduce_s,
              "round_tokens": args.round_tokens, "threads": 1, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robust_cost.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"model {args.model} ({params:,} params), inner step {step_s:.2f} s (batch {hp.batch_size} x {spec.block_size}), "
             f"round = round_tokens {args.round_tokens:,} / G of inner steps + {args.allreduce_s} s all-reduce; "
             "one torch thread\n",
             "| G | reducer: mean s | centered_clip s | trimmed_mean s | round s | extra, centered_clip | extra, trimmed_mean |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['mean_s']:.3f} | {r['centered_clip_s']:.3f} | {r['trimmed_mean_s']:.3f} "
                     f"| {r['round_s']:.1f} "
                     f"| {r['centered_clip_extra_pct_of_round']:.2f} % | {r['trimmed_mean_extra_pct_of_round']:.2f} % |")
    table = "\n".join(lines) + "\n"
    (args.out / "robust_cost.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
