"""Multi-device nodes (node/train/ddp.py): two CPU ranks over gloo take the same steps as one rank on the
same global batch; the replicas stay identical; bad ``--devices`` get one clear error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from node.data.sampler import ByteSampler
from node.train.ddp import LocalGroup, parse_devices
from node.train.diloco import inner_optimizer, inner_step
from node.model.gpt import GPT, preset
from protocol import Hyperparameters, RunManifest

STEPS = 6


def _manifest(**hp: object) -> RunManifest:
    spec = preset("tiny")
    return RunManifest(run_id="ddp-test", model=spec, hparams=Hyperparameters(**{"batch_size": 4, "inner_lr": 3e-3, **hp}))


def _batches(manifest: RunManifest) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = np.frombuffer(bytes(range(256)) * 64 + b"the same text, again and again. " * 500, dtype=np.uint8)
    sampler = ByteSampler(data, manifest.model.block_size, manifest.hparams.batch_size, seed=7)
    return [sampler.batch() for _ in range(STEPS)]


def _fresh(manifest: RunManifest) -> tuple[GPT, torch.optim.AdamW]:
    torch.manual_seed(manifest.seed)
    model = GPT(manifest.model)
    return model, inner_optimizer(model.parameters(), manifest.hparams)


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.swarm  # starts a worker process
def test_two_gloo_ranks_match_one_rank_on_the_same_global_batch():
    torch.set_num_threads(1)
    manifest = _manifest()
    batches, lr = _batches(manifest), manifest.hparams.inner_lr
    one, one_opt = _fresh(manifest)
    start, _ = _fresh(manifest)
    one_losses = [float(inner_step(one, one_opt, x, y, lr=lr, grad_clip=manifest.hparams.grad_clip)) for x, y in batches]

    two, two_opt = _fresh(manifest)
    group = LocalGroup(manifest, "cpu", [0, 1], threads=1)
    try:
        group.attach(two, two_opt)
        group.sync()
        two_losses = [float(group.step(x, y, lr)) for x, y in batches[:3]]
        # an outer step (or a state download) changes rank 0 between inner phases: sync carries it over
        with torch.no_grad():
            for p, q in zip(two.parameters(), one.parameters()):
                p.add_(0.01)
        group.sync()
        assert group.divergence() == 0.0
        with torch.no_grad():
            for p in two.parameters():
                p.sub_(0.01)
        group.sync()
        two_losses += [float(group.step(x, y, lr)) for x, y in batches[3:]]
        assert group.divergence() == 0.0  # identical replicas: DDP gave every rank the same gradients
    finally:
        group.close()
    assert group.procs == []  # close() reaped the worker

    # the tolerance: 0.5% of the farthest AdamW can move a parameter in these steps (lr per step);
    # float32 sums in another order differ by far less. A different batch differs by far more:
    half, half_opt = _fresh(manifest)
    for x, y in batches:
        inner_step(half, half_opt, x[:2], y[:2], lr=lr, grad_clip=manifest.hparams.grad_clip)
    tolerance = 5e-3 * lr * STEPS
    diff, other, moved = _max_diff(one, two), _max_diff(one, half), _max_diff(one, start)
    print(f"after {STEPS} steps: 1 rank vs 2 ranks max |param diff| {diff:.2e}; vs half the batch {other:.2e}; "
          f"tolerance {tolerance:.1e}; moved up to {moved:.2e}")
    assert other > 10 * tolerance, "the comparison must be able to tell batches apart"
    assert diff < tolerance
    assert np.allclose(one_losses, two_losses, rtol=1e-4, atol=1e-5), (one_losses, two_losses)


def test_a_batch_that_does_not_split_evenly_is_refused_before_any_process_starts():
    with pytest.raises(ValueError, match="does not split evenly over 3 devices"):
        LocalGroup(_manifest(batch_size=4), "cpu", [0, 1, 2])
    with pytest.raises(ValueError, match="needs algorithm diloco"):
        LocalGroup(RunManifest(run_id="s", algorithm="sync", hparams=Hyperparameters(batch_size=4)), "cpu", [0, 1])


def test_parse_devices():
    assert parse_devices("", "cuda", 4) == [0, 1, 2, 3]  # default: every visible GPU
    assert parse_devices("", "cpu", 0) == [0]
    assert parse_devices("2,0", "cuda", 4) == [2, 0]
    assert parse_devices("0,1", "cpu", 0) == [0, 1]
    for bad, match in [("0,0", "each device once"), ("a,b", "separated by commas"), ("-1", "numbers from 0"),
                       ("0,4", "sees 4 GPU")]:
        with pytest.raises(ValueError, match=match):
            parse_devices(bad, "cuda", 4)


@pytest.mark.swarm
@pytest.mark.timeout(240)
def test_swarm_join_with_two_cpu_ranks_trains_as_one_peer_and_says_ready(tmp_path):
    """The whole path: ``swarm join --devices 0,1`` on a CPU, alone in a new swarm; READY=1 to systemd."""
    import socket

    from node.cli.launcher import SwarmLauncher

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify.sock"))
        notify.settimeout(120)
        with SwarmLauncher(tmp_path, run_id="test-ddp", round_tokens=4_096, batch_size=4) as swarm:
            proc = swarm.start_node("solo", extra=["--device", "cpu", "--devices", "0,1", "--max-rounds", "2"],
                                    env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
            assert notify.recv(4096).decode().startswith("READY=1\nSTATUS=peer ")
            assert proc.wait(180) == 0
            assert notify.recv(4096) == b"STOPPING=1"
            status = swarm.statuses()["solo"]
            log = (swarm.state_dir("solo") / "node.log").read_text()
    assert status["devices"] == 2 and status["rounds"] == 2 and status["final_val_bpb"] < status["initial_val_bpb"]
    assert "training data-parallel on 2 cpu device(s) [0, 1] (gloo)" in log


@pytest.mark.swarm  # starts a worker process
def test_a_dead_worker_stops_the_node_with_one_clear_error():
    from node.train.ddp import LocalGroupError

    manifest = _manifest()
    model, opt = _fresh(manifest)
    group = LocalGroup(manifest, "cpu", [0, 1], threads=1)
    try:
        group.attach(model, opt)
        group.sync()
        (x, y), *_ = _batches(manifest)
        group.step(x, y, 1e-3)
        group.procs[0].kill()  # a worker dies (OOM, a device lost)
        group.procs[0].wait(10)
        with pytest.raises(LocalGroupError, match=r"a local rank failed .*exited workers: \[\d+\]"):
            for _ in range(3):  # the first collective after the death fails
                group.step(x, y, 1e-3)
    finally:
        group.close(timeout=5)
    assert group.procs == []


def test_billing_counts_the_gpus_used_not_every_gpu_in_the_machine(monkeypatch):
    from types import SimpleNamespace

    from node.daemon.machine import detect_hardware

    asked = []

    def props(index):
        asked.append(index)
        return SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30)

    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    hw = detect_hardware("cuda", [2, 5])
    assert (hw.device, hw.count, hw.memory_gb) == ("NVIDIA H100 80GB HBM3", 2, 80.0) and asked == [2]
    assert detect_hardware("cpu", [0, 1]).count == 1  # CPU ranks share one machine's CPU
