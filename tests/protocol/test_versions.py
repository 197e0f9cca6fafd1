"""Software versions: parsing, the manifest's ``min_version``, and heartbeat fields that keep v1 bytes."""
from __future__ import annotations

import pytest

from protocol import (
    SOFTWARE_VERSION,
    DecodeError,
    Heartbeat,
    IncompatibleVersion,
    RunManifest,
    check_software_version,
    is_older,
    parse_version,
)


def test_parse_version():
    assert parse_version("0.2.0") == (0, 2, 0)
    assert parse_version("1.2") == (1, 2, 0)
    assert parse_version("3") == (3, 0, 0)
    assert parse_version("1.2.3rc1".replace("rc", "-rc")) == (1, 2, 3)
    assert parse_version("0.10.0") > parse_version("0.9.9")
    for bad in ("", "x", "1..2", "v1.2", "1" * 10, "1.2 3"):
        with pytest.raises(ValueError):
            parse_version(bad)


def test_software_version_parses():
    parse_version(SOFTWARE_VERSION)


def test_min_version_refuses_older_software_and_names_both():
    check_software_version("", "0.0.1")
    check_software_version("0.2.0", "0.2.0")
    check_software_version("0.2.0", "0.10.0")
    with pytest.raises(IncompatibleVersion, match=r"needs capaswarm 0\.3\.0 or newer, you run 0\.2\.9"):
        check_software_version("0.3.0", "0.2.9")


def test_is_older_is_unknown_for_missing_versions():
    assert is_older("0.1.0", "0.2.0") is True
    assert is_older("0.2.0", "0.2.0") is False
    assert is_older("", "0.2.0") is None


def test_min_version_is_omitted_when_unset_so_old_manifests_keep_their_hash():
    old = RunManifest(run_id="r")
    assert "min_version" not in old.to_wire()
    pinned = RunManifest(run_id="r", min_version="0.2.0")
    assert pinned.to_wire()["min_version"] == "0.2.0"
    assert pinned.content_hash != old.content_hash
    assert RunManifest.from_bytes(pinned.to_bytes()) == pinned
    with pytest.raises(ValueError, match="not a version number"):
        RunManifest(run_id="r", min_version="latest")
    with pytest.raises(DecodeError):
        RunManifest.from_wire({"run_id": "r", "min_version": "latest"})


def test_heartbeat_new_fields_are_appended_and_omitted_by_default():
    hb = Heartbeat(run_id="r", peer_id="p", seq=1, sent_at=1.0, round=0, status="training")
    assert not {"software_version", "maddrs", "role", "reachability"} & set(hb.to_wire())
    full = Heartbeat(run_id="r", peer_id="p", seq=1, sent_at=1.0, round=0, status="training",
                     software_version="0.2.0", maddrs=["/ip4/127.0.0.1/tcp/1"], role="client", reachability="private")
    assert Heartbeat.from_wire(full.to_wire()) == full
    with pytest.raises(DecodeError, match="maddrs"):
        Heartbeat.from_wire({**full.to_wire(), "maddrs": ["/ip4/1.2.3.4/tcp/1"] * 17})
