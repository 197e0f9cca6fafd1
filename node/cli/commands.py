"""The offline model commands behind ``swarm export``, ``swarm generate``, ``swarm certificate`` and
``swarm data``: argument handling and one-line errors; the work lives in the modules they call."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["add_model_commands", "run_model_command"]

logger = logging.getLogger("swarm")
MODEL_COMMANDS = ("export", "generate", "certificate", "data")


def add_model_commands(sub: Any) -> None:
    export = sub.add_parser("export", help="write the global model in the Hugging Face GPT-2 layout")
    export.add_argument("--state-dir", "--state_dir", dest="state_dir", type=Path, required=True, help="a node's state dir")
    export.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    export.add_argument("--manifest", type=Path, help="the run manifest, for checkpoints that do not carry it")
    export.add_argument("--coordinator", help="coordinator URL: fetch a signed certificate and the ledger for the card")

    gen = sub.add_parser("generate", help="sample text from an export folder or a state dir")
    gen.add_argument("model", type=Path, help="export folder or state dir")
    gen.add_argument("--prompt", default="")
    gen.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-k", "--top_k", dest="top_k", type=int, default=50)
    gen.add_argument("--seed", type=int, default=0)

    cert = sub.add_parser("certificate", help="attribution certificates signed by the run key")
    csub = cert.add_subparsers(dest="action", required=True)
    verify = csub.add_parser("verify", help="check a certificate offline")
    verify.add_argument("file", type=Path)
    verify.add_argument("--run-key", "--run_key", dest="run_key", help="the run key's fingerprint to pin (12D3KooW...)")
    verify.add_argument("--export", type=Path, help="also check that this export folder is the certified checkpoint")
    fetch = csub.add_parser("fetch", help="download a certificate from the coordinator")
    fetch.add_argument("--coordinator", required=True)
    fetch.add_argument("--state-hash", "--state_hash", dest="state_hash", default="", help="the checkpoint (default: latest)")
    fetch.add_argument("--peer", default="", help="only this peer's row (a volunteer's own certificate)")
    fetch.add_argument("--out", type=Path, required=True)

    data = sub.add_parser("data", help="prepare a corpus as memory-mapped token shards")
    dsub = data.add_subparsers(dest="action", required=True)
    prep = dsub.add_parser("prepare", help="text files -> token shards (+ tokenizer.json for BPE)")
    prep.add_argument("inputs", nargs="+", type=Path, help="text files or folders")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--vocab", default="bytes", help="bytes, or bpe:N to train an N-id BPE vocabulary here")
    prep.add_argument("--val-fraction", "--val_fraction", dest="val_fraction", type=float, default=0.05)
    prep.add_argument("--shard-tokens", "--shard_tokens", dest="shard_tokens", type=int, default=64 * 1024 * 1024)


def _get(url: str, path: str, query: dict[str, str] | None = None, timeout: float = 30.0) -> bytes:
    full = url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(full, timeout=timeout) as response:
        return response.read(16 * 1024 * 1024)


def fetch_certificate(coordinator: str, state_hash: str = "", peer: str = "") -> bytes:
    query = {k: v for k, v in (("state_hash", state_hash), ("peer", peer)) if v}
    try:
        return _get(coordinator, "/api/v1/certificate", query)
    except urllib.error.HTTPError as e:
        detail = e.read(4096).decode(errors="replace")
        try:
            detail = json.loads(detail).get("detail", detail)
        except ValueError:
            pass
        raise ValueError(f"the coordinator refused a certificate ({e.code}): {detail}") from None


def _export(args: argparse.Namespace) -> int:
    from node.model.certificates import describe
    from node.model.export import load_checkpoint_dir, write_export
    from node.uplink.manifests import load_manifest_file
    from node.model.modelcard import render_card

    manifest = load_manifest_file(args.manifest) if args.manifest else None
    ckpt = load_checkpoint_dir(args.state_dir, manifest)
    certificate = swarm = None
    note = ""
    if args.coordinator:
        try:
            blob = fetch_certificate(args.coordinator, ckpt.state_hash)
            certificate = describe(blob)
            (args.out).mkdir(parents=True, exist_ok=True)
            (args.out / "certificate.capaswarm").write_bytes(blob)
            swarm = json.loads(_get(args.coordinator, "/api/v1/state"))["swarm"]
        except (OSError, ValueError) as e:
            note = f"the coordinator at {args.coordinator} gave no certificate ({e})"
            logger.warning("%s; the card says so", note)
    weights = write_export(ckpt, args.out, render_card(ckpt, certificate=certificate, swarm=swarm, coordinator_note=note))
    print(f"exported round {ckpt.round} (state {ckpt.state_hash[:16]}...) to {args.out} "
          f"({weights.stat().st_size:,} bytes of weights)")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from node.model.generate import load_any, sample

    ckpt = load_any(args.model)
    text = sample(ckpt.model(), ckpt.tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                  temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    sys.stdout.write(args.prompt + text + "\n")
    return 0


def _certificate(args: argparse.Namespace) -> int:
    from node.model.certificates import check_export, verify_file

    if args.action == "fetch":
        blob = fetch_certificate(args.coordinator, args.state_hash, args.peer)
        args.out.write_bytes(blob)
        print(f"wrote {args.out} ({len(blob)} bytes)")
        return 0
    cert = verify_file(args.file, args.run_key)
    print(f"valid: run {cert['run_id']!r}, round {cert['round']}, state {cert['state_hash'][:16]}..., "
          f"{len(cert['contributors'])} contributor(s), signed by {cert['signer']}"
          + ("" if args.run_key else " (signer not pinned: pass --run-key to check it is the run's key)"))
    if args.export:
        check_export(cert, args.export)
        print(f"{args.export} is the certified checkpoint")
    return 0


def _data(args: argparse.Namespace) -> int:
    from node.data.shards import prepare

    summary = prepare(args.inputs, args.out, vocab=args.vocab, val_fraction=args.val_fraction, shard_tokens=args.shard_tokens)
    print(json.dumps(summary, indent=1))
    return 0


def run_model_command(args: argparse.Namespace) -> int:
    from node.model.export import ExportError
    from protocol import ProtocolError

    handler = {"export": _export, "generate": _generate, "certificate": _certificate, "data": _data}[args.command]
    try:
        return handler(args)
    except (ExportError, ProtocolError, ValueError, OSError) as e:
        if args.verbose:
            logger.exception("swarm %s failed", args.command)
        logger.error("%s", e)
        return 2
