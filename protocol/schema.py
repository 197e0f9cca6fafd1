"""Typed wire structs: dataclasses checked field by field against their annotations.

Rules (msgspec's evolution rules, kept by hand):
- a struct goes on the wire as a map from field name to value;
- decoders ignore unknown fields (newer peers may add some) and fill missing fields that
  have a default; a missing field without a default is a :class:`DecodeError`;
- a field appended after version 1 carries ``metadata={"omit_default": True}``: it is written only
  when it differs from its default, so messages that do not use it keep their version-1 bytes
  (``tests/data/golden_v1.json`` stays reproducible) and old decoders see nothing new;
- types are strict: an ``int`` field takes no bool or float, a ``float`` field takes an int
  (MessagePack writes 1.0 as a float, but hand-made clients may send 1), ``str`` limits length.

Supported annotations: ``int``, ``float``, ``str``, ``bool``, ``bytes``, ``X | None``,
``list[X]``, ``dict[str, X]``, and nested ``WireStruct`` dataclasses.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar, TypeVar

from .errors import DecodeError

__all__ = ["MAX_STR", "WireStruct"]

MAX_STR = 256  # characters in any string field
MAX_LIST = 1024  # items in any list or dict field
T = TypeVar("T", bound="WireStruct")


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(value, inner, where)
    if origin is list:
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise DecodeError(f"{where}: expected a list of at most {MAX_LIST} items")
        (item,) = typing.get_args(tp)
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or len(value) > MAX_LIST:
            raise DecodeError(f"{where}: expected a map of at most {MAX_LIST} items")
        _, item = typing.get_args(tp)
        return {_check(k, str, where): _check(v, item, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, WireStruct):
        return tp.from_wire(value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise DecodeError(f"{where}: expected a bool")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise DecodeError(f"{where}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DecodeError(f"{where}: expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or len(value) > MAX_STR:
            raise DecodeError(f"{where}: expected a string of at most {MAX_STR} characters")
        return value
    if tp is bytes:
        if not isinstance(value, bytes):
            raise DecodeError(f"{where}: expected bytes")
        return value
    raise TypeError(f"unsupported wire annotation {tp!r}")  # programmer error, not input


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a struct class, computed once per class (``get_type_hints``
    evaluates every string annotation on each call: most of a decode's time, uncached)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


class WireStruct:
    """Mixin for frozen dataclasses that travel as MessagePack maps."""

    KIND: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if f.metadata.get("omit_default") and v == (
                f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            ):
                continue
            if isinstance(v, WireStruct):
                v = v.to_wire()
            elif isinstance(v, list):
                v = [x.to_wire() if isinstance(x, WireStruct) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_wire(cls: type[T], data: Any, where: str = "") -> T:
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise DecodeError(f"{where}: expected a map")
        hints = _type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                kwargs[f.name] = _check(data[f.name], hints[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise DecodeError(f"{where}: missing field {f.name!r}")
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as e:  # __post_init__ validation
            raise DecodeError(f"{where}: {e}") from None
