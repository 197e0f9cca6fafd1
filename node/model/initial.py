"""A run's initial checkpoint: find it, verify its sha256, load it (fine-tuning, transfer).

The manifest names it by ``init_sha256`` (the sha256 of a ``model.safetensors`` in the Hugging
Face GPT-2 layout, as ``swarm export`` writes). Where a node gets the file, first found wins:
``--init-checkpoint`` (a local copy), the manifest's ``init_source`` when it is a local path on
this machine, the coordinator's ``/api/v1/checkpoint/<sha256>`` (with ``--coordinator``), or
``init_source`` when it is an http(s) URL. The hash is checked before the file is parsed; a
download is streamed to disk, hashed on the way, and kept under the state dir only if it matches.
"""
from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from pathlib import Path

import torch

from node.model.export import ExportError, from_hf
from node.model.gpt import GPT
from node.model.tokenizer import sha256_file
from ops.atomic import atomic_file
from protocol import ModelSpec, RunManifest

__all__ = ["InitialCheckpointError", "load_initial", "resolve_initial"]

logger = logging.getLogger(__name__)
MAX_DOWNLOAD = 64 * 1024**3  # bytes; a 124M-parameter fp32 model is ~0.5 GB


class InitialCheckpointError(ValueError):
    """The run's initial checkpoint is missing, unreachable or not the one the manifest names."""


def _download(url: str, dest: Path, sha256: str, timeout: float = 60.0) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    try:  # the file appears at dest only once complete and verified (a failed download leaves nothing)
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_file(dest) as f:
            while block := response.read(1 << 20):
                size += len(block)
                if size > MAX_DOWNLOAD:
                    raise InitialCheckpointError(f"{url} sends more than {MAX_DOWNLOAD} bytes; not a checkpoint")
                h.update(block)
                f.write(block)
            if h.hexdigest() != sha256:
                raise InitialCheckpointError(f"{url} served a file with sha256 {h.hexdigest()[:16]}..., "
                                             f"the manifest names {sha256[:16]}...: refusing to train from it")
    except (OSError, urllib.error.URLError) as e:
        raise InitialCheckpointError(f"could not download the initial checkpoint from {url}: {e}") from None
    return dest


def resolve_initial(
    manifest: RunManifest, state_dir: Path, local: Path | None = None, coordinator: str | None = None
) -> Path | None:
    """The verified initial checkpoint file, or None when the run starts from its seed."""
    want = manifest.init_sha256
    if not want:
        if local is not None:
            raise InitialCheckpointError("--init-checkpoint given, but the run's manifest names no initial checkpoint "
                                         "(init_sha256); a new run from flags takes it into its manifest, a joined run cannot")
        return None
    cached = state_dir / "initial" / f"{want}.safetensors"
    source = manifest.init_source
    candidates = [p for p in (local, cached, Path(source) if source and "://" not in source else None) if p is not None]
    for path in candidates:
        if path.is_file():
            got = sha256_file(path)
            if got == want:
                return path
            if path == local:
                raise InitialCheckpointError(
                    f"--init-checkpoint {path} has sha256 {got[:16]}..., the manifest names {want[:16]}...")
            logger.warning("%s has sha256 %s..., not the run's initial checkpoint; ignored", path, got[:16])
    urls = []
    if coordinator:
        urls.append(coordinator.rstrip("/") + f"/api/v1/checkpoint/{want}")
    if source.startswith(("http://", "https://")):
        urls.append(source)
    errors = []
    for url in urls:
        try:
            logger.info("downloading the initial checkpoint from %s", url)
            return _download(url, cached, want)
        except InitialCheckpointError as e:
            errors.append(str(e))
    where = "; ".join(errors) or f"no local copy (init_source {source!r}) and no URL to fetch it from"
    raise InitialCheckpointError(f"the run starts from checkpoint {want[:16]}..., which this node cannot get: {where}. "
                                 "Pass --init-checkpoint PATH with a copy of it.")


def load_initial(path: Path, spec: ModelSpec) -> list[torch.Tensor]:
    """Parameters in ``GPT(spec)`` order from a verified ``model.safetensors``; refuses another shape."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise InitialCheckpointError(f"{path}: not a safetensors file ({e})") from None
    try:
        params = from_hf(spec, tensors)
    except ExportError as e:
        raise InitialCheckpointError(f"{path}: {e}") from None
    with torch.device("meta"):
        shapes = [p.shape for p in GPT(spec).parameters()]
    for p, shape in zip(params, shapes):
        if p.shape != shape:
            raise InitialCheckpointError(f"{path} holds a model of another shape ({tuple(p.shape)} where the run's "
                                         f"{spec.preset} model has {tuple(shape)})")
    return params
