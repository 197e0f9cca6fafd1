"""What a commitment to an update costs (issue 23 item 1): a hash of every all-reduce part a member
sends, after the codec, at a model's real size, beside what encoding the parts costs anyway.

    python -m benchmarks.commit_cost [--model gpt2-124m] [--codecs fp16,q2ef,topk2ef] [--seed 0]

The update is random normal fp32 values, one per parameter of the model, cut into the all-reduce's
parts of ``PART_VALUES`` values (as the averager cuts them); each part is encoded with the codec
(``Codec.encode``: the uplink bytes a reducer receives) and hashed with SHA-256 and BLAKE2b. A row:
the codec, the bytes on the wire, the encoding's seconds, each hash's seconds, and the hash's share
of the encoding. Nothing is sent; one process, one thread for the hashes (hashlib releases the GIL,
so a node could hash on another core while it encodes).
"""
from __future__ import annotations

import argparse
import hashlib
import time

import torch

from node.averaging.codecs import CODECS, PART_VALUES, get_codec
from node.model.gpt import PRESETS
from node.policies.model_size import param_count

HASHES = {"sha256": hashlib.sha256, "blake2b": hashlib.blake2b}


def encoded_parts(codec: str, values: torch.Tensor) -> tuple[list[bytes], float]:
    """Every part's uplink bytes, and the seconds encoding took."""
    c = get_codec(codec)
    c.encode(values[:PART_VALUES])  # warm-up: hivemind's codecs import hivemind on first use
    started = time.perf_counter()
    parts = [c.encode(p) for p in values.split(PART_VALUES)]
    return parts, time.perf_counter() - started


def part_digests(parts: list[bytes], algorithm: str) -> tuple[list[bytes], float]:
    """One digest per part (what a commitment lists), and the seconds hashing took."""
    make = HASHES[algorithm]
    started = time.perf_counter()
    digests = [make(p).digest() for p in parts]
    return digests, time.perf_counter() - started


def measure(model: str, codecs: list[str], seed: int = 0) -> list[dict[str, float | str | int]]:
    n = param_count(PRESETS[model])
    values = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 1e-3
    rows: list[dict[str, float | str | int]] = []
    for codec in codecs:
        parts, encode_s = encoded_parts(codec, values)
        row: dict[str, float | str | int] = {"codec": codec, "parts": len(parts), "wire_mb": sum(map(len, parts)) / 1e6,
                                             "encode_s": encode_s}
        for algorithm in HASHES:
            _, row[f"{algorithm}_s"] = part_digests(parts, algorithm)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.commit_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gpt2-124m", choices=sorted(PRESETS))
    ap.add_argument("--codecs", default=",".join(CODECS), help="comma-separated codec names")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    codecs = [c for c in args.codecs.split(",") if c]
    for c in codecs:
        get_codec(c)  # an unknown name fails here, before any work
    n = param_count(PRESETS[args.model])
    parts = -(-n // PART_VALUES)
    print(f"{args.model}: {n / 1e6:.1f}M values, {parts} parts of {PART_VALUES} values, {torch.get_num_threads()} torch "
          f"threads; a commitment lists {parts} digests of 32 bytes ({parts * 32 / 1e3:.1f} kB) whatever the codec")
    print("| codec | parts | on the wire | encode | sha256 | blake2b | sha256 / encode |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in measure(args.model, codecs, args.seed):
        print(f"| {r['codec']} | {r['parts']} | {r['wire_mb']:.1f} MB | {r['encode_s']:.2f} s | {r['sha256_s']:.3f} s "
              f"| {r['blake2b_s']:.3f} s | {float(r['sha256_s']) / max(float(r['encode_s']), 1e-9):.0%} |")


if __name__ == "__main__":
    main()
