"""Export in the Hugging Face GPT-2 layout: transformers loads it with equal logits; generate samples text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from node.cli.main import main
from node.model.export import ExportError, load_checkpoint_dir, read_export
from node.model.gpt import GPT, PRESETS
from node.model.state import save_checkpoint, state_hash
from protocol import RunManifest

import transformers  # noqa: E402  (in .[dev]: the export tests need it, never skip)


def make_state_dir(
    path: Path, manifest: RunManifest, round_: int = 3, seed: int = 1, with_manifest: bool = True
) -> list[torch.Tensor]:
    """A node's state dir as ``Trainer.save`` writes it, with weights moved off their init (so biases
    and LayerNorms are not trivially 0/1 and a wrong mapping shows)."""
    torch.manual_seed(seed)
    model = GPT(manifest.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    params = [p.detach().clone() for p in model.parameters()]
    payload = {"manifest_hash": manifest.content_hash, "round": round_, "params": params,
               "momentum": [torch.zeros_like(p) for p in params], "val_history": [(0, 0, 8.0), (round_, 1000, 5.5)]}
    if with_manifest:
        payload["manifest"] = manifest.to_bytes()
    save_checkpoint(path / "checkpoint.pt", payload)
    return params


@pytest.fixture
def manifest() -> RunManifest:
    return RunManifest(run_id="export-test", model=PRESETS["tiny"])


def test_transformers_loads_the_export_with_equal_logits(tmp_path, manifest):
    params = make_state_dir(tmp_path / "state", manifest)
    assert main(["export", "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "out")]) == 0
    ours = load_checkpoint_dir(tmp_path / "state").model()
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    x = torch.randint(0, 256, (4, manifest.model.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, _ = ours(x)
        b = hf(x).logits
    assert a.shape == b.shape
    assert (a - b).abs().max().item() < 1e-5
    # the round trip back to our parameters is exact, so the state hash is the swarm's
    back = read_export(tmp_path / "out")
    assert back.state_hash == state_hash(3, params)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["capaswarm"]["state_hash"] == back.state_hash and config["activation_function"] == "gelu_new"
    card = (tmp_path / "out" / "README.md").read_text()
    assert manifest.content_hash in card and "5.5000" in card and "Not included" in card


def test_autotokenizer_maps_bytes_one_to_one(tmp_path, manifest):
    make_state_dir(tmp_path / "state", manifest)
    assert main(["export", "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "out")]) == 0
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    text = "héllo wörld\n\t日本 \x00!"
    assert tok(text)["input_ids"] == list(text.encode())
    assert tok.decode(list(text.encode())) == text


def test_generate_from_an_export_and_a_state_dir(tmp_path, manifest, capsys):
    make_state_dir(tmp_path / "state", manifest)
    assert main(["export", "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    outputs = []
    for source in ("out", "state"):
        assert main(["generate", str(tmp_path / source), "--prompt", "def ", "--max-new-tokens", "40", "--seed", "7"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1], "the export and the state dir are the same model"
    assert outputs[0].startswith("def ") and len(outputs[0].encode()) > 4 + 20


def test_hf_generate_runs_on_the_export(tmp_path, manifest):
    make_state_dir(tmp_path / "state", manifest)
    assert main(["export", "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "out")]) == 0
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    out = hf.generate(torch.tensor([tok("import ")["input_ids"]]), max_new_tokens=16, do_sample=False)
    assert out.shape[1] == len(b"import ") + 16


def test_export_refuses_what_it_cannot_read(tmp_path, manifest, capsys):
    assert main(["export", "--state-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "Traceback" not in err
    make_state_dir(tmp_path / "old", manifest, with_manifest=False)
    with pytest.raises(ExportError, match="pass --manifest"):
        load_checkpoint_dir(tmp_path / "old")
    other = RunManifest(run_id="another", model=PRESETS["tiny"])
    with pytest.raises(ExportError, match="belongs to manifest"):
        load_checkpoint_dir(tmp_path / "old", other)
    assert load_checkpoint_dir(tmp_path / "old", manifest).round == 3
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "llama"}')
    assert main(["generate", str(tmp_path / "bad")]) == 2
    assert "not a GPT-2" in capsys.readouterr().err


def test_a_bpe_run_exports_its_vocabulary(tmp_path):
    from node.model.tokenizer import TokenizerFile, train_bpe

    texts = ["the swarm trains one model together on volunteered machines\n" * 50, "def f(x):\n    return x + 1\n" * 50]
    train_bpe(iter(texts), 300, tmp_path / "state" / "tokenizer.json")  # where the node keeps a BPE run's vocabulary
    from dataclasses import replace

    manifest = RunManifest(run_id="bpe-export", model=replace(PRESETS["tiny"], vocab_size=300))
    make_state_dir(tmp_path / "state", manifest)
    assert main(["export", "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "out")]) == 0
    ours = TokenizerFile(tmp_path / "state" / "tokenizer.json")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    text = "the swarm trains: def f(x): return x"
    ids = ours.encode(text)
    assert tok(text)["input_ids"] == ids and len(ids) < len(text)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    model = load_checkpoint_dir(tmp_path / "state").model()
    x = torch.tensor([ids])
    with torch.no_grad():
        assert (model(x)[0] - hf(x).logits).abs().max().item() < 1e-5
    assert json.loads((tmp_path / "out" / "config.json").read_text())["capaswarm"]["tokenizer"] == "bpe"
