"""Attack suite in the token-space simulation: poisoned pseudo-gradients with and without the defence.

    python -m benchmarks.attacks --out bench-out/attacks          # or: swarm bench attacks --out ...

k replicas (16 by default) train DiLoCo exactly as ``benchmarks.quality`` does it (the same inner
steps, codec, hivemind's own cut of the butterfly all-reduce, outer Nesterov step); 0, 1 or 3 of
them attack every round, from the first:

    sign_flip    sends -100 x its honest pseudo-gradient
    random       sends a random direction at 10 x its honest pseudo-gradient's norm
    stale        replays its first round's pseudo-gradient every round
    free_rider   trains nothing and sends zeros, while claiming as many tokens as the others

Attackers claim the same token weight as honest replicas. Each run uses one aggregation rule (the
manifest's ``hparams.aggregation``): ``mean`` (no defence) or ``centered_clip`` / ``trimmed_mean``
(``node.averaging.robust``, inside each reducer). With a robust rule every honest reducer reports its
outliers every round (``node.averaging.robust.outliers``, as a node signs an ``OutlierReport``), and the
coordinator's own rule (``coordinator.outliers.flags``: >= 2 distinct reducers in each of 3 rounds)
says who is flagged; attacking reducers report nothing. The figures: final validation bits per byte of
the global model vs the clean run, rounds until each attacker is flagged, honest peers flagged.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import multiprocessing as mp
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.quality import MODELS, QualityConfig, _evaluate, _samplers, all_reduce, deterministic
from benchmarks.suites.charts import line_chart
from coordinator.outliers import flags
from node.averaging.wire import make_codec
from node.data.corpus import Corpus
from node.data.load import load_corpus
from node.train.diloco import inner_optimizer, inner_step, outer_optimizer, outer_step, pseudo_gradient, warmup_lr
from node.model.gpt import GPT
from node.averaging.robust import outliers
from protocol import Hyperparameters

__all__ = ["ATTACKS", "attack_pseudo", "build_parser", "main", "run_attack"]

logger = logging.getLogger(__name__)

ATTACKS = ("sign_flip", "random", "stale", "free_rider")
BPB_TARGET = 1.1  # defended final bpb at 3 of 16 attackers: at most this x the clean run's
CHART_CAP = 9.0  # bits per byte drawn at most (a diverged run goes to NaN or far above 8)


def attack_pseudo(
    attack: str, pseudo: list[torch.Tensor], first: list[torch.Tensor] | None, gen: torch.Generator
) -> list[torch.Tensor]:
    """What an attacker sends instead of its honest pseudo-gradient ``pseudo``."""
    if attack == "sign_flip":
        return [-100 * g for g in pseudo]
    if attack == "random":
        norm = math.sqrt(sum(float(g.square().sum()) for g in pseudo))
        r = [torch.randn(g.shape, generator=gen) for g in pseudo]
        rnorm = math.sqrt(sum(float(x.square().sum()) for x in r))
        return [x * (10 * norm / rnorm) for x in r]
    if attack == "stale":
        return [g.clone() for g in (first if first is not None else pseudo)]
    if attack == "free_rider":
        return [torch.zeros_like(g) for g in pseudo]
    raise ValueError(f"unknown attack {attack!r}")


def run_attack(
    cfg: QualityConfig, corpus: Corpus, attack: str, attackers: int, aggregation: str, codec: str = "fp16"
) -> dict[str, Any]:
    """One DiLoCo run with ``attackers`` of ``cfg.replicas`` replicas running ``attack``."""
    t0 = time.perf_counter()
    hp, k = cfg.hp, cfg.replicas
    wire = make_codec(codec)
    torch.manual_seed(cfg.seed)
    global_model = GPT(cfg.spec)
    global_params = [p.detach().float().clone() for p in global_model.parameters()]
    outer = outer_optimizer(global_params, hp.outer_lr, hp.outer_momentum)
    models = [copy.deepcopy(global_model) for _ in range(k)]
    opts = [inner_optimizer(m.parameters(), hp) for m in models]
    samplers = _samplers(cfg, corpus)
    bad = set(range(k - attackers, k))  # the last replicas attack
    names = [f"{'attacker' if i in bad else 'honest'}-{i}" for i in range(k)]
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    first: dict[int, list[torch.Tensor]] = {}
    tokens = cfg.inner_steps * hp.batch_size * cfg.spec.block_size
    run: dict[str, Any] = {
        "name": f"{attack if attackers else 'clean'} x{attackers} {aggregation}", "attack": attack if attackers else "none",
        "attackers": attackers, "aggregation": aggregation, "val_bpb": [_evaluate(global_model, cfg, corpus.val)],
    }
    rows: list[dict[str, Any]] = []  # what honest reducers reported, as the coordinator stores it
    steps_done = [0] * k
    for r in range(cfg.rounds):
        sent = []
        for i in range(k):
            if not (i in bad and attack == "free_rider"):  # a free rider saves its compute
                for _ in range(cfg.inner_steps):
                    x, y = samplers[i].batch()
                    inner_step(models[i], opts[i], x, y, lr=warmup_lr(hp, steps_done[i]), grad_clip=hp.grad_clip)
                    steps_done[i] += 1
            pseudo = pseudo_gradient(global_params, models[i].parameters())
            if i in bad:
                first.setdefault(i, [g.clone() for g in pseudo])
                pseudo = attack_pseudo(attack, pseudo, first[i], gen)
            sent.append(pseudo)
        ex = all_reduce(wire, sent, [float(tokens)] * k, aggregation)
        if aggregation != "mean":
            for j in range(k):
                if j in bad:
                    continue
                seen = {names[s]: st for s, st in enumerate(ex.stats[j]) if st.parts}
                rows += [dict(member=m, round=r, reducer=names[j], max_ratio=st.max_ratio, min_ratio=st.min_ratio)
                         for m, st in outliers(seen).items()]
        outer_step(outer, ex.averaged)
        with torch.no_grad():
            for m in [global_model, *models]:
                for p, g in zip(m.parameters(), global_params):
                    p.copy_(g)
        bpb = _evaluate(global_model, cfg, corpus.val)
        run["val_bpb"].append(bpb if math.isfinite(bpb) else None)
    flagged = flags(rows)
    run["flagged"] = {m: f["first_round"] for m, f in flagged.items()}
    run["attackers_flagged"] = sum(names[i] in flagged for i in bad)
    run["honest_flagged"] = sum(names[i] in flagged for i in range(k) if i not in bad)
    run["rounds_to_flag"] = max((flagged[names[i]]["flagged_at"] + 1 for i in bad if names[i] in flagged), default=None)
    run["reported"] = rows  # every honest reducer's outlier report, for re-applying another flag rule
    run["final_bpb"] = run["val_bpb"][-1]
    run["wall_s"] = time.perf_counter() - t0
    logger.info("%s: final bpb %s, attackers flagged %d/%d, honest flagged %d (%.0f s)", run["name"], run["final_bpb"],
                run["attackers_flagged"], attackers, run["honest_flagged"], run["wall_s"])
    return run


_CORPUS: Corpus | None = None


def _one(task: tuple[QualityConfig, str, int, str]) -> dict[str, Any]:
    cfg, attack, n, aggregation = task
    assert _CORPUS is not None
    with deterministic():
        return run_attack(cfg, _CORPUS, attack, n, aggregation)


def plan(attacks: list[str], counts: list[int], aggregations: list[str]) -> list[tuple[str, int, str]]:
    tasks = [("none", 0, agg) for agg in ["mean", *aggregations]]
    return tasks + [(a, n, agg) for a in attacks for n in counts if n > 0 for agg in ["mean", *aggregations]]


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    clean = next(r["final_bpb"] for r in runs if r["attackers"] == 0 and r["aggregation"] == "mean")
    rows = []
    for r in runs:
        final = r["final_bpb"]
        rows.append({"attack": r["attack"], "attackers": r["attackers"], "aggregation": r["aggregation"], "final_bpb": final,
                     "vs_clean": final / clean if final is not None else None,
                     "attackers_flagged": r["attackers_flagged"], "honest_flagged": r["honest_flagged"],
                     "rounds_to_flag": r["rounds_to_flag"]})
    return rows


def markdown_table(report: dict[str, Any]) -> str:
    cfg = report["config"]
    head = (f"{cfg['replicas']} replicas, H = {cfg['inner_steps']}, {cfg['rounds']} rounds, model {cfg['spec']['preset']} "
            f"({cfg['params']:,} params), codec {report['codec']}; attackers attack from round 1\n\n")
    lines = ["| attack | attackers | aggregation | final val bpb | x clean (mean, 0 attackers) | attackers flagged "
             "| rounds to flag | honest flagged |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["summary"]:
        bpb = f"{row['final_bpb']:.4f}" if row["final_bpb"] is not None else "diverged (NaN)"
        ratio = f"{row['vs_clean']:.3f}" if row["vs_clean"] is not None else "-"
        defended = row["aggregation"] != "mean"
        flagged = f"{row['attackers_flagged']} / {row['attackers']}" if defended else "- (no reports)"
        lines.append(f"| {row['attack']} | {row['attackers']} | {row['aggregation']} | {bpb} | {ratio} | {flagged} "
                     f"| {row['rounds_to_flag'] if row['rounds_to_flag'] is not None else '-'} "
                     f"| {row['honest_flagged'] if defended else '-'} |")
    return head + "\n".join(lines) + "\n"


def write_chart(report: dict[str, Any], out: Path, attackers: int = 3) -> None:
    """attacks_bpb.png: val bpb per round, clean vs each attack at ``attackers``, undefended (dashed) and defended."""
    runs = report["runs"]
    curves, dashed = [], set()
    for r in runs:
        if r["attackers"] not in (0, attackers) or (r["attackers"] == 0 and r["aggregation"] != "mean"):
            continue
        if r["attackers"] and r["aggregation"] not in ("mean", report["defence"]):
            continue
        defence = "no defence" if r["aggregation"] == "mean" else r["aggregation"]
        label = "clean" if r["attackers"] == 0 else f"{r['attack']} ({defence})"
        pts = [(i, min(v, CHART_CAP) if v is not None else CHART_CAP) for i, v in enumerate(r["val_bpb"])][1:]
        curves.append((label, pts))
        if r["aggregation"] == "mean" and r["attackers"]:
            dashed.add(label)
    (out / "attacks_bpb.png").write_bytes(line_chart(
        f"Val bits per byte, {attackers} of {report['config']['replicas']} replicas attacking "
        f"(dashed: no defence; capped at {CHART_CAP:g})",
        curves, x_label="round", y_label="bits per byte", dashed=dashed, width=760, height=420, y_zero=False, markers=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm bench attacks", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/attacks"), help="folder for attacks.json, .md and .png")
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inner-steps", type=int, default=20, help="H, inner steps per replica and round")
    parser.add_argument("--model", default="micro", choices=sorted(MODELS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--attackers", nargs="+", type=int, default=[1, 3], help="attacker counts besides the clean run")
    parser.add_argument("--defences", nargs="+", default=["centered_clip"], choices=["centered_clip", "trimmed_mean"])
    parser.add_argument("--eval-batches", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side, one thread each")
    return parser


def main(argv: list[str] | None = None) -> int:
    global _CORPUS
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = QualityConfig(spec=MODELS[args.model], replicas=args.replicas, rounds=args.rounds, inner_steps=args.inner_steps,
                        hp=replace(Hyperparameters(), batch_size=args.batch_size), seed=args.seed, eval_batches=args.eval_batches)
    t0 = time.perf_counter()
    _CORPUS = load_corpus()
    tasks = [(cfg, a, n, agg) for a, n, agg in plan(args.attacks, args.attackers, args.defences)]
    if args.jobs <= 1:
        runs = [_one(t) for t in tasks]
    else:
        with mp.get_context("fork").Pool(args.jobs) as pool:
            runs = pool.map(_one, tasks, chunksize=1)
    with torch.device("meta"):
        params = GPT(cfg.spec).num_params()
    report = {"command": "swarm bench attacks " + " ".join(sys.argv[1:] if argv is None else argv),
              "config": {**asdict(cfg), "params": params}, "codec": "fp16", "defence": args.defences[0], "runs": runs}
    report["summary"] = summarize(runs)
    report["wall_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attacks.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown_table(report)
    (args.out / "attacks.md").write_text(table)
    write_chart(report, args.out)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
