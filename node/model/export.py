"""The global model in the Hugging Face GPT-2 layout, and back.

``swarm export --state-dir DIR --out OUT`` writes::

    OUT/model.safetensors      the weights under GPT-2's names (Conv1D weights transposed), fp32;
                               metadata: format, run id, manifest hash, round, state hash
    OUT/config.json            a GPT2Config (gelu_new, eps 1e-5, tied head) + a "capaswarm" block
    OUT/tokenizer.json         the run's vocabulary (node.model.tokenizer), tokenizer_config.json
    OUT/generation_config.json
    OUT/README.md              the model card (node.model.modelcard)

so ``transformers.GPT2LMHeadModel.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)``
load it with no code of ours. ``read_export`` maps such a folder back to our parameter order, so
``swarm generate`` and a run's initial checkpoint (``node.model.initial``) read the same file.

Which hash names a checkpoint: the *state hash* (``node.model.state.state_hash``: sha256 of the round
and the fp32 parameters in our order). It is what the swarm itself computes and reports every
round, so the coordinator can check a certificate request against its ledger instead of trusting
the requester, and it does not depend on the file format (a re-serialised safetensors file with
another header order has the same state hash). ``read_export`` recomputes it from the weights.
The safetensors file's own sha256 is what a manifest pins to *download* a checkpoint (it can be
checked before a single byte is parsed); see ``node.model.initial``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from node.model.gpt import GPT, LN_EPS
from node.model.state import load_checkpoint, state_hash
from node.model.tokenizer import TokenizerFile, load_tokenizer
from protocol import ModelSpec, ProtocolError, RunManifest

__all__ = ["Checkpoint", "ExportError", "hf_config", "load_checkpoint_dir", "read_export", "to_hf", "from_hf", "write_export"]

WEIGHTS = "model.safetensors"


class ExportError(ValueError):
    """A state dir or export folder that cannot be read; the message says why."""


@dataclass
class Checkpoint:
    """A global model, wherever it came from: a node's state dir or an export."""

    spec: ModelSpec
    params: list[torch.Tensor]  # fp32, in ``GPT(spec).parameters()`` order
    round: int
    state_hash: str
    manifest: RunManifest | None = None  # None for an export (its config names the run, not all of it)
    run_id: str = ""
    manifest_hash: str = ""
    tokenizer: TokenizerFile | None = None
    extra: dict[str, Any] | None = None  # the checkpoint dict (state dir) or config "capaswarm" block (export)

    def model(self) -> GPT:
        model = GPT(self.spec)
        with torch.no_grad():
            for p, x in zip(model.parameters(), self.params):
                p.copy_(x)
        return model.eval()


def _names(spec: ModelSpec) -> list[str]:
    with torch.device("meta"):
        return [n for n, _ in GPT(spec).named_parameters()]


def _hf_name(name: str) -> tuple[str, bool]:
    """Our parameter name -> (GPT-2's name, transposed?). GPT-2's Conv1D stores weights as (in, out)."""
    fixed = {"tok.weight": "transformer.wte.weight", "pos.weight": "transformer.wpe.weight",
             "ln_f.weight": "transformer.ln_f.weight", "ln_f.bias": "transformer.ln_f.bias"}
    if name in fixed:
        return fixed[name], False
    _, i, rest = name.split(".", 2)
    local = {"ln1": "ln_1", "ln2": "ln_2", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
             "mlp.0": "mlp.c_fc", "mlp.2": "mlp.c_proj"}
    module, kind = rest.rsplit(".", 1)
    return f"transformer.h.{i}.{local[module]}.{kind}", kind == "weight" and not module.startswith("ln")


