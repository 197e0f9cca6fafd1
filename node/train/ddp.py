"""Data-parallel training inside one node: several local devices, one peer in the swarm.

Rank 0 is the node itself: it runs the trainer, talks to the swarm, samples the batch and owns
every decision. Ranks 1..N-1 are worker processes that only train. Each inner step, rank 0
broadcasts a command and the manifest's batch; every rank takes its equal share, DDP averages the
gradients in backward, and every rank applies the same clipped AdamW step, so the replicas stay
identical and the step equals one device's step on the whole batch (tests/node/test_ddp.py). The
manifest's hyper-parameters therefore mean the same on a node of one GPU or of eight: more
devices make a node faster, not different. At the start of each inner phase rank 0 broadcasts its
parameters and optimizer state, which change outside the inner steps (outer step, state download,
resume from a checkpoint, an abandoned round).

Workers are fresh interpreters (``python -c``, not forks: no hivemind or CUDA state), started
before hivemind; they exit when told to, when their next collective fails, or within seconds of
rank 0 dying (a watchdog thread sees them orphaned). CPU ranks use gloo (tests); GPU ranks use
NCCL, one GPU each.
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
import subprocess
import sys
import threading

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from node.train.diloco import inner_optimizer, inner_step
from node.model.gpt import GPT
from protocol import RunManifest

__all__ = ["LocalGroup", "LocalGroupError", "parse_devices", "pick_device"]

logger = logging.getLogger(__name__)

_STEP, _SYNC, _STOP, _CHECK = 1.0, 2.0, 3.0, 4.0
# a node waits on the network (matchmaking, downloads, a paused node) while its workers wait in a
# broadcast: the collective timeout must outlast any of that, so it is long
_TIMEOUT = datetime.timedelta(days=7)


class LocalGroupError(RuntimeError):
    """A local rank failed (a worker died, a device fell off the bus): the node cannot go on with
    fewer devices than it started with, so it stops, and its supervisor restarts it."""


def pick_device(choice: str) -> str:
    """``--device``: auto (a GPU if torch sees one), cpu or cuda."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device")
    return choice


def parse_devices(spec: str, kind: str, visible: int) -> list[int]:
    """``--devices 0,1,3`` -> [0, 1, 3]; empty: every visible GPU (one rank on a CPU)."""
    if not spec.strip():
        return list(range(visible)) if kind == "cuda" and visible > 0 else [0]
    try:
        ids = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ValueError(f"--devices {spec!r}: give device numbers separated by commas, e.g. 0,1") from None
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise ValueError(f"--devices {spec!r}: each device once, numbers from 0")
    if kind == "cuda" and max(ids) >= visible:
        raise ValueError(f"--devices {spec!r}: torch sees {visible} GPU(s), numbered 0..{visible - 1}")
    return ids


def _device(kind: str, index: int) -> str:
    return f"cuda:{index}" if kind == "cuda" else "cpu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _optimizer_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Parameters and AdamW state, in a fixed order. Missing state is created as AdamW would lazily
    create it (step 0, zero moments), so every rank holds the same tensors to broadcast into."""
    tensors: list[torch.Tensor] = []
    for p in model.parameters():
        state = opt.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        tensors += [p.data, state["step"], state["exp_avg"], state["exp_avg_sq"]]
    return tensors


class _Ranks:
    """What every rank does, rank 0 and workers alike (the same collectives in the same order)."""

    def __init__(self, manifest: RunManifest, model: torch.nn.Module, device: str, rank: int, world: int):
        self.manifest, self.model, self.device, self.rank, self.world = manifest, model, device, rank, world
        self.opt: torch.optim.Optimizer | None = None
        self.ddp: DistributedDataParallel | None = None
        # NCCL moves device tensors only; gloo CPU tensors
        self.comm = device if dist.get_backend() == "nccl" else "cpu"
        batch, block = manifest.hparams.batch_size, manifest.model.block_size
        self.x = torch.zeros(batch, block, dtype=torch.long, device=self.comm)
        self.y = torch.zeros_like(self.x)
        self.share = batch // world

    def attach(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt
        # only the inner step goes through the wrapper (on every rank at once); evaluation on rank 0
        # calls the bare model, so no collective ever runs on one rank alone
        ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        self.ddp = DistributedDataParallel(self.model, device_ids=ids)

    def _bcast(self, t: torch.Tensor) -> None:
        if t.device == torch.device(self.comm):
            dist.broadcast(t, 0)
            return
        tmp = t.to(self.comm)
        dist.broadcast(tmp, 0)
        t.copy_(tmp)

    def sync(self) -> None:
        assert self.opt is not None
        with torch.no_grad():
            for t in _optimizer_tensors(self.model, self.opt):
                self._bcast(t)

    def step(self, lr: float) -> torch.Tensor:
        """Train on this rank's share of the batch in ``self.x``/``self.y``; the loss of the whole batch."""
        assert self.opt is not None and self.ddp is not None
        self._bcast(self.x)
        self._bcast(self.y)
        lo = self.rank * self.share
        loss = inner_step(self.ddp, self.opt, self.x[lo:lo + self.share], self.y[lo:lo + self.share], lr=lr,
                          grad_clip=self.manifest.hparams.grad_clip, device=self.device).float()
        loss = loss.to(self.comm)
        dist.all_reduce(loss)
        return loss / self.world

    def divergence(self) -> float:
        """Largest difference between this rank's parameters and rank 0's, over all ranks."""
        worst = torch.zeros((), device=self.comm)
        with torch.no_grad():
            for p in self.model.parameters():
                ref = p.detach().to(self.comm).clone()
                dist.broadcast(ref, 0)
                worst = torch.maximum(worst, (ref - p.detach().to(self.comm)).abs().max())
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        return float(worst)


