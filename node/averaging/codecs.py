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

The reducer averages what it receives and sends the average back (the *downlink*): with the same
quantizer for the dense codecs, and as all non-zeros (index + fp16) for top-k, whose average has
the union of the senders' supports.

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

__all__ = ["CODECS", "PART_VALUES", "Codec", "CodecError", "ErrorFeedback", "get_codec", "quantize_roundtrip"]

PART_VALUES = 2**17  # values per all-reduce part (= hivemind's 512 KiB of fp32)


class CodecError(ValueError):
    """Bytes from a peer that no codec of ours would write (wrong length, out-of-range index,
    non-finite value). Decoders raise this and nothing else on bad input; the all-reduce turns
    it into a banned sender (reducer side) or a failed reducer (sender side)."""


def _finite(t: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(t).all()):
        raise CodecError(f"{what} holds non-finite values")
    return t


def _pack(codes: np.ndarray, bits: int) -> bytes:
    per_byte = 8 // bits
    pad = (-len(codes)) % per_byte
    c = np.concatenate([codes, np.zeros(pad, np.uint8)]).reshape(-1, per_byte)
    out = np.zeros(len(c), np.uint8)
    for j in range(per_byte):
        out |= c[:, j] << (bits * j)
    return out.tobytes()


def _unpack(data: bytes, bits: int, n: int) -> np.ndarray:
    per_byte = 8 // bits
    raw = np.frombuffer(data, np.uint8)
    mask = (1 << bits) - 1
    codes = np.stack([(raw >> (bits * j)) & mask for j in range(per_byte)], axis=1).reshape(-1)
    return codes[:n]


@dataclass(frozen=True)
class Codec:
    """A codec for flat fp32 vectors; ``kind`` is "hivemind", "uniform" or "topk"."""

    name: str
    kind: str
    hivemind_type: str = ""  # hivemind: the CompressionType name
    bits: int = 32  # uniform: 8, 4 or 2
    block: int = 0  # uniform: values per absmax scale
    density: float = 0.0  # topk: share of values kept
    error_feedback: bool = False

    @property
    def bytes_per_value(self) -> float:
        if self.kind == "hivemind":
            return {"NONE": 4.0, "FLOAT16": 2.0}[self.hivemind_type]
        if self.kind == "uniform":
            return self.bits / 8 + 2 / self.block
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
            return scale.tobytes() + (codes.tobytes() if self.bits == 8 else _pack(codes, self.bits))
        k = max(1, math.ceil(self.density * x.numel()))
        idx = torch.topk(x.abs(), k, sorted=False).indices.sort().values
        return encode_sparse(idx, x[idx])

    def encoded_size(self, n: int) -> int:
        """Exact uplink bytes of ``n`` values for a uniform codec."""
        per_byte = 8 // self.bits
        return 2 * -(-n // self.block) + -(-n // per_byte)

    def decode(self, data: bytes, n: int) -> torch.Tensor:
        """``n`` fp32 values from uplink bytes; raises :class:`CodecError` on anything malformed."""
        if not isinstance(n, int) or not 0 <= n <= PART_VALUES:
            raise CodecError(f"a part of {n!r} values (at most {PART_VALUES})")
        if self.kind == "hivemind":
            return decode_hivemind(data, n)
        if self.kind == "uniform":
            if len(data) != self.encoded_size(n):
                raise CodecError(f"{self.name}: {len(data)} bytes for {n} values, expected {self.encoded_size(n)}")
            nblocks = -(-n // self.block)
            scale = np.frombuffer(data[: 2 * nblocks], np.float16)
            _finite(torch.from_numpy(scale.astype(np.float32)), f"{self.name} scales")
            body = data[2 * nblocks:]
            codes = np.frombuffer(body, np.uint8) if self.bits == 8 else _unpack(body, self.bits, n)
            return self._uniform_values(codes[:n], scale, n)
        return decode_sparse(data, n)

    def encode_down(self, x: torch.Tensor) -> bytes:
        """Downlink bytes (reducer -> senders) of an averaged part."""
        if self.kind != "topk":
            return self.encode(x)
        idx = torch.nonzero(x, as_tuple=True)[0]
        return encode_sparse(idx, x[idx])

    def to_hivemind(self, x: torch.Tensor):  # -> hivemind.proto.runtime_pb2.Tensor
        from hivemind.compression import serialize_torch_tensor
        from hivemind.proto import runtime_pb2

        return serialize_torch_tensor(x.reshape(-1).float(), runtime_pb2.CompressionType.Value(self.hivemind_type))

    def roundtrip(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.numel()).view_as(x)


def encode_sparse(idx: torch.Tensor, values: torch.Tensor) -> bytes:
    return idx.to(torch.int32).numpy().tobytes() + values.half().numpy().tobytes()


def decode_sparse(data: bytes, n: int) -> torch.Tensor:
    """Sparse bytes (int32 indices, strictly increasing and < n, then fp16 values) -> n values."""
    if not isinstance(n, int) or not 0 <= n <= PART_VALUES:
        raise CodecError(f"a part of {n!r} values (at most {PART_VALUES})")
    if len(data) % 6 or len(data) // 6 > n:
        raise CodecError(f"sparse part of {len(data)} bytes for {n} values")
    k = len(data) // 6
    idx = torch.from_numpy(np.frombuffer(data[: 4 * k], np.int32).astype(np.int64))
    if k and (int(idx[0]) < 0 or int(idx[-1]) >= n or (k > 1 and not bool((idx[1:] > idx[:-1]).all()))):
        raise CodecError("sparse indices out of range or not strictly increasing")
    vals = _finite(torch.from_numpy(np.frombuffer(data[4 * k:], np.float16).astype(np.float32)), "sparse values")
    out = torch.zeros(n)
    out[idx] = vals
    return out


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
    return _finite(t.float().reshape(-1), "hivemind tensor")


CODECS: dict[str, Codec] = {
    "none": Codec("none", "hivemind", hivemind_type="NONE"),
    "fp16": Codec("fp16", "hivemind", hivemind_type="FLOAT16"),
    "int8": Codec("int8", "uniform", bits=8, block=256),
    "q4": Codec("q4", "uniform", bits=4, block=64),
    "q2ef": Codec("q2ef", "uniform", bits=2, block=128, error_feedback=True),
    "topkef": Codec("topkef", "topk", density=0.03, error_feedback=True),
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
    ``pseudo + residual - sent`` as the new residual. Residuals stay on the node and are
    checkpointed (``state_dict``).
    """

    def __init__(self, codec: Codec, shapes: list[torch.Size]):
        self.codec = codec
        self.residuals = [torch.zeros(s) for s in shapes]

    def apply(self, pseudo: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, g in enumerate(pseudo):
            corrected = g + self.residuals[i]
            sent = quantize_roundtrip(self.codec, corrected)
            self.residuals[i] = corrected - sent
            out.append(sent)
        return out

    def state_dict(self) -> list[torch.Tensor]:
        return [r.clone() for r in self.residuals]

    def load_state_dict(self, residuals: list[torch.Tensor]) -> None:
        assert len(residuals) == len(self.residuals), "residuals of another model shape"
        self.residuals = [r.clone().float() for r in residuals]
