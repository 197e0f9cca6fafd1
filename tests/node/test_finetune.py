"""Fine-tuning: a run that starts from another run's export, on another corpus, gets better on it.

The base model is trained in-process (plain AdamW steps on stdlib sources, the default corpus), saved
as a state dir and exported with ``swarm export``. The fine-tuning run is a real ``swarm join``
process (one node, its own DHT and p2pd) started with ``--init-checkpoint`` and ``--data`` (a folder
prepared by ``swarm data prepare`` from generated English-like prose): its manifest names the export
by sha256 and pins the corpus, and the node verifies both before training.
"""
from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

from node.cli.main import main
from node.data.load import load_corpus
from node.data.sampler import ByteSampler, evaluate_bpb
from node.train.diloco import inner_step
from node.cli.launcher import SwarmLauncher, read_status
from node.model.gpt import GPT, PRESETS
from node.model.state import save_checkpoint
from protocol import RunManifest

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]

PROSE = ("the volunteers gave their evenings and their graphics cards so that one model could learn to write "
         "plain sentences about gardens rivers kitchens and the weather in small towns").split()


def _base_export(tmp_path):
    torch.manual_seed(0)
    manifest = RunManifest(run_id="base", model=PRESETS["tiny"])
    corpus = load_corpus(max_bytes=600_000)
    model = GPT(manifest.model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sampler = ByteSampler(corpus.train, 128, 16, seed=0)
    for _ in range(60):
        inner_step(model, opt, *sampler.batch(), lr=2e-3, grad_clip=1.0)
    params = [p.detach().clone() for p in model.parameters()]
    save_checkpoint(tmp_path / "base-state" / "checkpoint.pt", {
        "manifest_hash": manifest.content_hash, "manifest": manifest.to_bytes(), "round": 60, "params": params,
        "momentum": [torch.zeros_like(p) for p in params]})
    assert main(["export", "--state-dir", str(tmp_path / "base-state"), "--out", str(tmp_path / "base")]) == 0
    return tmp_path / "base" / "model.safetensors"


def _prose_corpus(tmp_path):
    rng = random.Random(1)
    src = tmp_path / "prose"
    src.mkdir()
    for i in range(30):
        sentences = [" ".join(rng.choice(PROSE) for _ in range(rng.randint(6, 14))).capitalize() + "." for _ in range(120)]
        (src / f"story{i}.txt").write_text(" ".join(sentences) + "\n")
    assert main(["data", "prepare", str(src), "--out", str(tmp_path / "prose-shards")]) == 0
    return tmp_path / "prose-shards"


def test_a_run_from_an_export_improves_on_a_new_corpus(tmp_path, capsys):
    weights = _base_export(tmp_path)
    shards = _prose_corpus(tmp_path)
    capsys.readouterr()
    # the base model on the new corpus, for reference: what the fine-tuning run must start from
    base_bpb = evaluate_bpb(GPT(PRESETS["tiny"]), load_corpus(shards).val, 128, "cpu", batches=2)  # untrained: ~8 bits
    with SwarmLauncher(tmp_path / "swarm", run_id="finetune", round_tokens=16_000) as swarm:
        proc = swarm.start_node("solo", extra=["--init-checkpoint", str(weights), "--data", str(shards), "--max-rounds", "3"])
        assert proc.wait(240) == 0, (swarm.state_dir("solo") / "node.log").read_text()[-3000:]
    st = read_status(swarm.state_dir("solo"))
    assert st["rounds"] == 3
    start, end = st["initial_val_bpb"], st["final_val_bpb"]
    assert start < base_bpb - 1.0, f"the run did not start from the export ({start:.2f} vs untrained {base_bpb:.2f})"
    assert end < start - 0.3, f"fine-tuning did not improve validation bpb on the new corpus: {start:.3f} -> {end:.3f}"
    print(f"fine-tuning on the new corpus: {start:.3f} -> {end:.3f} bits/byte (untrained {base_bpb:.3f})")


def test_a_files_run_refuses_without_data_and_with_the_wrong_checkpoint(tmp_path):
    weights = _base_export(tmp_path)
    manifest = tmp_path / "ft.toml"
    manifest.write_text(f'run_id = "ft"\ninit_sha256 = "{"0" * 64}"\n[data]\nsource = "files"\n')
    cmd = [sys.executable, "-m", "node", "join", "--new-swarm", "--manifest", str(manifest), "--state-dir", str(tmp_path / "s")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "pass --data PATH" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "d").mkdir()
    for i in range(3):
        (tmp_path / "d" / f"{i}.txt").write_text("some text for the run\n" * 200)
    out = subprocess.run(cmd + ["--data", str(tmp_path / "d"), "--init-checkpoint", str(weights)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "the manifest names 0000000000000000" in out.stderr and "Traceback" not in out.stderr
