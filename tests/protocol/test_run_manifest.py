"""The run manifest: its content hash is the run's fingerprint, so every field must move it."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import msgpack
import pytest

from protocol import DecodeError, ManifestMismatch, RemoteProtocolError, RunManifest, check_same_run, pack, unpack
from protocol.manifest import AGGREGATIONS, ALGORITHMS, CODECS, DATA_SOURCES
from protocol.schema import WireStruct

# Fields whose values are restricted to a set: change them to another member.
CHOICES = {"codec": CODECS, "algorithm": ALGORITHMS, "aggregation": AGGREGATIONS, "source": DATA_SOURCES, "min_version": ("", "0.2.0")}


def _leaf_paths(struct: type[WireStruct], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every scalar field of the manifest, nested ones included, as attribute paths."""
    paths = []
    for f in dataclasses.fields(struct):  # type: ignore[arg-type]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if isinstance(default, WireStruct):
            paths += _leaf_paths(type(default), prefix + (f.name,))
        else:
            paths.append(prefix + (f.name,))
    return paths


def _changed(name: str, value: Any) -> Any:
    if name.endswith("sha256"):  # hashes are checked: 64 hex digits
        return "f" * 64
    if name in CHOICES:
        return next(choice for choice in CHOICES[name] if choice != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "-x"
    raise AssertionError(f"add a way to change manifest field {name} of type {type(value).__name__}")


def _with_leaf(manifest: RunManifest, path: tuple[str, ...]) -> RunManifest:
    """``manifest`` with the field at ``path`` changed."""
    name = path[-1]
    parents = [manifest]
    for part in path[:-1]:
        parents.append(getattr(parents[-1], part))
    value = _changed(name, getattr(parents[-1], name))
    for parent, field_name in zip(reversed(parents), reversed(path)):
        value = dataclasses.replace(parent, **{field_name: value})
    return value


MANIFEST = RunManifest(run_id="hash-test")
LEAVES = _leaf_paths(RunManifest)


def test_leaf_enumeration_covers_the_nested_structs():
    names = {".".join(p) for p in LEAVES}
    assert {"run_id", "codec", "model.n_layer", "data.val_fraction", "hparams.outer_lr"} <= names


def test_content_hash_is_sha256_of_the_canonical_bytes():
    assert MANIFEST.content_hash == hashlib.sha256(MANIFEST.to_bytes()).hexdigest()
    assert MANIFEST.to_bytes() == pack(MANIFEST.to_wire())


def test_content_hash_is_stable():
    assert RunManifest(run_id="hash-test").content_hash == MANIFEST.content_hash
    assert RunManifest.from_bytes(MANIFEST.to_bytes()).content_hash == MANIFEST.content_hash


@pytest.mark.parametrize("path", LEAVES, ids=[".".join(p) for p in LEAVES])
def test_content_hash_changes_when_any_field_changes(path):
    changed = _with_leaf(MANIFEST, path)
    assert changed != MANIFEST
    assert changed.content_hash != MANIFEST.content_hash


def test_check_same_run_accepts_the_same_hash():
    check_same_run(MANIFEST, RunManifest(run_id="hash-test").content_hash, peer="12D3KooWpeer")


def test_check_same_run_names_both_hashes():
    theirs = MANIFEST.with_changes(seed=1)
    with pytest.raises(ManifestMismatch) as info:
        check_same_run(MANIFEST, theirs.content_hash, peer="12D3KooWpeer")
    message = str(info.value)
    assert theirs.content_hash[:12] in message
    assert MANIFEST.content_hash[:12] in message
    assert "12D3KooWpeer" in message
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.reason == "manifest_mismatch"


@pytest.mark.parametrize(
    "changes",
    [
        {"codec": "bf16"},
        {"algorithm": "fedavg"},
        {"run_id": ""},
        {"run_id": "r" * 65},
        {"round_tokens": 0},
        {"round_tokens": -5},
    ],
    ids=["bad-codec", "bad-algorithm", "empty-run-id", "long-run-id", "zero-round-tokens", "negative-round-tokens"],
)
def test_invalid_manifest_is_refused_locally_and_remotely(changes):
    with pytest.raises(ValueError):
        RunManifest(**(dict(run_id="ok") | changes))
    with pytest.raises(ValueError):
        MANIFEST.with_changes(**changes)
    wire = MANIFEST.to_wire() | changes
    with pytest.raises(DecodeError):
        RunManifest.from_bytes(pack(wire))


def test_run_id_of_64_characters_is_accepted():
    assert RunManifest(run_id="r" * 64).run_id == "r" * 64


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",  # an empty map: run_id is required
        pack(["hash-test"]),
        msgpack.packb(dict(reversed(sorted(MANIFEST.to_wire().items())))),  # unsorted keys
        pack(MANIFEST.to_wire() | {"model": {"n_layer": "4"}}),
        pack(MANIFEST.to_wire() | {"seed": 1.0}),
    ],
    ids=["empty", "no-run-id", "array", "non-canonical", "str-for-int", "float-for-int"],
)
def test_malformed_manifest_bytes(data):
    with pytest.raises(DecodeError):
        RunManifest.from_bytes(data)


def test_unknown_manifest_fields_are_ignored_on_decode():
    wire = MANIFEST.to_wire() | {"zz_future": 1}
    wire["model"]["zz_future"] = "x"
    assert RunManifest.from_bytes(pack(wire)) == MANIFEST


def test_missing_manifest_fields_take_defaults():
    data = pack({"run_id": "hash-test"})
    assert RunManifest.from_bytes(data) == MANIFEST
    assert unpack(MANIFEST.to_bytes())["run_id"] == "hash-test"


def test_aggregation_is_appended_without_moving_old_hashes():
    """``hparams.aggregation`` is omit-default: a manifest that keeps the plain mean has the very
    bytes (and hash) it had before the field existed; a robust one is another run."""
    plain = RunManifest(run_id="agg")
    assert "aggregation" not in plain.to_wire()["hparams"]
    robust = plain.with_changes(hparams=dataclasses.replace(plain.hparams, aggregation="centered_clip"))
    assert robust.content_hash != plain.content_hash
    assert RunManifest.from_bytes(robust.to_bytes()).hparams.aggregation == "centered_clip"
    with pytest.raises(ValueError, match="aggregation"):
        plain.with_changes(hparams=dataclasses.replace(plain.hparams, aggregation="median-ish"))


def test_new_fields_are_checked_and_keep_old_hashes():
    assert "init_sha256" not in MANIFEST.to_wire() and "sha256" not in MANIFEST.to_wire()["data"]
    for bad in ({"init_sha256": "abc"}, {"init_sha256": "A" * 64}):
        with pytest.raises(ValueError, match="init_sha256"):
            MANIFEST.with_changes(**bad)
    with pytest.raises(DecodeError, match="data.source"):
        RunManifest.from_wire({**MANIFEST.to_wire(), "data": {"source": "internet"}})
