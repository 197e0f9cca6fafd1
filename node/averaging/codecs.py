"""Pseudo-gradient codecs: what one all-reduce part looks like on the wire.

The token-space quality simulation and the swarm share this exact code. ``none`` and ``fp16``
are hivemind's own codecs (hivemind is imported lazily for them); the others are ours. (Our own
int8 too: hivemind 1.1.12's UNIFORM_8BIT cannot be decoded with numpy 2, whose ``int()`` refuses
the 1-element array its ``extract`` passes; and its mu +- 6 sigma range clips outliers that a
per-block absmax keeps.) Each codec turns a flat fp32 vector into bytes and back:

    name    uplink (sender -> reducer)                       ~bytes/value   error feedback
    none    fp32 (hivemind NONE)                             4
    fp16    fp16 (hivemind FLOAT16)                          2
    int8    8-bit uniform, absmax scale per 256-value block  1.008
    q4      4-bit uniform, absmax scale per 64-value block   0.531
    q2ef    2-bit uniform, absmax scale per 128-value block  0.266          yes
    topkef  top 3% magnitudes: int32 index + fp16 value      0.18           yes
    topk2ef top 64 of every 4096 values, 2-bit values         0.036          yes, decaying (0.95)

The reducer averages what it receives and sends the average back (the *downlink*): with the same
quantizer for the dense codecs, and as all non-zeros for the sparse ones, whose average has the
union of the senders' supports (``topkef``: int32 index + fp16 value; ``topk2ef``: per chunk a count,
then uint16 in-chunk indices and fp16 values).

``topk2ef`` is SparseLoCo's recipe (chunked top-k, 2-bit values, error feedback that decays): its
uplink part is, per chunk of ``block`` values, an fp16 absmax scale and a uint16 count (at most
``per_chunk``; zeros are never sent, so an on-grid vector re-encodes to itself), then all chunks'
uint16 in-chunk indices (increasing within a chunk) and 2-bit codes on the grid (c x 2/3 - 1) x
scale. In-chunk indices cost 2 bytes where a flat index costs 4. Its error feedback keeps
``0.95 x`` the residual (the decaying accumulator plays outer momentum's part): run it with the
outer optimizer ``protocol.manifest.CODEC_OUTER`` names (lr 2, no momentum): with Nesterov 0.7 / 0.9 it
learned slowest, and ``topkef`` diverged with it (BENCHMARKS.md, "Quality").

Why blocks never straddle parts (hard to undo): hivemind cuts every tensor into parts of
``PART_VALUES`` values (we fix the part size so that the cut is exact); blocks restart at each
part. So a vector quantized once at the node (for error feedback) re-quantizes to the very same
codes when the all-reduce sends it: the uplink adds no error beyond what the residual recorded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from node.averaging.packing import PART_VALUES, CodecError, check_size, finite, pack_bits, unpack_bits
from node.averaging.sparse import (decode_chunked, decode_chunked_down, decode_sparse, encode_chunked, encode_chunked_down,
                                   encode_sparse)

__all__ = ["CODECS", "PART_VALUES", "Codec", "CodecError", "ErrorFeedback", "get_codec", "quantize_roundtrip"]


@dataclass(frozen=True)
class Codec:
    """A codec for flat fp32 vectors; ``kind`` is "hivemind", "uniform", "topk" or "chunked"."""

    name: str
    kind: str
    hivemind_type: str = ""  # hivemind: the CompressionType name
    bits: int = 32  # uniform: 8, 4 or 2; chunked: 2
    block: int = 0  # uniform: values per absmax scale; chunked: values per chunk
    density: float = 0.0  # topk, chunked: share of values kept
    error_feedback: bool = False
    ef_decay: float = 1.0  # error feedback keeps this share of the residual for the next round

    @property
    def per_chunk(self) -> int:
        """chunked: the most values a chunk sends."""
        return round(self.density * self.block)

    @property
    def bytes_per_value(self) -> float:
        if self.kind == "hivemind":
            return {"NONE": 4.0, "FLOAT16": 2.0}[self.hivemind_type]
        if self.kind == "uniform":
            return self.bits / 8 + 2 / self.block
        if self.kind == "chunked":  # a full chunk: indices, codes, then scale + count per chunk
            return self.density * (2 + self.bits / 8) + 4 / self.block
        return self.density * 6

    # --- dense uniform quantizer ---------------------------------------------------------
    def _uniform_codes(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        n = x.numel()
        pad = (-n) % self.block
        blocks = torch.nn.functional.pad(x, (0, pad)).view(-1, self.block)
        scale = blocks.abs().amax(dim=1).to(torch.float16)  # stored in fp16: use that value for coding too
        s = scale.float().clamp_min(1e-30)
        levels = (1 << self.bits) - 1
        codes = torch.round((blocks / s[:, None] + 1) * (levels / 2)).clamp_(0, levels).to(torch.uint8)
        return codes.view(-1)[:n].numpy(), scale.numpy()

    def _uniform_values(self, codes: np.ndarray, scale: np.ndarray, n: int) -> torch.Tensor:
        levels = (1 << self.bits) - 1
        pad = (-n) % self.block
        c = torch.from_numpy(np.concatenate([codes.astype(np.float32), np.zeros(pad, np.float32)])).view(-1, self.block)
        s = torch.from_numpy(scale.astype(np.float32))
        return ((c * (2 / levels) - 1) * s[:, None]).view(-1)[:n]

    # --- bytes ---------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> bytes:
        """Uplink bytes of one part (a flat fp32 CPU tensor)."""
        x = x.detach().reshape(-1).float()
        if self.kind == "hivemind":
            return self.to_hivemind(x).SerializeToString()
        if self.kind == "uniform":
            codes, scale = self._uniform_codes(x)
            return scale.tobytes() + (codes.tobytes() if self.bits == 8 else pack_bits(codes, self.bits))
        if self.kind == "chunked":
            return encode_chunked(x, self.block, self.per_chunk, self.bits)
        k = max(1, math.ceil(self.density * x.numel()))
        idx = torch.topk(x.abs(), k, sorted=False).indices.sort().values
        return encode_sparse(idx, x[idx])

    def encoded_size(self, n: int) -> int:
        """Exact uplink bytes of ``n`` values for a uniform codec."""
        per_byte = 8 // self.bits
        return 2 * -(-n // self.block) + -(-n // per_byte)

    def decode(self, data: bytes, n: int) -> torch.Tensor:
        """``n`` fp32 values from uplink bytes; raises :class:`CodecError` on anything malformed."""
        check_size(n)
        if self.kind == "hivemind":
            return decode_hivemind(data, n)
        if self.kind == "uniform":
            if len(data) != self.encoded_size(n):
                raise CodecError(f"{self.name}: {len(data)} bytes for {n} values, expected {self.encoded_size(n)}")
            nblocks = -(-n // self.block)
            scale = np.frombuffer(data[: 2 * nblocks], np.float16)
            finite(torch.from_numpy(scale.astype(np.float32)), f"{self.name} scales")
            body = data[2 * nblocks:]
            codes = np.frombuffer(body, np.uint8) if self.bits == 8 else unpack_bits(body, self.bits, n)
            return self._uniform_values(codes[:n], scale, n)
        if self.kind == "chunked":
            return decode_chunked(data, n, self.block, self.per_chunk, self.bits)
        return decode_sparse(data, n)

    def encode_down(self, x: torch.Tensor) -> bytes:
        """Downlink bytes (reducer -> senders) of an averaged part."""
        x = x.detach().reshape(-1).float()
        if self.kind == "chunked":
            return encode_chunked_down(x, self.block)
        if self.kind != "topk":
            return self.encode(x)
        idx = torch.nonzero(x, as_tuple=True)[0]
        return encode_sparse(idx, x[idx])

    def decode_down(self, data: bytes, n: int) -> torch.Tensor:
        """``n`` fp32 values from downlink bytes; raises :class:`CodecError` on anything malformed."""
        if self.kind == "topk":
            return decode_sparse(data, n)
        if self.kind == "chunked":
            return decode_chunked_down(data, n, self.block)
        return self.decode(data, n)

    def to_hivemind(self, x: torch.Tensor):  # -> hivemind.proto.runtime_pb2.Tensor
        from hivemind.compression import serialize_torch_tensor
        from hivemind.proto import runtime_pb2

        return serialize_torch_tensor(x.reshape(-1).float(), runtime_pb2.CompressionType.Value(self.hivemind_type))

    def roundtrip(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.numel()).view_as(x)


def decode_hivemind(data: bytes, n: int) -> torch.Tensor:
    """A serialized hivemind tensor (NONE / FLOAT16) of exactly ``n`` finite values."""
    from hivemind.compression import deserialize_torch_tensor
    from hivemind.proto import runtime_pb2

    try:
        return check_hivemind(deserialize_torch_tensor(runtime_pb2.Tensor.FromString(data)), n)
    except CodecError:
        raise
    except Exception as e:  # protobuf, numpy and torch each raise their own types on garbage
        raise CodecError(f"not a hivemind tensor: {type(e).__name__}") from None


def check_hivemind(t: torch.Tensor, n: int) -> torch.Tensor:
    if t.numel() != n or not t.dtype.is_floating_point:
        raise CodecError(f"hivemind tensor of {t.numel()} {t.dtype} values, expected {n} floats")
    return finite(t.float().reshape(-1), "hivemind tensor")


CODECS: dict[str, Codec] = {
    "none": Codec("none", "hivemind", hivemind_type="NONE"),
    "fp16": Codec("fp16", "hivemind", hivemind_type="FLOAT16"),
    "int8": Codec("int8", "uniform", bits=8, block=256),
    "q4": Codec("q4", "uniform", bits=4, block=64),
    "q2ef": Codec("q2ef", "uniform", bits=2, block=128, error_feedback=True),
    "topkef": Codec("topkef", "topk", density=0.03, error_feedback=True),
    "topk2ef": Codec("topk2ef", "chunked", bits=2, block=4096, density=64 / 4096, error_feedback=True, ef_decay=0.95),
}


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; choose one of {sorted(CODECS)}") from None


def _parts(t: torch.Tensor) -> list[torch.Tensor]:
    return list(t.detach().reshape(-1).split(PART_VALUES))


def quantize_roundtrip(codec: Codec, tensor: torch.Tensor) -> torch.Tensor:
    """What the all-reduce's uplink makes of ``tensor``: the codec applied part by part."""
    return torch.cat([codec.roundtrip(p) for p in _parts(tensor)]).view_as(tensor)


class ErrorFeedback:
    """Residuals of what compression dropped, added back before the next round's compression.

    ``apply(pseudo)`` returns the vectors to send (already on the codec's grid) and keeps
    ``pseudo + decay x residual - sent`` as the new residual (``decay`` is the codec's ``ef_decay``:
    1 keeps every dropped value until it is sent). Residuals stay on the node and are checkpointed
    (``state_dict``).
    """

    def __init__(self, codec: Codec, shapes: list[torch.Size]):
        self.codec = codec
        self.residuals = [torch.zeros(s) for s in shapes]

    def apply(self, pseudo: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, g in enumerate(pseudo):
            corrected = g + self.codec.ef_decay * self.residuals[i]  # decay 1: exactly g + residual
            sent = quantize_roundtrip(self.codec, corrected)
            self.residuals[i] = corrected - sent
            out.append(sent)
        return out

    def state_dict(self) -> list[torch.Tensor]:
        return [r.clone() for r in self.residuals]

    def load_state_dict(self, residuals: list[torch.Tensor]) -> None:
        assert len(residuals) == len(self.residuals), "residuals of another model shape"
        self.residuals = [r.clone().float() for r in residuals]
