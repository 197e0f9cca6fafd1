"""Spot checks (node/trust/spotcheck.py): how much a check's figures move by themselves, and how far
honest and dishonest updates land from the tolerances.

    python -m benchmarks.spotcheck --out bench-out/spotcheck

Nondeterminism, on this machine's CPU: the same loss evaluation (every window of one peer's round,
before and after its update) repeated, and on 1 vs 2 torch threads; and the same recompute of the
round's inner steps (``recompute_update``) repeated and on 1 vs 2 threads, as the relative L2
distance of the two updates and the difference of their gains. The tolerances (``Tolerance``) must
sit far above the first (a verdict must not flip on rounding) and the honest margins far above the
tolerances.

Margins: peer A's honest round of ``--steps`` inner steps (fresh AdamW = a first round; then after
``--warm`` steps of shared training with the optimizer carried, a veteran's round), judged against
a validator's recompute; and dishonest updates of the same round: x100, x3, sign-flipped, zero, x0.01,
random noise of the update's size, peer B's honest update of its own windows (a copy).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.quality import MODELS
from node.data.load import load_corpus
from node.data.sampler import ByteSampler
from node.train.diloco import inner_optimizer, inner_step, pseudo_gradient
from node.model.gpt import GPT
from node.trust.spotcheck import Tolerance, assigned_batches, check_update, random_batches, recompute_update, window_losses
from protocol import Hyperparameters

__all__ = ["build_parser", "honest_round", "main"]

RUN = "bench-spot"


def honest_round(model: GPT, opt: torch.optim.Optimizer, train: Any, peer: str, round_: int, steps: int,
                 hp: Hyperparameters, block: int, run: str = RUN) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``peer``'s inner phase of ``round_`` as node.train.trainer runs it (its own windows, ``steps`` AdamW
    steps at the inner learning rate): (global parameters, update = global - local); the model's
    parameters are put back to global."""
    start = [p.detach().clone() for p in model.parameters()]
    sampler = ByteSampler.for_node(train, block, hp.batch_size, run, peer)
    sampler.start_round(round_)
    for _ in range(steps):
        x, y = sampler.batch()
        inner_step(model, opt, x, y, lr=hp.inner_lr, grad_clip=hp.grad_clip)
    delta = pseudo_gradient(start, model.parameters())
    with torch.no_grad():
        for p, s in zip(model.parameters(), start):
            p.copy_(s)
    return start, delta


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float((x - y).double().norm() ** 2) for x, y in zip(a, b)) ** 0.5
    den = sum(float(x.double().norm() ** 2) for x in a) ** 0.5
    return num / den if den else 0.0


def _with_threads(n: int, fn: Any) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def nondeterminism(scratch: GPT, global_params: list[torch.Tensor], delta: list[torch.Tensor], assigned: list[Any],
                   hp: Hyperparameters, repeats: int) -> dict[str, float]:
    after = [g - d for g, d in zip(global_params, delta)]

    def gains() -> torch.Tensor:
        return window_losses(scratch, global_params, assigned) - window_losses(scratch, after, assigned)

    one = [_with_threads(1, gains) for _ in range(repeats)]
    two = _with_threads(2, gains)
    ref1 = [_with_threads(1, lambda: recompute_update(scratch, global_params, assigned, hp)) for _ in range(2)]
    ref2 = _with_threads(2, lambda: recompute_update(scratch, global_params, assigned, hp))

    def gain_of(update: list[torch.Tensor]) -> float:
        moved = [g - d for g, d in zip(global_params, update)]
        return float((window_losses(scratch, global_params, assigned) - window_losses(scratch, moved, assigned)).mean())

    return {
        "gain_repeat_max_abs": max(abs(float(g.mean()) - float(one[0].mean())) for g in one),
        "window_gain_repeat_max_abs": max(float((g - one[0]).abs().max()) for g in one),
        "gain_threads_1v2_abs": abs(float(two.mean()) - float(one[0].mean())),
        "window_gain_threads_1v2_max_abs": float((two - one[0]).abs().max()),
        "recompute_repeat_rel_l2": _rel(ref1[0], ref1[1]),
        "recompute_threads_1v2_rel_l2": _rel(ref1[0], ref2),
        "recompute_threads_1v2_gain_abs": abs(gain_of(ref1[0]) - gain_of(ref2)),
    }


