"""What every codec's bytes share: the part size, the one error decoders raise, bit packing, finite checks."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["PART_VALUES", "CodecError", "check_size", "finite", "pack_bits", "unpack_bits"]

PART_VALUES = 2**17  # values per all-reduce part (= hivemind's 512 KiB of fp32)


class CodecError(ValueError):
    """Bytes from a peer that no codec of ours would write (wrong length, out-of-range index,
    non-finite value). Decoders raise this and nothing else on bad input; the all-reduce turns
    it into a banned sender (reducer side) or a failed reducer (sender side)."""


def check_size(n: object) -> int:
    """A part's announced number of values, refused unless an int in 0..PART_VALUES."""
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= PART_VALUES:
        raise CodecError(f"a part of {n!r} values (at most {PART_VALUES})")
    return n


def finite(t: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(t).all()):
        raise CodecError(f"{what} holds non-finite values")
    return t


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    per_byte = 8 // bits
    pad = (-len(codes)) % per_byte
    c = np.concatenate([codes, np.zeros(pad, np.uint8)]).reshape(-1, per_byte)
    out = np.zeros(len(c), np.uint8)
    for j in range(per_byte):
        out |= c[:, j] << (bits * j)
    return out.tobytes()


def unpack_bits(data: bytes, bits: int, n: int) -> np.ndarray:
    per_byte = 8 // bits
    raw = np.frombuffer(data, np.uint8)
    mask = (1 << bits) - 1
    codes = np.stack([(raw >> (bits * j)) & mask for j in range(per_byte)], axis=1).reshape(-1)
    return codes[:n]
