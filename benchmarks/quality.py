"""Token-space quality: DiLoCo with each wire codec vs data-parallel training, at one token budget.

    python -m benchmarks.quality --out bench-out/quality          # or: swarm bench quality --out ...

k replicas of the real ``GPT`` train in one process, with no network and no clock, so a seed fixes
every number. Each round, as ``node.train.trainer.Trainer`` does it:

1. every replica takes H inner AdamW steps (warmup by its own step count, gradient clipping) on
   its own ``ByteSampler`` stream;
2. pseudo-gradient = global - local; with an error-feedback codec it first goes through
   ``ErrorFeedback.apply`` (the node's residuals, carried across rounds);
3. the butterfly all-reduce of ``node.averaging.runner``, minus the sockets: hivemind's own
   ``TensorPartContainer`` cuts every vector into the parts each reducer owns; reducer j averages
   its parts weighted by tokens, taking remote senders' parts through the uplink
   (``WireCodec.compress`` then ``extract``) and its own part raw, as hivemind does; then the
   average goes through the downlink (``compress_down`` then ``extract``) and every member gets
   exactly that;
4. the outer step: torch SGD with Nesterov momentum (or the codec's own outer optimizer,
   ``protocol.manifest.CODEC_OUTER``) on an fp32 copy of the global parameters; replicas restart from it.
Steps 1, 2 and 4 are ``node.train.diloco``'s functions, the very ones the trainer calls. Validation bits
per byte of the global model after every round.

References at the same token budget: "DiLoCo none" (no compression), and the data-parallel
baseline: one model, AdamW, batches of k x B sequences (one batch from each replica's stream),
hence one step per k replica-steps and H x rounds steps in all.

Bytes are payload bytes counted from the very encodings (top-k's downlink: all non-zeros of the
average). Per peer, a round sends its uplink parts to the other reducers and, as a reducer,
k - 1 copies of each averaged part it owns: about 2(k-1)/k x payload. Data parallelism with fp32
gradients at every step sends steps x 2(k-1)/k x 4 B x params per peer.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import multiprocessing as mp
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.suites.charts import line_chart
from node.averaging.wire import WireCodec, make_codec
from node.averaging.codecs import CODECS, ErrorFeedback, quantize_roundtrip
from node.data.corpus import Corpus
from node.data.load import load_corpus
from node.data.sampler import ByteSampler, evaluate_bpb
from node.train.diloco import inner_optimizer, inner_step, outer_optimizer, outer_step, pseudo_gradient, warmup_lr
from node.model.gpt import GPT, PRESETS
from node.averaging.robust import MemberStats, aggregate
from protocol import Hyperparameters, ModelSpec
from protocol.manifest import CODEC_OUTER

__all__ = [
    "MODELS", "QualityConfig", "all_reduce", "build_parser", "deterministic", "main", "run_all", "run_baseline", "run_diloco",
    "summarize",
]

logger = logging.getLogger(__name__)

# node.model.gpt's presets, plus one small enough to run every codec for 2,000 steps per replica on two CPU cores
MODELS: dict[str, ModelSpec] = {**PRESETS, "micro": ModelSpec("micro", n_layer=2, n_head=2, n_embd=64, block_size=64)}


@dataclass(frozen=True)
class QualityConfig:
    spec: ModelSpec = field(default_factory=lambda: MODELS["tiny"])
    replicas: int = 4  # k
    rounds: int = 12
    inner_steps: int = 125  # H, per replica and round (the mean, with hetero)
    hp: Hyperparameters = field(default_factory=Hyperparameters)  # batch_size = B, sequences per inner step
    seed: int = 0  # initial weights; the replicas' streams derive from it too
    eval_batches: int = 32  # evaluate_bpb batches of 16 windows
    hetero: bool = False  # replicas' speeds spread over 0.5..1.5 x the mean (tokens differ, weights follow)

    @property
    def tokens_per_round(self) -> int:
        return sum(self.steps_per_replica()) * self.hp.batch_size * self.spec.block_size

    def steps_per_replica(self) -> list[int]:
        """Inner steps of each replica per round: H each, or speeds 0.5..1.5 summing to k x H."""
        k, h = self.replicas, self.inner_steps
        if not self.hetero or k == 1:
            return [h] * k
        speeds = np.linspace(0.5, 1.5, k)
        exact = speeds / speeds.sum() * k * h
        steps = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - steps), kind="stable")[: k * h - steps.sum()]:  # largest remainders
            steps[i] += 1
        return [max(1, int(s)) for s in steps]


@contextlib.contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """One thread and deterministic kernels for the block; the previous settings come back after."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def _samplers(cfg: QualityConfig, corpus: Corpus) -> list[ByteSampler]:
    return [ByteSampler.for_node(corpus.train, cfg.spec.block_size, cfg.hp.batch_size, f"quality-{cfg.seed}", f"replica-{i}")
            for i in range(cfg.replicas)]


