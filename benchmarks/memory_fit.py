"""Which model a volunteer's GPU trains: the estimate ``swarm join --check`` uses, for the presets and
GPT-2's larger shapes, on cards of 8 / 16 / 24 / 80 GB, and the RAM the node needs beside the card
(docs/models.md has the table and the reasons; a CPU node needs both parts in its RAM).

    python -m benchmarks.memory_fit [--batch 16]

Arithmetic only (``node.policies.model_size``): nothing is allocated. The measured side of the
estimate is issue 24's size benchmark.
"""
from __future__ import annotations

import argparse

from node.model.gpt import GPT2_VOCAB, PRESETS
from node.policies.model_size import fitting_setup, memory_need, param_count
from protocol import ModelSpec

SHAPES = {  # the presets, and GPT-2's larger family on paper
    **PRESETS,
    "gpt2-medium (paper)": ModelSpec("x", n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=GPT2_VOCAB),
    "gpt2-large (paper)": ModelSpec("x", n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=GPT2_VOCAB),
    "gpt2-xl (paper)": ModelSpec("x", n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=GPT2_VOCAB),
}
MEMORY_GB = (8, 16, 24, 80)


def _setup(spec: ModelSpec, batch: int, gb: float) -> str:
    fit = fitting_setup(spec, batch, gb, device="cuda")
    if fit is None:
        return "no"
    k, checkpointing = fit
    return "yes" + (f", {k} micro-batches" if k > 1 else "") + (", checkpointing" if checkpointing else "")


def table(batch: int) -> str:
    rows = ["| model | parameters | GPU memory (1 micro-batch) | RAM beside it | "
            + " | ".join(f"{g} GB card" for g in MEMORY_GB) + " |", "|---|---|---|---|" + "---|" * len(MEMORY_GB)]
    for name, spec in SHAPES.items():
        need = memory_need(spec, batch)
        cells = [_setup(spec, batch, g) for g in MEMORY_GB]
        rows.append(f"| `{name}` | {param_count(spec) / 1e6:.1f}M | {need.training_gb:.1f} GB | {need.host_gb:.1f} GB | "
                    + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory_fit", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16, help="sequences per inner step (the manifest's batch_size)")
    print(table(p.parse_args(argv).batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
