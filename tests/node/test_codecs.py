"""Codecs of the pseudo-gradient all-reduce: round-trip error bounds, sizes, error feedback, wire parts."""
from __future__ import annotations

import pytest
import torch

from node.averaging.wire import make_codec
from node.averaging.codecs import CODECS, PART_VALUES, ErrorFeedback, get_codec, quantize_roundtrip

# relative L2 error bound of one round trip on Gaussian data (uniform b-bit over +-absmax: step/sqrt(12))
BOUNDS = {"none": 0.0, "fp16": 1e-3, "int8": 0.01, "q4": 0.13, "q2ef": 0.65, "topkef": 0.95, "topk2ef": 0.96}


def _x(n: int = 12 * 4096, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * 1e-3


@pytest.mark.parametrize("name", sorted(CODECS))
def test_roundtrip_error_and_size(name):
    codec, x = get_codec(name), _x()
    data = codec.encode(x)
    y = codec.decode(data, x.numel())
    assert y.shape == x.shape and y.dtype == torch.float32
    assert ((y - x).norm() / x.norm()).item() <= BOUNDS[name]
    assert len(data) == pytest.approx(codec.bytes_per_value * x.numel(), rel=0.02, abs=64)


@pytest.mark.parametrize("name", ["int8", "q4", "q2ef", "topk2ef"])
def test_quantized_vectors_requantize_to_themselves(name):
    """What error feedback relies on: the all-reduce's uplink adds nothing to an on-grid vector."""
    codec = get_codec(name)
    y = quantize_roundtrip(codec, _x(PART_VALUES + 12_345))  # spans two parts
    assert torch.equal(quantize_roundtrip(codec, y), y)


def test_topk_keeps_the_largest_and_downlink_keeps_every_nonzero():
    codec, x = get_codec("topkef"), _x(10_000)
    y = codec.roundtrip(x)
    kept = y != 0
    assert kept.sum().item() == 300
    assert x.abs()[kept].min() >= x.abs()[~kept].max()
    avg = (y + codec.roundtrip(_x(10_000, seed=1))) / 2  # the union of two supports: up to 600 non-zeros
    down = make_codec("topkef").roundtrip_down(avg)
    assert torch.allclose(down, avg, rtol=1e-3, atol=1e-7) and (down != 0).sum() == (avg != 0).sum() > 300


def test_chunked_topk_keeps_each_chunks_largest_on_a_two_bit_grid():
    codec, x = get_codec("topk2ef"), _x(3 * 4096 + 100)
    x[4096:8192] = 0  # an all-zero chunk sends nothing
    x[8192 + 5] = 0.5  # an outlier sets its own chunk's scale only
    y = codec.roundtrip(x)
    for lo, hi, kept in ((0, 4096, 64), (4096, 8192, 0), (8192, 12288, 64), (12288, 12388, 64)):
        xs, ys = x[lo:hi], y[lo:hi]
        nz = ys != 0
        assert int(nz.sum()) == kept
        if kept:
            assert xs.abs()[nz].min() >= xs.abs()[~nz].max()  # the chunk's largest magnitudes
            scale = float(xs.abs().max().half())
            grid = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]) * scale
            assert all(torch.isclose(grid, v, rtol=1e-5).any() for v in ys[nz])  # 4 levels of the chunk's absmax
            assert torch.equal(torch.sign(ys[nz]), torch.sign(xs[nz]))
    assert float(y[8192 + 5]) == pytest.approx(0.5, rel=1e-3)
    assert len(codec.encode(x)) == 4 * 4 + 3 * 64 * 2 + 3 * 64 // 4  # scale + count per chunk; uint16 index, 2-bit code
    # the downlink carries every non-zero of an average (the union of supports) at fp16 precision
    avg = (y + codec.roundtrip(_x(3 * 4096 + 100, seed=1))) / 2
    down = make_codec("topk2ef").roundtrip_down(avg)
    assert torch.allclose(down, avg, rtol=1e-3, atol=1e-7) and (down != 0).sum() == (avg != 0).sum() > 192


def test_unknown_codec():
    with pytest.raises(ValueError, match="unknown codec"):
        get_codec("zstd")


@pytest.mark.parametrize("name", ["q2ef", "topkef", "topk2ef"])
def test_error_feedback_carries_residuals_and_shrinks_accumulated_error(name):
    codec = get_codec(name)
    shapes = [torch.Size([300, 40]), torch.Size([777])]
    rounds = [[_x(s.numel(), seed=10 * r + i).view(s) for i, s in enumerate(shapes)] for r in range(30)]
    truth = [sum(r[i] for r in rounds) for i in range(len(shapes))]

    ef = ErrorFeedback(codec, shapes)
    sent_ef = [torch.zeros(s) for s in shapes]
    sent_plain = [torch.zeros(s) for s in shapes]
    let_go = [torch.zeros(s) for s in shapes]  # what a decaying residual drops: (1 - decay) x residual a round
    for r in rounds:
        for i, res in enumerate(ef.residuals):
            let_go[i] += (1 - codec.ef_decay) * res
        for i, s in enumerate(ef.apply(r)):
            sent_ef[i] += s
        for i, g in enumerate(r):
            sent_plain[i] += quantize_roundtrip(codec, g)
    err_ef = sum((a - b).norm() for a, b in zip(sent_ef, truth))
    err_plain = sum((a - b).norm() for a, b in zip(sent_plain, truth))
    bound = 0.5 if codec.ef_decay == 1 else 0.7  # a decaying residual lets (1 - decay) of itself go each round
    assert err_ef < bound * err_plain, (err_ef, err_plain)
    # what was sent plus what is still held back (plus what the decay let go) is what was asked to be sent
    for i in range(len(shapes)):
        assert torch.allclose(sent_ef[i] + ef.residuals[i] + let_go[i], truth[i], atol=1e-6)
    assert (codec.ef_decay < 1) == any(float(t.abs().max()) > 1e-4 for t in let_go)
    # residuals survive a checkpoint
    restored = ErrorFeedback(codec, shapes)
    restored.load_state_dict(ef.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.residuals, ef.residuals))


@pytest.mark.parametrize("name", sorted(CODECS))
def test_wire_parts_decode_to_the_same_values_on_every_member(name):
    """The reducer keeps exactly what it sends back: the basis of identical replicas."""
    wire, x = make_codec(name), _x(20_000)
    up = wire.extract(wire.compress(x, None))
    assert torch.equal(up, get_codec(name).roundtrip(x))
    down_msg = wire.compress_down(up)
    assert torch.equal(wire.extract(down_msg), wire.roundtrip_down(up))
    assert torch.equal(wire.extract(type(down_msg).FromString(down_msg.SerializeToString())), wire.roundtrip_down(up))


def test_wire_rejects_parts_of_another_codec():
    part = make_codec("q4").compress(_x(1000), None)
    with pytest.raises(ValueError, match="this run uses"):
        make_codec("q2ef").extract(part)


def test_part_size_is_exact():
    assert make_codec("q4").estimate_compression_ratio(None) * 4 * PART_VALUES == 2**19
