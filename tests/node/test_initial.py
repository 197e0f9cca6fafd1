"""A run's initial checkpoint: found, fetched and verified by its sha256 before any training."""
from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch

from node.model.export import Checkpoint, write_export
from node.model.initial import InitialCheckpointError, load_initial, resolve_initial
from node.model.gpt import GPT, PRESETS
from node.model.state import state_hash
from node.model.tokenizer import sha256_file
from protocol import RunManifest


@pytest.fixture
def export(tmp_path):
    torch.manual_seed(3)
    spec = PRESETS["tiny"]
    params = [p.detach().clone() for p in GPT(spec).parameters()]
    weights = write_export(Checkpoint(spec, params, 5, state_hash(5, params), run_id="base"), tmp_path / "base")
    return weights, params


@pytest.fixture
def http_dir(tmp_path):
    """A plain HTTP server on 127.0.0.1 serving ``tmp_path / 'www'``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_no_initial_checkpoint_means_the_seed(tmp_path, export):
    assert resolve_initial(RunManifest(run_id="r"), tmp_path) is None
    with pytest.raises(InitialCheckpointError, match="names no initial checkpoint"):
        resolve_initial(RunManifest(run_id="r"), tmp_path, local=export[0])


def test_local_copy_is_verified_and_loaded(tmp_path, export):
    weights, params = export
    m = RunManifest(run_id="ft", model=PRESETS["tiny"], init_sha256=sha256_file(weights),
                    init_source="/elsewhere/model.safetensors")
    path = resolve_initial(m, tmp_path / "state", local=weights)
    assert path == weights
    loaded = load_initial(path, m.model)
    assert all(torch.equal(a, b) for a, b in zip(loaded, params))
    wrong = RunManifest(run_id="ft", model=PRESETS["tiny"], init_sha256="0" * 64)
    with pytest.raises(InitialCheckpointError, match="--init-checkpoint .* has sha256"):
        resolve_initial(wrong, tmp_path / "state", local=weights)
    with pytest.raises(InitialCheckpointError, match="cannot get"):
        resolve_initial(wrong, tmp_path / "state")
    with pytest.raises(InitialCheckpointError, match="shape"):  # 6 layers wanted, 4 stored
        load_initial(weights, PRESETS["small"])


def test_download_is_hash_checked_and_kept_only_when_it_matches(tmp_path, export, http_dir):
    weights, _ = export
    root, url = http_dir
    (root / "model.safetensors").write_bytes(weights.read_bytes())
    want = sha256_file(weights)
    m = RunManifest(run_id="ft", model=PRESETS["tiny"], init_sha256=want, init_source=url + "/model.safetensors")
    got = resolve_initial(m, tmp_path / "state")
    assert got == tmp_path / "state" / "initial" / f"{want}.safetensors" and sha256_file(got) == want
    assert resolve_initial(m, tmp_path / "state") == got, "the verified download is reused"

    (root / "evil.safetensors").write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)  # same size, other bytes
    evil = RunManifest(run_id="ft", model=PRESETS["tiny"], init_sha256=want, init_source=url + "/evil.safetensors")
    with pytest.raises(InitialCheckpointError, match="refusing to train from it"):
        resolve_initial(evil, tmp_path / "other")
    assert not any((tmp_path / "other" / "initial").iterdir()), "a bad download leaves nothing behind"
    gone = RunManifest(run_id="ft", model=PRESETS["tiny"], init_sha256=want, init_source=url + "/missing.safetensors")
    with pytest.raises(InitialCheckpointError, match="could not download"):
        resolve_initial(gone, tmp_path / "third")
