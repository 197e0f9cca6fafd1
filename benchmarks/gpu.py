"""The GPU path, measured: tokens/s and model FLOPs utilization (MFU) of the inner phase in bf16, the
outer step's cost, and data-parallel scaling over the devices present (the node's own
``--devices`` group, ``node/train/ddp.py``).

    python -m benchmarks.gpu                   # on a GPU machine: gpt2-124m, bf16, every GPU present
    python -m benchmarks.gpu --compile         # the inner phase under torch.compile as well
    python -m benchmarks.gpu --smoke           # on a CPU: the tiny preset, a few steps, 2 gloo ranks

Every figure is printed as one line and, at the end, as one JSON object (``--json PATH`` writes it).
The inner steps are the trainer's own (``node.train.diloco.inner_step``, bf16 autocast on CUDA), the
outer step is the trainer's (pseudo-gradient, then Nesterov SGD on the fp32 global copy on the CPU),
the data-parallel steps are ``LocalGroup.step``. MFU = tokens/s x training FLOPs per token
(``node.policies.model_size.train_flops_per_token``) / the card's dense bf16 peak (the table below;
an unknown card gets no MFU rather than a guessed one). The smoke mode runs in the suite
(tests/benchmarks/test_gpu_smoke.py) so the script keeps working on machines without a GPU.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from node.model.gpt import GPT, preset
from node.policies.model_size import param_count, train_flops_per_token
from node.train.ddp import LocalGroup
from node.train.diloco import inner_optimizer, inner_step, outer_optimizer, outer_step, pseudo_gradient
from protocol import Hyperparameters, RunManifest

# dense bf16 tensor-core peaks, FLOP/s (vendor data sheets; SXM parts where both exist)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "RTX 4090": 165e12, "RTX 3090": 71e12}


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _batch(spec: Any, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, spec.vocab_size, (batch, spec.block_size), device=device)
    return x, torch.roll(x, -1, dims=1)


def inner_phase(spec: Any, hp: Hyperparameters, device: str, steps: int, warmup: int, compile_: bool) -> dict[str, Any]:
    """Tokens/s of the trainer's inner step on one device."""
    torch.manual_seed(0)
    model = GPT(spec).to(device)
    if compile_:
        model = torch.compile(model)  # type: ignore[assignment]
    opt = inner_optimizer(model.parameters(), hp)
    x, y = _batch(spec, hp.batch_size, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        inner_step(model, opt, x, y, lr=hp.inner_lr, grad_clip=hp.grad_clip, device=device)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = inner_step(model, opt, x, y, lr=hp.inner_lr, grad_clip=hp.grad_clip, device=device)
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens_s = steps * hp.batch_size * spec.block_size / seconds
    out = {"tokens_per_s": tokens_s, "step_s": seconds / steps, "loss": float(loss),
           "achieved_tflops": tokens_s * train_flops_per_token(spec) / 1e12}
    if device == "cuda":
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def outer(spec: Any, hp: Hyperparameters, repeats: int) -> dict[str, Any]:
    """The outer step as the trainer takes it: fp32 global copy on the CPU."""
    global_params = [p.detach().float().clone() for p in GPT(spec).parameters()]
    local = [p + 1e-3 for p in global_params]
    opt = outer_optimizer(global_params, hp.outer_lr, hp.outer_momentum)
    t0 = time.perf_counter()
    for _ in range(repeats):
        outer_step(opt, pseudo_gradient(global_params, local))
    return {"outer_step_s": (time.perf_counter() - t0) / repeats}


def data_parallel(spec: Any, hp: Hyperparameters, kind: str, ids: list[int], steps: int, threads: int) -> dict[str, Any]:
    """Tokens/s of one node's data-parallel group over ``ids`` (the whole batch split over them)."""
    manifest = RunManifest(run_id="bench-gpu", model=spec, hparams=hp)
    torch.manual_seed(0)
    device = f"cuda:{ids[0]}" if kind == "cuda" else "cpu"
    model = GPT(spec).to(device)
    opt = inner_optimizer(model.parameters(), hp)
    group = LocalGroup(manifest, kind, ids, threads=threads)
    try:
        group.attach(model, opt)
        group.sync()
        x, y = _batch(spec, hp.batch_size, "cpu")
        group.step(x, y, hp.inner_lr)  # warm-up
        _sync(kind)
        t0 = time.perf_counter()
        for _ in range(steps):
            group.step(x, y, hp.inner_lr)
        _sync(kind)
        seconds = time.perf_counter() - t0
    finally:
        group.close()
    return {"devices": len(ids), "tokens_per_s": steps * hp.batch_size * spec.block_size / seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU smoke mode: tiny preset, a few steps, 2 gloo ranks")
    p.add_argument("--preset", default=None, help="model preset (default gpt2-124m; tiny with --smoke)")
    p.add_argument("--batch", type=int, default=None, help="sequences per inner step (default 8; 2 with --smoke)")
    p.add_argument("--steps", type=int, default=None, help="timed inner steps (default 20; 2 with --smoke)")
    p.add_argument("--compile", action="store_true", help="also time the inner phase under torch.compile")
    p.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not a.smoke
    device = "cuda" if cuda else "cpu"
    spec = preset(a.preset or ("tiny" if a.smoke else "gpt2-124m"))
    steps = a.steps or (2 if a.smoke else 20)
    hp = Hyperparameters(batch_size=a.batch or (2 if a.smoke else 8))
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    figures: dict[str, Any] = {"device": name, "preset": spec.preset, "params": param_count(spec),
                               "batch": hp.batch_size, "block": spec.block_size, "dtype": "bf16" if cuda else "fp32"}
    print(f"{name}: {spec.preset} ({param_count(spec) / 1e6:.1f}M), batch {hp.batch_size} x {spec.block_size}", flush=True)
    figures["inner"] = inner_phase(spec, hp, device, steps, warmup=1 if a.smoke else 3, compile_=False)
    if a.compile:
        figures["inner_compiled"] = inner_phase(spec, hp, device, steps, warmup=3, compile_=True)
    peak = peak_flops(name) if cuda else None
    for key in ("inner", "inner_compiled"):
        if key in figures:
            f = figures[key]
            f["mfu"] = f["achieved_tflops"] * 1e12 / peak if peak else None
            mfu = f"{100 * f['mfu']:.1f} %" if f["mfu"] is not None else "n/a (no peak for this device)"
            print(f"{key}: {f['tokens_per_s']:,.0f} tokens/s, {f['step_s'] * 1e3:.1f} ms/step, "
                  f"{f['achieved_tflops']:.2f} TFLOP/s, MFU {mfu}", flush=True)
    figures["outer"] = outer(spec, hp, repeats=2 if a.smoke else 5)
    print(f"outer step: {figures['outer']['outer_step_s'] * 1e3:.1f} ms", flush=True)
    ids = list(range(torch.cuda.device_count())) if cuda else [0, 1]
    if len(ids) > 1:
        dp = data_parallel(spec, hp, device, ids, steps, threads=1)
        dp["scaling"] = dp["tokens_per_s"] / (len(ids) * figures["inner"]["tokens_per_s"])
        figures["data_parallel"] = dp
        print(f"data-parallel over {len(ids)} {device} device(s): {dp['tokens_per_s']:,.0f} tokens/s "
              f"({100 * dp['scaling']:.0f} % of linear)", flush=True)
    else:
        print("data-parallel: one device present, skipped", flush=True)
    print(json.dumps(figures), flush=True)
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
