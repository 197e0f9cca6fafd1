"""The sparse codecs' bytes: flat top-k (``topkef``) and chunked top-k with 2-bit values (``topk2ef``).

Wire layouts (hard to undo: peers of one run must read each other's parts):

    flat, both ways      int32 indices (strictly increasing, < n), then fp16 values
    chunked, uplink      per chunk of ``block`` values an fp16 absmax scale, then per chunk a uint16
                         count (<= ``per_chunk``), then every chunk's uint16 in-chunk indices (strictly
                         increasing within a chunk), then 2-bit codes packed four to a byte; a code c
                         means (c x 2/3 - 1) x the chunk's scale
    chunked, downlink    per chunk a uint16 count, then uint16 in-chunk indices, then fp16 values

Why in-chunk indices: a uint16 costs half an int32, and chunks cap what one large region of the
vector can take (SparseLoCo's chunked top-k). Why zeros are never sent: a vector already on the grid
(what error feedback hands the all-reduce) then re-encodes to the very same bytes.
"""
from __future__ import annotations

import numpy as np
import torch

from node.averaging.packing import CodecError, check_size, finite, pack_bits, unpack_bits

__all__ = ["decode_chunked", "decode_chunked_down", "decode_sparse", "encode_chunked", "encode_chunked_down", "encode_sparse"]


def encode_sparse(idx: torch.Tensor, values: torch.Tensor) -> bytes:
    return idx.to(torch.int32).numpy().tobytes() + values.half().numpy().tobytes()


def decode_sparse(data: bytes, n: int) -> torch.Tensor:
    """Sparse bytes (int32 indices, strictly increasing and < n, then fp16 values) -> n values."""
    check_size(n)
    if len(data) % 6 or len(data) // 6 > n:
        raise CodecError(f"sparse part of {len(data)} bytes for {n} values")
    k = len(data) // 6
    idx = torch.from_numpy(np.frombuffer(data[: 4 * k], np.int32).astype(np.int64))
    if k and (int(idx[0]) < 0 or int(idx[-1]) >= n or (k > 1 and not bool((idx[1:] > idx[:-1]).all()))):
        raise CodecError("sparse indices out of range or not strictly increasing")
    vals = finite(torch.from_numpy(np.frombuffer(data[4 * k:], np.float16).astype(np.float32)), "sparse values")
    out = torch.zeros(n)
    out[idx] = vals
    return out


def _chunks(n: int, block: int) -> int:
    return -(-check_size(n) // block)


def encode_chunked(x: torch.Tensor, block: int, per_chunk: int, bits: int) -> bytes:
    """Uplink bytes of a flat fp32 part: the ``per_chunk`` largest magnitudes of every ``block`` values."""
    n, c = x.numel(), block
    rows = torch.nn.functional.pad(x, (0, (-n) % c)).view(-1, c)
    idx = torch.topk(rows.abs(), min(per_chunk, c), dim=1, sorted=False).indices.sort(dim=1).values
    vals = rows.gather(1, idx)
    scale = vals.abs().amax(dim=1).to(torch.float16)  # stored in fp16: code with that very value
    s = scale.float()
    keep = (vals != 0) & (s[:, None] > 0)  # zeros (and chunks whose scale underflows) send nothing
    levels = (1 << bits) - 1
    codes = torch.round((vals / s.clamp_min(1e-30)[:, None] + 1) * (levels / 2)).clamp_(0, levels).to(torch.uint8)
    counts = keep.sum(dim=1).to(torch.int32)
    return (scale.numpy().tobytes() + counts.numpy().astype(np.uint16).tobytes()
            + idx[keep].numpy().astype(np.uint16).tobytes() + pack_bits(codes[keep].numpy(), bits))


def _positions(counts: np.ndarray, idx: np.ndarray, n: int, block: int, limit: int) -> torch.Tensor:
    """Flat positions of in-chunk indices, after checking counts and increasing, in-range indices."""
    nchunks, c = len(counts), block
    lengths = np.full(nchunks, c, np.int64)
    if nchunks:
        lengths[-1] = n - c * (nchunks - 1)
    if (counts > np.minimum(lengths, limit)).any():
        raise CodecError("chunked part: a chunk claims more values than it may send")
    row = np.repeat(np.arange(nchunks, dtype=np.int64), counts)
    pos = idx.astype(np.int64)
    if (pos >= lengths[row]).any():
        raise CodecError("chunked part: an in-chunk index out of range")
    same = row[1:] == row[:-1]
    if (same & (pos[1:] <= pos[:-1])).any():
        raise CodecError("chunked part: in-chunk indices not strictly increasing")
    return torch.from_numpy(row * c + pos)


def decode_chunked(data: bytes, n: int, block: int, per_chunk: int, bits: int) -> torch.Tensor:
    """``n`` fp32 values from uplink bytes; :class:`CodecError` on anything malformed."""
    nchunks = _chunks(n, block)
    head = 4 * nchunks
    if len(data) < head:
        raise CodecError(f"chunked part: {len(data)} bytes for {n} values, expected at least {head}")
    scale = np.frombuffer(data[: 2 * nchunks], np.float16).astype(np.float32)
    finite(torch.from_numpy(scale), "chunked part scales")
    counts = np.frombuffer(data[2 * nchunks: head], np.uint16).astype(np.int64)
    k = int(counts.sum())
    if len(data) != head + 2 * k + -(-k // (8 // bits)):
        raise CodecError(f"chunked part: {len(data)} bytes for {k} kept values of {n}")
    flat = _positions(counts, np.frombuffer(data[head: head + 2 * k], np.uint16), n, block, per_chunk)
    codes = torch.from_numpy(unpack_bits(data[head + 2 * k:], bits, k).astype(np.float32))
    s = torch.from_numpy(np.repeat(scale, counts))
    out = torch.zeros(n)
    out[flat] = (codes * (2 / ((1 << bits) - 1)) - 1) * s
    return out


def encode_chunked_down(x: torch.Tensor, block: int) -> bytes:
    """Downlink bytes of an averaged part: every non-zero, as a count per chunk, in-chunk indices, fp16 values."""
    nchunks = _chunks(x.numel(), block)
    flat = torch.nonzero(x, as_tuple=True)[0]
    counts = torch.bincount(flat // block, minlength=nchunks)
    return (counts.numpy().astype(np.uint16).tobytes() + (flat % block).numpy().astype(np.uint16).tobytes()
            + x[flat].half().numpy().tobytes())


def decode_chunked_down(data: bytes, n: int, block: int) -> torch.Tensor:
    """``n`` fp32 values from downlink bytes; :class:`CodecError` on anything malformed."""
    nchunks = _chunks(n, block)
    if len(data) < 2 * nchunks or (len(data) - 2 * nchunks) % 4:
        raise CodecError(f"chunked downlink of {len(data)} bytes for {n} values")
    counts = np.frombuffer(data[: 2 * nchunks], np.uint16).astype(np.int64)
    k = (len(data) - 2 * nchunks) // 4
    if int(counts.sum()) != k:
        raise CodecError(f"chunked downlink counts {int(counts.sum())} values, carries {k}")
    body = data[2 * nchunks:]
    flat = _positions(counts, np.frombuffer(body[: 2 * k], np.uint16), n, block, block)
    vals = finite(torch.from_numpy(np.frombuffer(body[2 * k:], np.float16).astype(np.float32)), "chunked downlink values")
    out = torch.zeros(n)
    out[flat] = vals
    return out
