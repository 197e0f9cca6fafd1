"""Canonical MessagePack: the only byte format the protocol signs.

Canonical means one value has exactly one encoding: maps with string keys sorted by their
UTF-8 bytes, the smallest int encoding (msgpack's default), floats always float64, strings
as ``str``, binary as ``bin``. No extension types, no non-string map keys. ``unpack`` rejects
anything that would not re-encode to the same bytes, so a signature over bytes is a
signature over one value.

Invariant (fuzz-tested): ``unpack(data)`` returns a value or raises :class:`DecodeError`
(or :class:`OversizedError`), never anything else.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack

from .errors import DecodeError, LocalProtocolError, OversizedError

__all__ = ["DEFAULT_MAX_SIZE", "pack", "unpack"]

DEFAULT_MAX_SIZE = 64 * 1024  # bytes; reports and heartbeats are ~1 KB
_MAX_DEPTH = 8


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # lone surrogates, e.g. from os.fsdecode / argv of non-UTF-8 bytes
        raise LocalProtocolError("strings must be valid Unicode (no lone surrogates)") from None


def _canonical(obj: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise LocalProtocolError("value nested too deeply")
    if obj is None or isinstance(obj, (bool, bytes)):
        return obj
    if isinstance(obj, str):
        _utf8(obj)
        return obj
    if isinstance(obj, int):
        if not -(2**63) <= obj < 2**64:
            raise LocalProtocolError("integer out of 64-bit range")
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise LocalProtocolError("NaN and infinities are not allowed on the wire")
        return obj
    if isinstance(obj, (list, tuple)):
        return [_canonical(x, depth + 1) for x in obj]
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise LocalProtocolError("map keys must be strings")
        return {k: _canonical(obj[k], depth + 1) for k in sorted(obj, key=_utf8)}
    raise LocalProtocolError(f"type {type(obj).__name__} cannot go on the wire")


def pack(obj: Any) -> bytes:
    """Encode ``obj`` canonically; raise :class:`LocalProtocolError` for unencodable values."""
    data: bytes = msgpack.packb(_canonical(obj), use_bin_type=True)  # msgpack is untyped: say what it returns
    return data


def _no_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"extension type {code} is not allowed")


def unpack(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Decode canonical MessagePack from untrusted ``data``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("expected bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise OversizedError(f"{len(data)} bytes exceeds the {max_size}-byte cap")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_no_ext,
        )
    except DecodeError:
        raise
    except Exception as e:  # msgpack raises a zoo of types on bad input; normalise at the boundary
        raise DecodeError(f"malformed MessagePack: {type(e).__name__}") from None
    try:
        canonical = pack(obj)
    except LocalProtocolError as e:
        raise DecodeError(f"value not allowed on the wire: {e}") from None
    if canonical != data:
        raise DecodeError("MessagePack is not in canonical form")
    return obj