def to_hf(spec: ModelSpec, params: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in zip(_names(spec), params):
        hf, transpose = _hf_name(name)
        out[hf] = (p.t() if transpose else p).detach().to("cpu", torch.float32).contiguous()
    return out


def from_hf(spec: ModelSpec, tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    params = []
    for name in _names(spec):
        hf, transpose = _hf_name(name)
        if hf not in tensors:
            raise ExportError(f"{WEIGHTS} lacks {hf}: not a GPT-2 of this shape")
        t = tensors[hf].to(torch.float32)
        params.append((t.t() if transpose else t).contiguous())
    return params


def hf_config(spec: ModelSpec, tokenizer: TokenizerFile, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": spec.vocab_size, "n_positions": spec.block_size, "n_ctx": spec.block_size,
        "n_embd": spec.n_embd, "n_layer": spec.n_layer, "n_head": spec.n_head, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": LN_EPS, "initializer_range": 0.02,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True,
        "tie_word_embeddings": True, "use_cache": True,
        "bos_token_id": tokenizer.eos_id, "eos_token_id": tokenizer.eos_id,
        "torch_dtype": "float32",
        "capaswarm": {**extra, "preset": spec.preset, "tokenizer": "bytes" if tokenizer.is_bytes else "bpe"},
    }


def load_checkpoint_dir(state_dir: Path, manifest: RunManifest | None = None) -> Checkpoint:
    """The global model in a node's ``--state-dir`` (its last checkpoint)."""
    path = Path(state_dir) / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    if ckpt is None:
        raise ExportError(f"no checkpoint in {state_dir} (expected {path}); train a round first")
    if manifest is None:
        if "manifest" not in ckpt:
            raise ExportError(f"{path} predates manifests in checkpoints; pass --manifest with the run's manifest")
        try:
            manifest = RunManifest.from_bytes(ckpt["manifest"])
        except ProtocolError as e:
            raise ExportError(f"{path}: its manifest does not decode: {e}") from None
    if ckpt["manifest_hash"] != manifest.content_hash:
        raise ExportError(f"{path} belongs to manifest {ckpt['manifest_hash'][:12]}..., not {manifest.content_hash[:12]}...")
    params = [t.float() for t in ckpt["params"]]
    tok_path = Path(state_dir) / "tokenizer.json"
    return Checkpoint(manifest.model, params, int(ckpt["round"]), state_hash(int(ckpt["round"]), params), manifest,
                      manifest.run_id, manifest.content_hash, load_tokenizer(tok_path.parent), ckpt)


def write_export(ckpt: Checkpoint, out: Path, card: str | None = None) -> Path:
    """Write ``ckpt`` in the Hugging Face GPT-2 layout. Returns the weights file."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = ckpt.tokenizer or TokenizerFile(None)
    if tokenizer.vocab_size != ckpt.spec.vocab_size:
        raise ExportError(f"the vocabulary has {tokenizer.vocab_size} ids, the model {ckpt.spec.vocab_size}")
    info = {"run_id": ckpt.run_id, "manifest_hash": ckpt.manifest_hash, "round": str(ckpt.round), "state_hash": ckpt.state_hash}
    weights = out / WEIGHTS
    save_file(to_hf(ckpt.spec, ckpt.params), str(weights), metadata={"format": "pt", **info})
    extra = {**info, "round": ckpt.round}
    (out / "config.json").write_text(json.dumps(hf_config(ckpt.spec, tokenizer, extra), indent=1))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": tokenizer.eos_id, "eos_token_id": tokenizer.eos_id, "max_length": ckpt.spec.block_size}, indent=1))
    (out / "tokenizer.json").write_text(tokenizer.json())
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": ckpt.spec.block_size,
         "clean_up_tokenization_spaces": False},
        indent=1))
    if ckpt.manifest is not None:
        manifest = {"content_hash": ckpt.manifest_hash, "manifest": ckpt.manifest.to_wire()}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if card is not None:
        (out / "README.md").write_text(card)
    return weights


def read_export(directory: Path) -> Checkpoint:
    """An export folder (ours, or any GPT-2 checkpoint in the same layout) as our parameters."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{directory}: no readable config.json ({e})") from None
    gelu = config.get("activation_function", "gelu_new")
    if config.get("model_type") != "gpt2" or gelu not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ExportError(f"{directory}: not a GPT-2 (tanh GELU) checkpoint")
    extra = config.get("capaswarm", {})
    try:
        spec = ModelSpec(preset=str(extra.get("preset", "gpt2")), n_layer=int(config["n_layer"]), n_head=int(config["n_head"]),
                         n_embd=int(config["n_embd"]), block_size=int(config["n_positions"]),
                         vocab_size=int(config["vocab_size"]))
        tensors = load_file(str(directory / WEIGHTS))
    except (KeyError, TypeError, ValueError, OSError, SafetensorError) as e:
        raise ExportError(f"{directory}: cannot read the model ({e})") from None
    params = from_hf(spec, tensors)
    round_ = int(extra.get("round", 0))
    return Checkpoint(spec, params, round_, state_hash(round_, params), None, str(extra.get("run_id", "")),
                      str(extra.get("manifest_hash", "")), load_tokenizer(directory), extra)
