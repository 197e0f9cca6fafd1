"""What the simulator assumes about hardware, links and codecs, in one table each.

Every number here is an input, not a measurement of ours: peak dense tensor throughput from vendor
spec sheets, a model FLOP utilisation (MFU) guess, 2025 cloud prices rounded, and home-link medians
in the range of public speed-test indexes. ``sim/calibration.py`` is how measured runs correct
them; scenarios may override any of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from node.policies.model_size import train_flops_per_token
from protocol import Hardware, ModelSpec

from .config import Distribution, LinkProfile, const

__all__ = ["CODECS", "CodecModel", "GPUS", "GPU", "LINKS", "tokens_per_s"]


@dataclass(frozen=True)
class CodecModel:
    """Bytes on the wire per pseudo-gradient value, in each direction of the butterfly.

    Senders send their parts to the reducers (``up``); each reducer sends the averaged part back
    (``down``). Dense codecs send the same size both ways. A top-k codec's average is non-zero
    wherever any of the ``n`` senders was, so its downlink grows with the group:
    ``1 - (1 - density)^n`` of the values at ``sparse_bytes`` each (independent supports: an upper
    bound, since real supports overlap).
    """

    name: str
    up: float  # bytes per value, sender -> reducer
    density: float = 0.0  # top-k only: share of values kept
    sparse_bytes: float = 6.0  # top-k only, downlink bytes per non-zero: int32 index + fp16 value
    down_fixed: float = 0.0  # top-k only, downlink bytes per value whatever the support (a count per chunk)

    def down(self, group_size: int) -> float:
        if self.density <= 0:
            return self.up
        return (1.0 - (1.0 - self.density) ** group_size) * self.sparse_bytes + self.down_fixed

    def payload_bytes(self, params: int, group_size: int) -> float:
        """The symmetric payload M with the same per-peer traffic, ``2(N-1)/N x M``, as this codec."""
        return params * (self.up + self.down(group_size)) / 2


CODECS: dict[str, CodecModel] = {
    c.name: c
    for c in (
        # what node/averaging/codecs.py sends (a test checks the numbers against it)
        CodecModel("none", 4.0),  # fp32
        CodecModel("fp16", 2.0),
        CodecModel("int8", 1.0 + 2 / 256),  # 8 bit + an fp16 absmax per 256 values
        CodecModel("q4", 0.5 + 2 / 64),
        CodecModel("q2ef", 0.25 + 2 / 128),
        CodecModel("topkef", 0.03 * 6.0, density=0.03),  # top 3 %: int32 index + fp16 value
        # top 64 of each 4096: uint16 index + 2-bit code, an fp16 scale + uint16 count per chunk;
        # down: uint16 index + fp16 value per non-zero, a uint16 count per chunk
        CodecModel("topk2ef", 64 / 4096 * 2.25 + 4 / 4096, density=64 / 4096, sparse_bytes=4.0, down_fixed=2 / 4096),
        # idealised future codecs of the table (no node implementation): symmetric
        CodecModel("4bit", 0.5),
        CodecModel("2bit", 0.25),
        CodecModel("topk", 0.05),  # ~3 % top-k at 2-bit values + packed indices, with a sparse gather
    )
}


@dataclass(frozen=True)
class GPU:
    name: str
    device: str  # Hardware.device as torch names it; the coordinator matches watts and prices on it
    tflops: float  # peak dense bf16/fp16 tensor TFLOP/s with fp32 accumulate, per accelerator
    mfu: float  # share of the peak a small-batch GPT training step reaches
    memory_gb: float
    spot_usd_h: float  # per accelerator
    on_demand_usd_h: float

    def hardware(self, count: int = 1) -> Hardware:
        return Hardware(device=self.device, count=count, memory_gb=self.memory_gb)


GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("H100", "NVIDIA H100 80GB HBM3", 989.0, 0.40, 80, 2.00, 3.00),
        GPU("A100", "NVIDIA A100-SXM4-80GB", 312.0, 0.45, 80, 1.00, 1.80),
        GPU("L4", "NVIDIA L4", 121.0, 0.35, 24, 0.25, 0.70),
        GPU("T4", "Tesla T4", 65.0, 0.30, 16, 0.12, 0.35),
        GPU("4090", "NVIDIA GeForce RTX 4090", 165.2, 0.35, 24, 0.30, 0.60),
        GPU("4080", "NVIDIA GeForce RTX 4080", 97.5, 0.35, 16, 0.20, 0.40),
        GPU("3090", "NVIDIA GeForce RTX 3090", 71.0, 0.35, 24, 0.15, 0.30),
        GPU("3080", "NVIDIA GeForce RTX 3080", 59.5, 0.35, 10, 0.10, 0.25),
        GPU("cpu", "cpu", 0.2, 0.5, 16, 0.02, 0.05),  # a few cores of fp32 matmul
    )
}

LINKS: dict[str, LinkProfile] = {
    # asymmetric home broadband: cable and DSL uploads far below downloads, fibre in the tail
    "home": LinkProfile(
        up_mbps=Distribution("lognormal", 25.0, 0.9),
        down_mbps=Distribution("lognormal", 100.0, 0.8),
        rtt_ms=Distribution("lognormal", 60.0, 0.5),
        max_mbps=2500.0,
    ),
    "datacenter": LinkProfile(
        up_mbps=Distribution("lognormal", 2000.0, 0.5),
        down_mbps=Distribution("lognormal", 2000.0, 0.5),
        rtt_ms=Distribution("lognormal", 40.0, 0.5),
    ),
    # one machine: the all-reduce is CPU-bound, so this is an effective rate to calibrate
    "loopback": LinkProfile(up_mbps=const(400.0), down_mbps=const(400.0), rtt_ms=const(0.0)),
}


def tokens_per_s(gpu: GPU, spec: ModelSpec, count: int = 1) -> float:
    """Training tokens per second of ``count`` accelerators on the model ``spec``."""
    return count * gpu.tflops * 1e12 * gpu.mfu / train_flops_per_token(spec)
