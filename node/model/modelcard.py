"""The model card (README.md of an export): what the model is, how it was trained, who paid for it.

Pure text from what an export knows: the checkpoint (run, manifest, round, the node's validation
curve) and, when the coordinator was reachable, its ledger (compute, $, contributors as certified).
"""
from __future__ import annotations

import time
from typing import Any

from node.model.export import Checkpoint

__all__ = ["render_card"]


def _num(x: float | None, fmt: str = "{:,.3f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _curve(history: list[Any], rows: int = 24) -> list[str]:
    """The validation curve as a Markdown table, thinned to about ``rows`` rows (first and last kept)."""
    if not history:
        return ["No validation measurements were recorded in this checkpoint."]
    step = max(1, len(history) // rows)
    picked = history[::step]
    if picked[-1] is not history[-1]:
        picked.append(history[-1])
    out = ["| round | tokens this node contributed | validation bits/token |", "|---:|---:|---:|"]
    out += [f"| {r} | {t:,} | {v:.4f} |" for r, t, v in picked]
    return out


def render_card(ckpt: Checkpoint, *, certificate: dict[str, Any] | None = None, swarm: dict[str, Any] | None = None,
                coordinator_note: str = "") -> str:
    """``certificate``: the opened certificate's fields; ``swarm``: the coordinator's ``state.swarm``."""
    m, spec = ckpt.manifest, ckpt.spec
    extra = ckpt.extra or {}
    n_params = sum(p.numel() for p in ckpt.params)
    unit = "byte" if ckpt.tokenizer is None or ckpt.tokenizer.is_bytes else "token"
    lines = [
        f"# {ckpt.run_id or 'capaswarm model'}",
        "",
        "A GPT-2-architecture language model pre-trained by a capaswarm swarm of volunteered GPUs",
        "(DiLoCo over hivemind). Load it with `transformers.GPT2LMHeadModel.from_pretrained(this_folder)` and",
        "`AutoTokenizer.from_pretrained(this_folder)`, or sample with `swarm generate this_folder`.",
        "",
        "## Run",
        "",
        "| | |", "|---|---|",
        f"| run id | `{ckpt.run_id}` |",
        f"| manifest hash | `{ckpt.manifest_hash}` |",
        f"| round | {ckpt.round} |",
        f"| state hash | `{ckpt.state_hash}` |",
        f"| model | {spec.preset}: {spec.n_layer} layers, {spec.n_head} heads, width {spec.n_embd}, "
        f"context {spec.block_size}, vocabulary {spec.vocab_size} ({n_params:,} parameters) |",
        "| vocabulary | " + ("bytes (id = byte value)" if unit == "byte"
                             else "byte-level BPE trained on the corpus (tokenizer.json)") + " |",
    ]
    if m is not None:
        lines += [
            f"| algorithm | {m.algorithm}, codec {m.codec}, {m.round_tokens:,} tokens per round |",
            f"| tokens trained (rounds x tokens per round) | {ckpt.round * m.round_tokens:,} |",
            f"| data | {m.data.source}{', sha256 ' + m.data.sha256[:16] + '...' if getattr(m.data, 'sha256', '') else ''} |",
        ]
        init = getattr(m, "init_sha256", "")
        if init:
            lines.append(f"| initialised from | checkpoint sha256 `{init}` |")
    lines += ["", f"## Validation (bits per {unit}, measured by the exporting node on its held-out split)", ""]
    lines += _curve(list(extra.get("val_history") or []))
    lines += ["", "## Compute and cost", ""]
    if swarm is not None:
        lines += [
            "| | |", "|---|---|",
            f"| tokens (ledger) | {swarm.get('tokens', 0):,} ({swarm.get('confirmed_tokens', 0):,} confirmed) |",
            f"| compute | {_num(swarm.get('compute_hours'))} node-hours, {_num(swarm.get('gpu_hours'))} GPU-hours |",
            f"| spent | ${_num(swarm.get('usd'), '{:,.2f}')} "
            f"(${_num(swarm.get('usd_per_million_tokens'), '{:,.4f}')} per 1M tokens) |",
        ]
    else:
        lines.append(f"Not included: {coordinator_note or 'exported without --coordinator, so the ledger was not consulted'}.")
    lines += ["", "## Contributors", ""]
    if certificate is not None:
        lines += [
            f"As of round {certificate['round']}, signed by the run key `{certificate['signer']}` "
            "(see `certificate.capaswarm`; check it with `swarm certificate verify`).",
            "",
            "| contributor | peer id | confirmed tokens | GPU-hours |", "|---|---|---:|---:|",
        ]
        lines += [f"| {c['public_name'] or 'anonymous'} | `{c['peer_id'][:20]}...` | {c['confirmed_tokens']:,} "
                  f"| {c['gpu_hours']:.3f} |" for c in certificate["contributors"]]
    else:
        lines.append(f"Not included: {coordinator_note or 'exported without --coordinator, so the ledger was not consulted'}.")
    lines += ["", f"_Exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `swarm export`._", ""]
    return "\n".join(lines)
