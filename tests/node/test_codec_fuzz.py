"""Property tests on the pseudo-gradient decoders (h11's invariant): decode, or raise
``CodecError``, never anything else; and what decodes is finite and of the announced size.

Bytes come from arbitrary input, from valid encodings with random flips and truncations, and
from hivemind protobuf parts with hostile shapes, dtypes and tags (``WireCodec.extract``, what
the all-reduce calls on every received part).
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.averaging.wire import make_codec
from node.averaging.codecs import CODECS, PART_VALUES, CodecError

fuzz = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
names = st.sampled_from(sorted(CODECS))


def _check(decode, *args):
    try:
        out = decode(*args)
    except CodecError:
        return None
    assert torch.isfinite(out).all()
    return out


@fuzz
@given(name=names, data=st.binary(max_size=600), n=st.integers(min_value=-5, max_value=PART_VALUES + 5))
def test_decode_arbitrary_bytes(name, data, n):
    out = _check(CODECS[name].decode, data, n)
    if out is not None:
        assert out.numel() == n


@fuzz
@given(name=names, data=st.binary(max_size=600), n=st.integers(min_value=-5, max_value=9000))
def test_decode_down_arbitrary_bytes(name, data, n):
    out = _check(CODECS[name].decode_down, data, n)
    if out is not None:
        assert out.numel() == n


@fuzz
@given(n=st.integers(min_value=1, max_value=9000), seed=st.integers(0, 2**16),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4), cut=st.integers(-8, 8))
def test_decode_down_mutated_sparse_averages(n, seed, flips, cut):
    for name in ("topkef", "topk2ef"):
        codec = CODECS[name]
        x = torch.randn(n, generator=torch.Generator().manual_seed(seed))
        avg = (codec.roundtrip(x) + codec.roundtrip(x.flip(0))) / 2
        data = bytearray(codec.encode_down(avg))
        assert torch.equal(codec.decode_down(bytes(data), n), avg.half().float())
        for pos, byte in flips:
            if data:
                data[pos % len(data)] = byte
        data = data[: len(data) + cut] if cut < 0 else data + bytes(cut)
        _check(codec.decode_down, bytes(data), n)


@fuzz
@given(name=names, n=st.integers(min_value=1, max_value=700), seed=st.integers(0, 2**16),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4), cut=st.integers(-3, 3))
def test_decode_mutated_encodings(name, n, seed, flips, cut):
    codec = CODECS[name]
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    data = bytearray(codec.encode(x))
    assert torch.isfinite(codec.decode(bytes(data), n)).all()  # the valid encoding itself decodes
    for pos, byte in flips:
        if data:
            data[pos % len(data)] = byte
    data = data[: len(data) + cut] if cut < 0 else data + bytes(cut)
    _check(codec.decode, bytes(data), n)


@fuzz
@given(name=names, size=st.lists(st.integers(-2, 2**18), max_size=10), buffer=st.binary(max_size=400),
       dtype=st.sampled_from(["float32", "float16", "int64", "bool", "", "capaswarm:int8", "capaswarm:q4:down",
                              "capaswarm:topkef:down", "capaswarm:topk2ef:down", "capaswarm:topk2ef",
                              "capaswarm:nope", "capaswarm:q2ef"]),
       compression=st.integers(0, 12))
def test_wire_extract_hostile_parts(name, size, buffer, dtype, compression):
    from hivemind.proto import runtime_pb2

    wire = make_codec(name)
    try:
        part = runtime_pb2.Tensor(buffer=buffer, size=size, dtype=dtype, compression=compression)
    except ValueError:  # protobuf refuses the value itself (a negative dim is fine; an unknown enum is not)
        return
    out = _check(wire.extract, part)
    if out is not None:
        assert out.numel() <= PART_VALUES


@pytest.mark.parametrize("name", sorted(CODECS))
def test_non_finite_and_oversized_parts_are_refused(name):
    wire = make_codec(name)
    x = torch.randn(300)
    x[7] = float("nan")
    with pytest.raises(CodecError):
        wire.extract(wire.compress_down(x))
    big = torch.zeros(PART_VALUES + 1)
    big[0] = 1.0
    with pytest.raises(CodecError):
        wire.extract(wire.compress_down(big))
