"""Our codecs in hivemind's compression slot: the dtype tag of our parts, both directions of the all-reduce."""
from __future__ import annotations


import logging
import math

import torch
from hivemind.compression import CompressionBase, CompressionInfo, deserialize_torch_tensor
from hivemind.proto import runtime_pb2

from node.averaging.codecs import PART_VALUES, Codec, CodecError, check_hivemind, get_codec

logger = logging.getLogger(__name__)


TAG = "capaswarm:"  # dtype field of parts in our own codecs; hivemind's codecs keep their own


class WireCodec(CompressionBase):
    """A ``node.averaging.codecs.Codec`` in hivemind's compression slot, for both directions of the all-reduce."""

    compression_type = runtime_pb2.CompressionType.NONE  # unused: our parts are told apart by dtype

    def __init__(self, codec: Codec):
        self.codec = codec

    def compress(self, tensor: torch.Tensor, info: CompressionInfo, allow_inplace: bool = False) -> runtime_pb2.Tensor:
        return self._wrap(tensor, down=False)

    def compress_down(self, tensor: torch.Tensor) -> runtime_pb2.Tensor:
        return self._wrap(tensor, down=True)

    def _wrap(self, tensor: torch.Tensor, down: bool) -> runtime_pb2.Tensor:
        if self.codec.kind == "hivemind":
            return self.codec.to_hivemind(tensor)
        data = self.codec.encode_down(tensor) if down else self.codec.encode(tensor)
        tag = f"{TAG}{self.codec.name}{':down' if down else ''}"
        return runtime_pb2.Tensor(buffer=data, size=list(tensor.shape), dtype=tag, requires_grad=False)

    def extract(self, serialized: runtime_pb2.Tensor) -> torch.Tensor:
        """A part from a peer -> fp32 values; raises :class:`CodecError` for anything malformed
        (another codec, a size over one part, non-finite values, a wrong byte count)."""
        size = list(serialized.size)
        if len(size) > 8 or any(d < 0 for d in size) or math.prod(size) > PART_VALUES:
            raise CodecError(f"part of shape {size[:8]} (at most {PART_VALUES} values)")
        n = math.prod(size)
        if not serialized.dtype.startswith(TAG):
            if self.codec.kind != "hivemind":
                raise CodecError(f"peer sent a {serialized.dtype[:32]!r} part; this run uses {self.codec.name!r}")
            try:
                tensor = deserialize_torch_tensor(serialized)
            except Exception as e:  # protobuf / numpy / torch errors on garbage
                raise CodecError(f"not a hivemind tensor: {type(e).__name__}") from None
            return check_hivemind(tensor, n).view(*size)
        name = serialized.dtype[len(TAG):].removesuffix(":down")
        if name != self.codec.name:
            raise CodecError(f"peer sent a {name[:32]!r} part; this run uses {self.codec.name!r}")
        decode = self.codec.decode_down if serialized.dtype.endswith(":down") else self.codec.decode
        return decode(serialized.buffer, n).view(*size)

    def estimate_compression_ratio(self, info: CompressionInfo) -> float:
        # hivemind cuts parts of int(part_size_bytes / (4 * ratio)) values: make that exactly PART_VALUES,
        # so that part boundaries (where our quantization blocks restart) are known to the node
        return 2**19 / (4 * PART_VALUES)

    def roundtrip_down(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.extract(self.compress_down(tensor))


def make_codec(name: str) -> WireCodec:
    """Codec name from the run manifest -> the all-reduce's wire codec."""
    return WireCodec(get_codec(name))