def _evaluate(model: GPT, cfg: QualityConfig, val: np.ndarray) -> float:
    return evaluate_bpb(model, val, cfg.spec.block_size, "cpu", batches=cfg.eval_batches)


def _alt_windows(val: np.ndarray) -> np.ndarray:
    """The same validation bytes rotated by half: evaluate_bpb's fixed windows land elsewhere."""
    return np.roll(val, len(val) // 2)


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


@dataclass
class Exchange:
    """One all-reduce: what every member receives, and what it cost."""

    averaged: list[torch.Tensor]
    sent: list[int]  # payload bytes each peer sent
    up_bytes: int = 0  # payload of every uplink part (all senders), and the values they carried
    up_values: int = 0
    down_bytes: int = 0  # payload of every averaged part, once
    up_sq_err: float = 0.0  # sum of squared uplink errors over remote parts, and of squared inputs
    up_sq: float = 0.0
    down_sq_err: float = 0.0
    down_sq: float = 0.0
    stats: list[list[MemberStats]] = field(default_factory=list)  # robust: [reducer][sender]


def _payload(wire: WireCodec, msg: Any) -> int:
    return msg.ByteSize() if wire.codec.kind == "hivemind" else len(msg.buffer)


@torch.no_grad()
def all_reduce(wire: WireCodec, inputs: list[list[torch.Tensor]], weights: list[float], aggregation: str = "mean") -> Exchange:
    """The exact-average butterfly of ``node.averaging.runner.ExactAverageRunner`` between in-process members.

    With a robust ``aggregation`` each reducer combines the parts it received with
    ``node.averaging.robust.aggregate`` (as ``RobustPartReducer`` does), and ``Exchange.stats[j]`` holds what
    reducer j saw of each sender."""
    from hivemind.averaging.partition import TensorPartContainer
    from hivemind.compression import CompressionInfo

    k = len(inputs)
    shares = [TensorPartContainer(x, [1.0] * k, compression=wire) for x in inputs]  # hivemind's own cut
    ex = Exchange(averaged=[], sent=[0] * k)
    ex.stats = [[MemberStats() for _ in range(k)] for _ in range(k)]
    parts_out = []
    for j in range(k):  # reducer j
        own = [c.get_raw_input_parts(j) for c in shares]
        for p in range(len(own[j])):
            received = []
            for s in range(k):
                part = own[s][p]
                if s != j:  # remote sender: through the uplink
                    msg = wire.compress(part, CompressionInfo.from_tensor(part))
                    size = _payload(wire, msg)
                    ex.sent[s] += size
                    ex.up_bytes += size
                    ex.up_values += part.numel()
                    decoded = wire.extract(msg)
                    ex.up_sq_err += float((decoded - part).square().sum())
                    ex.up_sq += float(part.square().sum())
                    part = decoded
                received.append(part)
            if aggregation == "mean":  # hivemind's TensorPartReducer, operation for operation
                acc, denominator = torch.zeros_like(own[j][p]), 0.0
                for s in range(k):
                    acc.add_(received[s], alpha=weights[s])
                    denominator += weights[s]
                acc.div_(denominator)
            else:
                acc, seen = aggregate(received, weights, aggregation)
                for s, (ratio, norm, kept, capped) in enumerate(seen):
                    ex.stats[j][s].add(ratio, norm, kept, capped)
            msg = wire.compress_down(acc)
            size = _payload(wire, msg)
            ex.sent[j] += (k - 1) * size
            ex.down_bytes += size
            out = wire.extract(msg)  # = wire.roundtrip_down(acc), what every member registers
            ex.down_sq_err += float((out - acc).square().sum())
            ex.down_sq += float(acc.square().sum())
            parts_out.append(out)
    flat = torch.cat(parts_out)
    ex.averaged = [t.view_as(x) for t, x in zip(flat.split([x.numel() for x in inputs[0]]), inputs[0])]
    return ex


def _new_run(name: str, cfg: QualityConfig, model: GPT, val: np.ndarray) -> dict[str, Any]:
    return {"name": name, "tokens": [0], "val_bpb": [_evaluate(model, cfg, val)], "train_loss": [], "wall_s": 0.0}


def run_diloco(cfg: QualityConfig, corpus: Corpus, codec_name: str, outer_lr: float | None = None,
               outer_momentum: float | None = None) -> dict[str, Any]:
    """DiLoCo with ``codec_name`` on the wire; the result's ``params`` are the final global parameters.
    The outer optimizer is the one a run of that codec gets (``CODEC_OUTER``) unless given."""
    t0 = time.perf_counter()
    hp, k = cfg.hp, cfg.replicas
    codec_lr, codec_momentum = CODEC_OUTER.get(codec_name, (hp.outer_lr, hp.outer_momentum))
    lr = codec_lr if outer_lr is None else outer_lr
    momentum = codec_momentum if outer_momentum is None else outer_momentum
    wire = make_codec(codec_name)
    torch.manual_seed(cfg.seed)  # round 0: every replica starts from the same weights
    global_model = GPT(cfg.spec)  # holds the global parameters for evaluation
    global_params = [p.detach().float().clone() for p in global_model.parameters()]
    outer = outer_optimizer(global_params, lr, momentum)
    models = [copy.deepcopy(global_model) for _ in range(k)]  # deepcopy keeps the tied embedding tied
    opts = [inner_optimizer(m.parameters(), hp) for m in models]
    samplers, steps_each = _samplers(cfg, corpus), cfg.steps_per_replica()
    tokens_each = [s * hp.batch_size * cfg.spec.block_size for s in steps_each]
    ef = None
    if wire.codec.error_feedback and k > 1:
        ef = [ErrorFeedback(wire.codec, [p.shape for p in global_params]) for _ in range(k)]
    run = _new_run(codec_name, cfg, global_model, corpus.val)
    run.update(outer={"lr": lr, "momentum": momentum}, sent_per_round=[], bytes_per_value_up=[], bytes_per_value_down=[],
               up_rel_err=[], down_rel_err=[])
    ef_sums: dict[str, Any] = {}  # replica 0: sums over rounds of true, sent and plainly quantized pseudo-gradients
    steps_done = [0] * k
    for _ in range(cfg.rounds):
        pseudo_all, losses = [], []
        for i in range(k):
            for _ in range(steps_each[i]):
                x, y = samplers[i].batch()
                loss = inner_step(models[i], opts[i], x, y, lr=warmup_lr(hp, steps_done[i]), grad_clip=hp.grad_clip)
                losses.append(loss.item())
                steps_done[i] += 1
            pseudo = pseudo_gradient(global_params, models[i].parameters())
            if ef is not None:
                decayed = [(1 - wire.codec.ef_decay) * r for r in ef[i].residuals]  # what the decay lets go
                sent = ef[i].apply(pseudo)
                if i == 0:
                    plain = [quantize_roundtrip(wire.codec, g) for g in pseudo]  # what the codec alone would send
                    for key, vec in (("true", pseudo), ("sent", sent), ("without_ef", plain), ("decayed", decayed)):
                        ef_sums[key] = ef_sums.get(key, 0) + _flat(vec)
                pseudo = sent
            pseudo_all.append(pseudo)
        if k == 1:  # alone, the node steps with its own pseudo-gradient (as the trainer does with no peer)
            averaged, sent_bytes = pseudo_all[0], [0]
        else:
            ex = all_reduce(wire, pseudo_all, [float(max(t, 1)) for t in tokens_each])
            averaged, sent_bytes = ex.averaged, ex.sent
            run["bytes_per_value_up"].append(ex.up_bytes / ex.up_values)
            run["bytes_per_value_down"].append(ex.down_bytes / sum(g.numel() for g in global_params))
            run["up_rel_err"].append(math.sqrt(ex.up_sq_err / max(ex.up_sq, 1e-30)))
            run["down_rel_err"].append(math.sqrt(ex.down_sq_err / max(ex.down_sq, 1e-30)))
        outer_step(outer, averaged)
        with torch.no_grad():
            for m in [global_model, *models]:
                for p, g in zip(m.parameters(), global_params):
                    p.copy_(g)
        run["sent_per_round"].append(sent_bytes)
        run["train_loss"].append(sum(losses) / len(losses))
        run["tokens"].append(run["tokens"][-1] + sum(tokens_each))
        run["val_bpb"].append(_evaluate(global_model, cfg, corpus.val))
    run["final_bpb_alt"] = _evaluate(global_model, cfg, _alt_windows(corpus.val))
    run["params"] = global_params
    if ef is not None:
        true, residual = ef_sums["true"], _flat(ef[0].residuals)
        norm = float(true.norm())
        run["error_feedback"] = {
            "drift_with_ef": float((ef_sums["sent"] - true).norm()) / norm,  # |sum sent - sum true| / |sum true|
            "drift_without_ef": float((ef_sums["without_ef"] - true).norm()) / norm,
            "residual_norm": float(residual.norm()) / norm,
            # sum sent + residual + what the decay let go = sum true
            "identity_error": float((ef_sums["sent"] + residual + ef_sums["decayed"] - true).norm()) / norm,
        }
    run["wall_s"] = time.perf_counter() - t0
    logger.info("%s: val bpb %.4f after %d tokens (%.0f s)", codec_name, run["val_bpb"][-1], run["tokens"][-1], run["wall_s"])
    return run


def run_baseline(cfg: QualityConfig, corpus: Corpus) -> dict[str, Any]:
    """Data-parallel training with the same global batch: AdamW on k x B sequences, H x rounds steps."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.spec)
    opt, samplers = inner_optimizer(model.parameters(), cfg.hp), _samplers(cfg, corpus)
    run = _new_run("baseline", cfg, model, corpus.val)
    steps_per_round = sum(cfg.steps_per_replica()) // cfg.replicas
    for r in range(cfg.rounds):
        losses = []
        for s in range(steps_per_round):
            xs, ys = zip(*(sampler.batch() for sampler in samplers))
            lr = warmup_lr(cfg.hp, r * steps_per_round + s)
            losses.append(inner_step(model, opt, torch.cat(xs), torch.cat(ys), lr=lr, grad_clip=cfg.hp.grad_clip).item())
        run["train_loss"].append(sum(losses) / len(losses))
        run["tokens"].append(run["tokens"][-1] + steps_per_round * cfg.replicas * cfg.hp.batch_size * cfg.spec.block_size)
        run["val_bpb"].append(_evaluate(model, cfg, corpus.val))
    run["final_bpb_alt"] = _evaluate(model, cfg, _alt_windows(corpus.val))
    run["params"] = [p.detach().clone() for p in model.parameters()]
    run["steps"] = steps_per_round * cfg.rounds
    run["wall_s"] = time.perf_counter() - t0
    logger.info("baseline: val bpb %.4f after %d tokens (%.0f s)", run["val_bpb"][-1], run["tokens"][-1], run["wall_s"])
    return run


# ------------------------------------------------------------------------------------ the report

# targets of performance-anchors.md section 5.6: bpb vs DiLoCo none; bytes vs DP fp32 at <= +1 % bpb vs the baseline
CODEC_TARGETS_PCT = {"int8": 0.3, "q4": 0.5, "q2ef": 1.0}
BYTES_TARGET, BASELINE_SLACK_PCT = 1600.0, 1.0
TAIL = 4  # evaluations averaged for the "last 4" figure: one final evaluation also carries the round's luck


def _pct(value: float, ref: float) -> float:
    return (value - ref) / ref * 100


def _tail_pct(run: dict[str, Any], ref: dict[str, Any]) -> float:
    """Mean relative difference over the last TAIL evaluations (the curves share their token points)."""
    n = min(TAIL, len(run["val_bpb"]) - 1)
    return sum(_pct(a, b) for a, b in zip(run["val_bpb"][-n:], ref["val_bpb"][-n:])) / n


def summarize(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configuration: final bpb, relative differences, bytes per peer, targets met."""
    cfg, runs = report["config"], report["runs"]
    k, params = cfg["replicas"], cfg["params"]
    steps = cfg["rounds"] * sum(cfg["steps_per_replica"]) // k  # data-parallel steps at the same token budget
    dp_bytes = steps * 2 * (k - 1) / k * 4 * params  # fp32 gradients at every step, per peer
    refs = {ref: runs[ref] for ref in ("none", "baseline") if ref in runs}
    rows = []
    for name, run in runs.items():
        row: dict[str, Any] = {"config": name, "final_bpb": run["val_bpb"][-1], "final_bpb_alt": run["final_bpb_alt"]}
        for ref, ref_run in refs.items():
            row[f"vs_{ref}_pct"] = _pct(row["final_bpb"], ref_run["val_bpb"][-1])
            row[f"vs_{ref}_pct_alt"] = _pct(row["final_bpb_alt"], ref_run["final_bpb_alt"])
            row[f"vs_{ref}_pct_tail"] = _tail_pct(run, ref_run)
        if name == "baseline":
            row.update(bytes_per_peer=dp_bytes, bytes_per_value_up=4.0, bytes_per_value_down=4.0)
        else:
            row["bytes_per_peer"] = sum(sum(r) for r in run["sent_per_round"]) / k
            for way in ("up", "down"):
                values = run[f"bytes_per_value_{way}"]
                row[f"bytes_per_value_{way}"] = sum(values) / len(values) if values else None
        row["reduction_vs_dp"] = dp_bytes / row["bytes_per_peer"] if row["bytes_per_peer"] else None
        if name in CODEC_TARGETS_PCT and "vs_none_pct" in row:
            row["codec_target_pct"] = CODEC_TARGETS_PCT[name]
            row["meets_codec_target"] = row["vs_none_pct"] <= CODEC_TARGETS_PCT[name]
        if name != "baseline" and row["reduction_vs_dp"] and "vs_baseline_pct" in row:
            row["meets_bytes_target"] = row["reduction_vs_dp"] >= BYTES_TARGET and row["vs_baseline_pct"] <= BASELINE_SLACK_PCT
        rows.append(row)
    return rows


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def markdown_table(report: dict[str, Any]) -> str:
    cfg = report["config"]
    head = (f"k = {cfg['replicas']} replicas, H = {cfg['inner_steps']}, {cfg['rounds']} rounds, model {cfg['spec']['preset']} "
            f"({cfg['params']:,} params), B = {cfg['hp']['batch_size']} x {cfg['spec']['block_size']} bytes, "
            f"{cfg['tokens']:,} tokens; eval {report['eval']['bytes']:,} bytes\n\n")
    lines = ["| config | val bpb | vs DiLoCo none | vs DP baseline | B/value up, down | sent per peer | fewer bytes than DP fp32 "
             "| codec target | 1600x at <= +1 % |", "|---|---|---|---|---|---|---|---|---|"]

    def pct(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:+.2f} % (alt {row[key + '_alt']:+.2f}, last {TAIL} {row[key + '_tail']:+.2f})" if key in row else "-"

    def flag(row: dict[str, Any], key: str, label: str = "") -> str:
        return "-" if key not in row else ("yes" if row[key] else "no") + label

    for row in report["summary"]:
        up, down = row["bytes_per_value_up"], row["bytes_per_value_down"]
        per_value = f"{up:.3f}, {down:.3f}" if up is not None else "-"
        reduction = f"{row['reduction_vs_dp']:,.0f}x" if row["reduction_vs_dp"] else "-"
        target = f" (<= +{row['codec_target_pct']} %)" if "codec_target_pct" in row else ""
        lines.append(f"| {row['config']} | {row['final_bpb']:.4f} | {pct(row, 'vs_none_pct')} | {pct(row, 'vs_baseline_pct')} "
                     f"| {per_value} | {_mb(row['bytes_per_peer'])} | {reduction} | {flag(row, 'meets_codec_target', target)} "
                     f"| {flag(row, 'meets_bytes_target')} |")
    note = (f"\n\nRelative differences of the final evaluation; in brackets the same on a second set of windows (alt), "
            f"and the mean over the last {TAIL} evaluations.\n")
    return head + "\n".join(lines) + note


DELTA_SCALE_PCT = 25.0


def write_plots(report: dict[str, Any], out: Path) -> None:
    """quality_bpb.png: val bpb against tokens (from the first round: the start is 8 bpb for all);
    quality_delta.png: the same relative to uncompressed DiLoCo, in %. The first curve (the
    data-parallel baseline when it ran) is drawn dashed."""
    runs = report["runs"]
    names = ["baseline", *[n for n in runs if n != "baseline"]] if "baseline" in runs else list(runs)
    label = {"baseline": "DP baseline", "none": "DiLoCo none"}
    curves = [(label.get(n, n), runs[n]["tokens"][1:], runs[n]["val_bpb"][1:]) for n in names]
    style = dict(x_label="tokens", width=720, height=380, y_zero=False, markers=False)
    (out / "quality_bpb.png").write_bytes(line_chart(
        "Validation bits per byte at equal tokens", [(name, list(zip(xs, ys))) for name, xs, ys in curves],
        y_label="bits per byte", dashed={curves[0][0]}, **style))
    if "none" in runs:
        ref = runs["none"]["val_bpb"][1:]
        deltas = [(name, xs, [_pct(y, r) for y, r in zip(ys, ref)]) for name, xs, ys in curves]
        # the scale follows the curves within +-DELTA_SCALE_PCT; a codec that fails by far more is drawn clipped
        near = [y for _, _, ys in deltas if max(map(abs, ys)) <= DELTA_SCALE_PCT for y in ys] or [0.0]
        deltas = [(name if max(map(abs, ys)) <= DELTA_SCALE_PCT else f"{name} (off scale)", xs, ys) for name, xs, ys in deltas]
        (out / "quality_delta.png").write_bytes(line_chart(
            "Val bpb relative to uncompressed DiLoCo", [(name, list(zip(xs, ys))) for name, xs, ys in deltas],
            y_label="% vs DiLoCo none", y_range=(min(near), max(near)), dashed={deltas[0][0]}, **style))


# ------------------------------------------------------------------------------------ running it all

_CORPUS: Corpus | None = None  # set before forking workers, which share it


def _run_one(task: tuple[QualityConfig, str]) -> dict[str, Any]:
    cfg, name = task
    assert _CORPUS is not None
    with deterministic():
        run = run_baseline(cfg, _CORPUS) if name == "baseline" else run_diloco(cfg, _CORPUS, name)
    run.pop("params")
    return run


def run_all(cfg: QualityConfig, corpus: Corpus, codecs: list[str], jobs: int = 1) -> dict[str, dict[str, Any]]:
    """The baseline and DiLoCo with every codec; ``jobs`` single-threaded processes side by side."""
    global _CORPUS
    _CORPUS = corpus
    tasks = [(cfg, name) for name in ["baseline", *codecs]]
    if jobs <= 1:
        results = [_run_one(t) for t in tasks]
    else:
        with mp.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_run_one, tasks, chunksize=1)
    return {r["name"]: r for r in results}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm bench quality", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/quality"), help="folder for quality.json, .md and .png")
    parser.add_argument("--replicas", type=int, default=4, help="k, DiLoCo replicas (the baseline's batch is k x B)")
    parser.add_argument("--rounds", type=int, default=12, help="outer steps")
    parser.add_argument("--inner-steps", type=int, default=125, help="H, inner steps per replica and round")
    parser.add_argument("--tokens", type=int, default=None, help="token budget; sets --rounds to budget // tokens per round")
    parser.add_argument("--model", default="tiny", choices=sorted(MODELS))
    parser.add_argument("--batch-size", type=int, default=Hyperparameters.batch_size, help="B, sequences per inner step")
    parser.add_argument("--codecs", nargs="+", default=list(CODECS), choices=list(CODECS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-batches", type=int, default=32, help="validation batches of 16 windows per evaluation")
    parser.add_argument("--hetero", action="store_true", help="replicas at speeds 0.5..1.5 x (same total tokens)")
    parser.add_argument("--jobs", type=int, default=1, help="configurations run side by side, one thread each")
    return parser


def config_from_args(args: argparse.Namespace) -> QualityConfig:
    cfg = QualityConfig(spec=MODELS[args.model], replicas=args.replicas, rounds=args.rounds, inner_steps=args.inner_steps,
                        hp=replace(Hyperparameters(), batch_size=args.batch_size), seed=args.seed,
                        eval_batches=args.eval_batches, hetero=args.hetero)
    if args.tokens is not None:
        cfg = replace(cfg, rounds=max(1, args.tokens // cfg.tokens_per_round))
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = config_from_args(args)
    t0 = time.perf_counter()
    corpus = load_corpus()
    runs = run_all(cfg, corpus, list(dict.fromkeys(args.codecs)), jobs=args.jobs)
    with torch.device("meta"):
        params = GPT(cfg.spec).num_params()
    report = {
        "command": "swarm bench quality " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {**asdict(cfg), "params": params, "steps_per_replica": cfg.steps_per_replica(),
                   "tokens": cfg.rounds * cfg.tokens_per_round, "corpus": corpus.fingerprint},
        "eval": {"batches": cfg.eval_batches, "windows": 16 * cfg.eval_batches,
                 "bytes": 16 * cfg.eval_batches * cfg.spec.block_size,
                 "alt": "final model also on the same bytes rotated by half (final_bpb_alt): another set of windows"},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads_per_job": 1, "jobs": args.jobs},
        "runs": runs,
        "wall_s": 0.0,
    }
    report["summary"] = summarize(report)
    report["wall_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown_table(report)
    (args.out / "quality.md").write_text(table)
    write_plots(report, args.out)
    print(table)  # the CLI's output; everything else went to the log
    return 0


if __name__ == "__main__":
    sys.exit(main())
