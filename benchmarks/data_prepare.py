"""``swarm data prepare`` at scale: a generated corpus of ``--gb`` GB -> token shards, peak memory.

1. Generate the corpus into a temp folder: files of 16 MiB of Zipf-distributed synthetic words
   (a 30,000-word vocabulary, lines of 8-20 words), written block by block (bounded memory).
2. Run ``python -m node data prepare`` on it as a subprocess, once per ``--vocab``, and read the
   child's peak resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it exits: the
   maximum over the children so far, so a later run that peaks lower reports an upper bound).
3. Load the prepared folder as a node does and time 1,000 training batches drawn from its shards.

Prints one JSON object (figures for BENCHMARKS.md). Disk: the corpus plus its shards (~2.5x --gb).

    python benchmarks/data_prepare.py --gb 1                     # bytes
    python benchmarks/data_prepare.py --gb 1 --vocab bytes bpe:8192
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FILE_BYTES = 16 * 1024 * 1024
REPO = Path(__file__).resolve().parent.parent


def generate(root: Path, total_bytes: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    vocab = np.array(["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(30_000)])
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    p = 1.0 / ranks
    p /= p.sum()
    root.mkdir(parents=True, exist_ok=True)
    written, i = 0, 0
    while written < total_bytes:
        with open(root / f"doc-{i:05d}.txt", "w") as f:
            size = 0
            while size < min(FILE_BYTES, total_bytes - written):
                words = vocab[rng.choice(len(vocab), size=200_000, p=p)]
                lengths = rng.integers(8, 21, size=len(words) // 8)
                cuts = np.cumsum(lengths)
                cuts = cuts[cuts < len(words)]
                text = "\n".join(" ".join(line) for line in np.split(words, cuts)) + "\n"
                f.write(text)
                size += len(text)
        written += size
        i += 1
    return written


def run_prepare(corpus: Path, out: Path, vocab: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "node", "data", "prepare", str(corpus), "--out", str(out), "--vocab", vocab],
                          capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"prepare failed: {done.stderr[-2000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads(done.stdout)
    return {
        "vocab": vocab, "seconds": round(seconds, 1), "text_mb_per_s": round(summary["text_bytes"] / seconds / 1e6, 1),
        # the maximum over all children so far: meaningful when it grew, an upper bound otherwise
        "peak_rss_mib": round(peak_kib / 1024, 1), "peak_rss_is_upper_bound": peak_kib == before and before > 0,
        "tokens_train": summary["tokens"]["train"], "tokens_val": summary["tokens"]["val"],
        "shards": len(summary["train"]) + len(summary["val"]), "content_hash": summary["content_hash"][:16],
        "shard_bytes": sum((out / s["file"]).stat().st_size for s in summary["train"] + summary["val"]),
    }


def train_batches(out: Path, n: int = 1000) -> dict:
    import torch

    from node.data.load import load_corpus

    from node.data.sampler import ByteSampler

    t0 = time.perf_counter()
    corpus = load_corpus(out)
    load_s = time.perf_counter() - t0
    sampler = ByteSampler.for_node(corpus.train, 1024, 16, "bench", "peer")
    t0 = time.perf_counter()
    for r in range(n):
        if r % 100 == 0:
            sampler.start_round(r // 100)
        x, _ = sampler.batch()
    assert x.shape == (16, 1024) and x.dtype == torch.int64
    return {"load_and_verify_s": round(load_s, 1), "batches_per_s": round(n / (time.perf_counter() - t0), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0, help="corpus size in GB (1e9 bytes)")
    parser.add_argument("--vocab", nargs="+", default=["bytes"], help="bytes and/or bpe:N")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir, removed afterwards")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="capaswarm-prepare-"))
    try:
        t0 = time.perf_counter()
        size = generate(work / "corpus", int(args.gb * 1e9))
        result = {"corpus_bytes": size, "generate_s": round(time.perf_counter() - t0, 1), "runs": []}
        for vocab in args.vocab:
            out = work / ("shards-" + vocab.replace(":", "-"))
            run = run_prepare(work / "corpus", out, vocab)
            run.update(train_batches(out))
            result["runs"].append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
            shutil.rmtree(out)
        print(json.dumps(result, indent=1))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