def margins(scratch: GPT, global_params: list[torch.Tensor], delta: list[torch.Tensor], copied: list[torch.Tensor],
            assigned: list[Any], rand: list[Any], hp: Hyperparameters, tol: Tolerance) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    reference = recompute_update(scratch, global_params, assigned, hp)
    recompute_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    cases = {
        "honest": delta, "x0.5": [d * 0.5 for d in delta], "x3": [d * 3 for d in delta], "x100": [d * 100 for d in delta],
        "sign-flipped": [-d for d in delta], "zero": [torch.zeros_like(d) for d in delta], "x0.01": [d * 0.01 for d in delta],
        "noise": [torch.randn(d.shape, generator=gen) * d.norm() / d.numel() ** 0.5 for d in delta],
        "copied (peer B)": copied,
    }
    rows = []
    for name, update in cases.items():
        t0 = time.perf_counter()
        r = check_update(scratch, global_params, update, assigned, rand, tol, reference=reference)
        rows.append({"update": name, "passed": r.passed, "reason": r.reason, "gain": r.gain, "random_gain": r.random_gain,
                     "ratio": r.gain / r.reference_gain if r.reference_gain else float("nan"), "z": r.z,
                     "check_s": time.perf_counter() - t0, "recompute_s": recompute_s})
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spotcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/spotcheck"))
    parser.add_argument("--model", default="micro", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="inner steps of the checked round")
    parser.add_argument("--warm", type=int, default=200, help="shared training steps before the veteran round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-bytes", type=int, default=3_000_000)
    parser.add_argument("--min-z", type=float, default=3.0, help="Tolerance.min_z for the margins table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    spec = MODELS[args.model]
    hp = replace(Hyperparameters(), batch_size=args.batch, warmup_steps=1)
    train = load_corpus(max_bytes=args.data_bytes).train
    tol = Tolerance(min_z=args.min_z)
    torch.manual_seed(0)
    model, scratch = GPT(spec), GPT(spec)
    opt = inner_optimizer(model.parameters(), hp)
    report: dict[str, Any] = {"command": "python -m benchmarks.spotcheck " + " ".join(sys.argv[1:] if argv is None else argv),
                              "model": args.model, "batch": args.batch, "block": spec.block_size, "steps": args.steps,
                              "tolerance": tol.__dict__, "phases": {}}
    warm = ByteSampler(train, spec.block_size, hp.batch_size, seed=99)
    for phase, warm_steps in (("fresh", 0), ("veteran", args.warm)):
        for _ in range(warm_steps):
            x, y = warm.batch()
            inner_step(model, opt, x, y, lr=hp.inner_lr, grad_clip=hp.grad_clip)
        opt_b = inner_optimizer(model.parameters(), hp)
        if warm_steps:
            opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))
        round_ = 3 if phase == "fresh" else 7
        opt_a = opt if warm_steps else inner_optimizer(model.parameters(), hp)  # fresh: a peer's first round
        global_params, delta = honest_round(model, opt_a, train, "peer-A", round_, args.steps, hp, spec.block_size)
        _, copied = honest_round(model, opt_b, train, "peer-B", round_, args.steps, hp, spec.block_size)
        assigned = assigned_batches(train, run_id=RUN, peer_id="peer-A", round_=round_, tokens=args.steps * hp.batch_size *
                                    spec.block_size, batch_size=hp.batch_size, block_size=spec.block_size, max_batches=10**6)
        rand = random_batches(train, seed=f"validator/peer-A/{round_}", batch_size=hp.batch_size, block_size=spec.block_size,
                              n=2 * len(assigned))
        report["phases"][phase] = {
            "nondeterminism": nondeterminism(scratch, global_params, delta, assigned, hp, args.repeats),
            "margins": margins(scratch, global_params, delta, copied, assigned, rand, hp, tol),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spotcheck.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"model {args.model}, batch {args.batch} x {spec.block_size}, {args.steps} inner steps per round, "
             f"tolerance {tol}; one torch thread unless said\n"]
    for phase, figures in report["phases"].items():
        lines.append(f"{phase}: " + ", ".join(f"{k} {v:.2e}" for k, v in figures["nondeterminism"].items()) + "\n")
        lines += ["| update | verdict | gain (nats) | random gain | gain / recompute's | z | check s |",
                  "|---|---|---|---|---|---|---|"]
        for r in figures["margins"]:
            lines.append(f"| {r['update']} | {r['reason']} | {r['gain']:.4f} | {r['random_gain']:.4f} | {r['ratio']:.3f} "
                         f"| {r['z']:.2f} | {r['check_s']:.2f} |")
        lines.append(f"\nrecompute of the round: {figures['margins'][0]['recompute_s']:.2f} s\n")
    table = "\n".join(lines) + "\n"
    (args.out / "spotcheck.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
