"""protocol.manifest.parse_manifest_file: the one parser of manifest files (TOML or msgpack)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("name", ["run.toml", "RUN.TOML"])
def test_manifest_files_parse_in_one_place(name):
    """TOML (top level or under [manifest]) or msgpack; anything else is a DecodeError, never another error."""
    from protocol import DecodeError
    from protocol.manifest import ROUND_TOKENS, parse_manifest_file

    flat = parse_manifest_file(b'run_id = "r"\ncodec = "int8"\n', name)
    assert flat == parse_manifest_file(b'[manifest]\nrun_id = "r"\ncodec = "int8"\n', name)
    assert flat.codec == "int8" and flat.round_tokens == ROUND_TOKENS
    assert parse_manifest_file(flat.to_bytes(), "run.msgpack") == flat
    for bad, file in [(b"run_id = [", name), (b"\xff\xfe", name), (b"\xc1", "run.msgpack")]:
        with pytest.raises(DecodeError):
            parse_manifest_file(bad, file)
    with pytest.raises(DecodeError, match="codec"):
        parse_manifest_file(b'run_id = "r"\ncodec = "gzip"\n', name)
