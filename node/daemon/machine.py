"""The node's machine: what it trains on (billing counts the devices used), its volunteer limits
(the work gate), and the GPU memory cap."""
from __future__ import annotations

import logging
import os
import platform

import torch

from node.host.config import NodeConfig
from node.host.gate import WorkGate
from node.policies.gate import parse_schedule
from protocol import (
    Hardware,
)

logger = logging.getLogger(__name__)


def detect_hardware(device: str, ids: list[int]) -> Hardware:
    """What this node trains on: billing counts the devices used, not every GPU in the machine."""
    if device == "cuda":
        props = torch.cuda.get_device_properties(ids[0])
        return Hardware(device=props.name[:128], count=len(ids), memory_gb=round(props.total_memory / 2**30, 1))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return Hardware(device=f"cpu ({platform.machine()})", count=1, memory_gb=round(mem, 1))


def make_gate(cfg: NodeConfig, device: str) -> WorkGate:
    """The work gate for this node's volunteer limits (``--schedule``, ``--pause-when-busy``)."""
    return WorkGate(schedule=parse_schedule(cfg.schedule) if cfg.schedule else None, busy_cpu_pct=cfg.pause_when_busy,
                    check_gpu=device == "cuda" and cfg.pause_when_busy is not None)


def cap_gpu_memory(cfg: NodeConfig, device: str) -> None:
    """``--max-gpu-memory-gb``: torch's per-process limit on the caching allocator (an allocation past
    it raises out-of-memory in this process instead of taking the volunteer's other programs' memory)."""
    if cfg.max_gpu_memory_gb is None:
        return
    if device != "cuda":
        logger.info("--max-gpu-memory-gb %.1f: ignored, this node trains on the CPU", cfg.max_gpu_memory_gb)
        return
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, cfg.max_gpu_memory_gb * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    logger.info("GPU memory capped at %.1f GiB (%.0f%% of %.1f GiB)", fraction * total / 2**30, 100 * fraction, total / 2**30)
