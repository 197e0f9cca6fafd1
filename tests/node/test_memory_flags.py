"""Memory, not math: ``--micro-batches`` (gradient accumulation) and ``--activation-checkpointing``
take the same inner step in less memory, and ``swarm join --check``'s estimate follows them."""
from __future__ import annotations


import pytest
import torch

from node.cli.preflight import presets_that_fit
from node.model.gpt import GPT, PRESETS
from node.policies.model_size import fitting_setup, memory_need, memory_needed_gb, param_count
from node.train.diloco import inner_optimizer, inner_step
from protocol import Hyperparameters, ModelSpec

SPEC = ModelSpec("tiny", n_layer=2, n_head=2, n_embd=32, block_size=16)


def _step(micro_batches: int = 1, checkpointing: bool = False) -> tuple[float, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = GPT(SPEC)
    model.checkpointing = checkpointing
    opt = inner_optimizer(model.parameters(), Hyperparameters())
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, SPEC.vocab_size, (8, SPEC.block_size), generator=g)
    y = torch.randint(0, SPEC.vocab_size, (8, SPEC.block_size), generator=g)
    losses = [float(inner_step(model, opt, x, y, lr=1e-3, grad_clip=1.0, micro_batches=micro_batches)) for _ in range(2)]
    return losses[-1], [p.detach().clone() for p in model.parameters()]


def test_micro_batches_take_the_same_step_as_the_whole_batch():
    loss, params = _step()
    for k in (2, 4, 8):
        loss_k, params_k = _step(micro_batches=k)
        assert loss_k == pytest.approx(loss, rel=1e-5), k
        assert max(float((a - b).abs().max()) for a, b in zip(params, params_k)) < 1e-5, k


def test_activation_checkpointing_takes_the_same_step():
    loss, params = _step()
    loss_c, params_c = _step(checkpointing=True)
    assert loss_c == pytest.approx(loss, rel=1e-6)
    assert max(float((a - b).abs().max()) for a, b in zip(params, params_c)) < 1e-6


def test_checkpointing_keeps_far_fewer_activations_for_the_backward():
    """What it is for: the values autograd saves during the forward pass shrink to each block's
    input (the rest is recomputed in the backward); evaluation saves nothing either way."""
    spec = ModelSpec("tiny", n_layer=4, n_head=2, n_embd=32, block_size=16, vocab_size=8)
    torch.manual_seed(0)
    model = GPT(spec)
    x = torch.randint(0, spec.vocab_size, (4, spec.block_size))
    saved = {}
    for checkpointing in (False, True):
        model.checkpointing = checkpointing
        sizes = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _, loss = model(x, x)
        loss.backward()
        saved[checkpointing] = sum(sizes)
    assert saved[True] < 0.5 * saved[False], saved


def test_a_batch_that_does_not_split_is_refused():
    model = GPT(SPEC)
    opt = inner_optimizer(model.parameters(), Hyperparameters())
    x = torch.zeros((6, SPEC.block_size), dtype=torch.long)
    with pytest.raises(ValueError, match="does not split into 4"):
        inner_step(model, opt, x, x, lr=1e-3, grad_clip=1.0, micro_batches=4)


def test_the_estimate_follows_the_flags_and_the_fit_is_the_cheapest():
    spec = PRESETS["gpt2-124m"]
    full = memory_needed_gb(spec, 16)
    assert memory_needed_gb(spec, 16, micro_batches=4) < full
    assert memory_needed_gb(spec, 16, checkpointing=True) < full
    weights_gb = 6 * 4 * param_count(spec) / 2**30
    assert memory_needed_gb(spec, 16, micro_batches=16, checkpointing=True) > weights_gb  # weights stay
    assert fitting_setup(spec, 16, 1000.0) == (1, False)
    assert fitting_setup(spec, 16, weights_gb) is None  # nothing fits below the weights themselves
    k, checkpointing = fitting_setup(spec, 16, full * 0.6)
    assert k > 1 and memory_needed_gb(spec, 16, micro_batches=k, checkpointing=checkpointing) <= full * 0.6
    if not checkpointing:  # the cheapest: one fewer split would not fit
        smaller = [j for j in range(1, k) if 16 % j == 0]
        assert all(memory_needed_gb(spec, 16, micro_batches=j) > full * 0.6 for j in smaller)


def test_the_estimate_splits_the_device_from_the_host_and_counts_the_round_copies():
    spec = PRESETS["gpt2-124m"]
    copy_gb = 4 * param_count(spec) / 2**30
    need = memory_need(spec, 16)
    assert memory_needed_gb(spec, 16) == pytest.approx(need.training_gb + need.host_gb)  # a CPU node: one RAM
    assert memory_needed_gb(spec, 16, device="cuda") == pytest.approx(need.training_gb)  # the rest stays in RAM
    assert need.training_gb > 4 * copy_gb and need.host_gb > 7 * copy_gb
    overlap, ef = memory_need(spec, 16, overlap=True), memory_need(spec, 16, error_feedback=True)
    assert overlap.host_gb - need.host_gb == pytest.approx(copy_gb)  # the anchor of the inner phase
    assert ef.host_gb - need.host_gb == pytest.approx(copy_gb)  # the codec's residual
    assert overlap.training_gb == ef.training_gb == need.training_gb
    gpu_gb = 4 * copy_gb + 1.0  # a card that holds the weights and a little: accumulation fits it
    assert fitting_setup(spec, 16, gpu_gb, device="cuda") not in (None, (1, False))
    assert fitting_setup(spec, 16, gpu_gb) is None  # the same memory as a CPU node's RAM: the host part does not fit


def test_the_check_names_every_preset_and_its_flags():
    line = presets_that_fit(16.0, 16)
    for name in PRESETS:
        assert name in line
    assert "tiny fits;" in line and "gpt2-124m fits with --micro-batches" in line, line
    assert presets_that_fit(0.01, 16).count("does not fit") == len(PRESETS)


def test_training_with_both_flags_still_learns():
    torch.manual_seed(0)
    model = GPT(SPEC)
    model.checkpointing = True
    opt = inner_optimizer(model.parameters(), Hyperparameters())
    x = torch.arange(8 * SPEC.block_size).reshape(8, SPEC.block_size) % 7
    y = (x + 1) % 7
    first = float(inner_step(model, opt, x, y, lr=3e-3, grad_clip=1.0, micro_batches=2))
    for _ in range(30):
        last = float(inner_step(model, opt, x, y, lr=3e-3, grad_clip=1.0, micro_batches=2))
    assert last < 0.5 * first


def test_docs_table_is_what_the_command_prints():
    """docs/models.md's table is ``python -m benchmarks.memory_fit --batch 16``'s output, verbatim."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory_fit", "--batch", "16"], cwd=root,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.count("\n") >= 9 and out.strip() in (root / "docs" / "models.md").read_text()