def _orphan_watchdog(parent: int) -> None:
    """Exit when rank 0 is gone: NCCL would otherwise wait out its (long) timeout."""
    while True:
        if os.getppid() != parent:
            os._exit(1)
        threading.Event().wait(2.0)


def _worker_main() -> None:
    """Entry point of a worker process: ``python -c ... RANK WORLD BACKEND ADDRESS DEVICE THREADS MANIFEST_HEX``."""
    rank, world, backend, address, device, threads, manifest_hex = sys.argv[1:8]
    threading.Thread(target=_orphan_watchdog, args=(int(os.environ["CAPASWARM_RANK0_PID"]),), daemon=True).start()
    _worker(int(rank), int(world), backend, address, device, bytes.fromhex(manifest_hex), int(threads))


def _worker(rank: int, world: int, backend: str, address: str, device: str, manifest_bytes: bytes, threads: int) -> None:
    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=world, timeout=_TIMEOUT)
    try:
        manifest = RunManifest.from_bytes(manifest_bytes)
        torch.manual_seed(manifest.seed)
        model = GPT(manifest.model).to(device)
        ranks = _Ranks(manifest, model, device, rank, world)
        ranks.attach(inner_optimizer(model.parameters(), manifest.hparams))
        command = torch.zeros(2, dtype=torch.float64, device=ranks.comm)
        while True:
            dist.broadcast(command, 0)
            op, arg = float(command[0]), float(command[1])
            if op == _STOP:
                break
            if op == _SYNC:
                ranks.sync()
            elif op == _STEP:
                ranks.step(arg)
            elif op == _CHECK:
                ranks.divergence()
    except Exception as e:  # rank 0 went away (its sockets closed) or a real fault: say which, then exit
        logger.warning("local rank %d stops: %r", rank, e)
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class LocalGroup:
    """Rank 0's handle on the node's local process group (``swarm join --devices``)."""

    def __init__(self, manifest: RunManifest, kind: str, ids: list[int], threads: int = 1):
        world = len(ids)
        if manifest.hparams.batch_size % world:
            raise ValueError(f"--devices: the batch of {manifest.hparams.batch_size} sequences does not split "
                             f"evenly over {world} devices; use a divisor of it")
        if manifest.algorithm == "sync":
            raise ValueError("--devices with more than one device needs algorithm diloco or diloco-overlap")
        self.manifest, self.kind, self.ids, self.world = manifest, kind, ids, world
        self.device = _device(kind, ids[0])
        if kind == "cuda":
            torch.cuda.set_device(self.device)  # rank 0's "cuda" is its first device
        backend = "nccl" if kind == "cuda" else "gloo"
        address = f"tcp://127.0.0.1:{_free_port()}"
        env = {**os.environ, "CAPASWARM_RANK0_PID": str(os.getpid())}
        self.procs: list[subprocess.Popen[bytes]] = [
            subprocess.Popen([sys.executable, "-c", "from node.train.ddp import _worker_main; _worker_main()", str(rank),
                              str(world), backend, address, _device(kind, ids[rank]), str(threads), manifest.to_bytes().hex()],
                             env=env, stdin=subprocess.DEVNULL)
            for rank in range(1, world)
        ]
        try:
            dist.init_process_group(backend, init_method=address, rank=0, world_size=world, timeout=_TIMEOUT)
        except BaseException:
            self._reap(5.0)
            raise
        self._ranks: _Ranks | None = None
        self._command = torch.zeros(2, dtype=torch.float64, device=self.device if backend == "nccl" else "cpu")
        logger.info("training data-parallel on %d %s device(s) %s (%s)", world, kind, ids, backend)

    def attach(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        """Wrap the trainer's model (on ``self.device``) and its inner optimizer; the workers mirror them."""
        self._ranks = _Ranks(self.manifest, model, self.device, 0, self.world)
        self._ranks.attach(opt)

    def _send(self, op: float, arg: float = 0.0) -> None:
        self._command[0], self._command[1] = op, arg
        dist.broadcast(self._command, 0)

    def _failed(self, e: Exception) -> LocalGroupError:
        dead = [p.pid for p in self.procs if p.poll() is not None]
        return LocalGroupError(f"a local rank failed ({type(e).__name__}; exited workers: {dead or 'none'}); "
                               "stopping so that the node restarts with all its devices")

    def sync(self) -> None:
        """Give every rank rank 0's parameters and optimizer state."""
        assert self._ranks is not None
        try:
            self._send(_SYNC)
            self._ranks.sync()
        except RuntimeError as e:  # torch.distributed errors (DistBackendError included)
            raise self._failed(e) from e

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        """One inner step on the whole batch ``(x, y)``, shared over the devices; the batch's mean loss."""
        assert self._ranks is not None
        try:
            self._send(_STEP, lr)
            self._ranks.x.copy_(x)
            self._ranks.y.copy_(y)
            return self._ranks.step(lr)
        except RuntimeError as e:
            raise self._failed(e) from e

    def divergence(self) -> float:
        assert self._ranks is not None
        self._send(_CHECK)
        return self._ranks.divergence()

    def close(self, timeout: float = 30.0) -> None:
        if dist.is_initialized():
            try:
                self._send(_STOP)
            except Exception as e:  # a worker already died: terminate the rest below
                logger.warning("local group: could not stop the workers cleanly: %r", e)
            dist.destroy_process_group()
        self._reap(timeout)

    def _reap(self, timeout: float) -> None:
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []
