"""Named scenarios: functions ``(peers, hours, seed) -> SimConfig``.

    volunteers        home GPUs on three continents, sessions of hours, evenings busier than mornings
    volunteers-spot   the same plus 20 % paid spot datacenter GPUs (preempted, then restarted)
    flash-crowd       volunteers, then as many newcomers again in half an hour at hour 6 (a front page)
    mass-leave        volunteers + spot; at hour 8 half of everything online leaves for good
    home125m-CODEC    a 125M model on home links with codec none | fp16 | int8 | q4 | q2ef | topkef (the node's)
                      or 4bit | 2bit | topk (idealised future codecs)
    loopback4         4 CPU nodes of the tiny model on one machine: the calibration twin of `swarm demo`

Round size: an organiser fixes ``round_tokens`` in the manifest. The scenarios size it so that the
inner phase lasts about ``round_s`` at the swarm's expected rate (population x availability x mean
tokens/s), the regime DiLoCo is run in (hundreds of inner steps between all-reduces).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from protocol import ModelSpec
from protocol.manifest import ROUND_TOKENS

from .catalog import CODECS, GPUS, LINKS, tokens_per_s
from .config import Distribution, MassLeave, Population, RoundProtocol, SimConfig, const

__all__ = ["MODELS", "SCENARIOS", "expected_rate", "make_scenario"]

HOUR = 3600.0

MODELS: dict[str, ModelSpec] = {
    "tiny": ModelSpec("tiny", n_layer=4, n_head=4, n_embd=128, block_size=128),  # node.model.gpt.PRESETS["tiny"]
    "125m": ModelSpec("gpt2-125m", n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
}

REGIONS = ((-6.0, 0.35), (1.0, 0.35), (8.0, 0.30))  # Americas, Europe, Asia (UTC offsets, weights)
VOLUNTEER_GPUS = (("4090", 0.25), ("3090", 0.25), ("4080", 0.20), ("3080", 0.30))
SPOT_GPUS = (("H100", 0.2), ("A100", 0.4), ("L4", 0.4))


def volunteer_population(count: int, name: str = "volunteers") -> Population:
    return Population(
        name=name,
        count=count,
        gpus=VOLUNTEER_GPUS,
        link=LINKS["home"],
        session_s=Distribution("lognormal", 3 * HOUR, 0.8),  # median 3 h, mean 4.1 h
        gap_s=Distribution("exp", 6 * HOUR),  # ~40 % online on average
        daily_amplitude=0.6,
        peak_hour=20.0,
        regions=REGIONS,
        graceful=0.5,
    )


def spot_population(count: int) -> Population:
    return Population(
        name="spot",
        count=count,
        gpus=SPOT_GPUS,
        link=LINKS["datacenter"],
        session_s=Distribution("exp", 6 * HOUR),  # time to preemption
        gap_s=Distribution("uniform", 120.0, 600.0),  # the instance group restarts it
        price="spot",
        online_at_start=1.0,
        graceful=0.1,
        regions=((-6.0, 0.5), (1.0, 0.5)),
    )


def expected_rate(populations: tuple[Population, ...], model: ModelSpec) -> float:
    """The swarm's mean tokens/s: identities x availability x the mix's mean rate."""
    total = 0.0
    for pop in populations:
        if pop.tokens_per_s:
            mean = sum(pop.tokens_per_s) / len(pop.tokens_per_s)
        else:
            weights = sum(w for _, w in pop.gpus)
            mean = sum(w * tokens_per_s(GPUS[g], model) for g, w in pop.gpus) / weights
            mean *= math.exp(pop.throughput_sigma**2 / 2)
        total += pop.count * pop.availability() * mean
    return total


def _internet(name: str, pops: tuple[Population, ...], hours: float, seed: int, *, model: str = "125m",
              codec: str = "int8", round_s: float = 900.0, **protocol: Any) -> SimConfig:
    spec = MODELS[model]
    round_tokens = max(1, int(expected_rate(pops, spec) * round_s))
    proto = RoundProtocol(round_tokens=round_tokens, target_group_size=16, assumed_bandwidth_mbps=5.0, matchmaking_s=15.0,
                          group_failure_rate=0.01, download_failure_rate=0.02, eval_s=10.0)
    return SimConfig(scenario=name, populations=pops, protocol=replace(proto, **protocol), model=spec, codec=codec,
                     hours=hours, seed=seed)


def volunteers(peers: int = 1000, hours: float = 24.0, seed: int = 0) -> SimConfig:
    """Home GPUs on three continents; sessions of hours, evenings busier than mornings."""
    return _internet("volunteers", (volunteer_population(peers),), hours, seed)


def volunteers_spot(peers: int = 1000, hours: float = 24.0, seed: int = 0) -> SimConfig:
    """Volunteers plus 20 % paid spot datacenter GPUs (preempted, then restarted)."""
    spot = max(1, peers // 5)
    return _internet("volunteers-spot", (volunteer_population(peers - spot), spot_population(spot)), hours, seed)


def flash_crowd(peers: int = 1000, hours: float = 24.0, seed: int = 0) -> SimConfig:
    """Volunteers, then as many newcomers again within half an hour at hour 6, staying ~1 h."""
    base = volunteer_population(peers)
    crowd = replace(volunteer_population(peers, "flash-crowd"), arrive_at_s=6 * HOUR, arrive_over_s=0.5 * HOUR,
                    returns=False, session_s=Distribution("lognormal", 1 * HOUR, 1.0))
    cfg = _internet("flash-crowd", (base,), hours, seed)  # sized for the regulars: the crowd is a surprise
    return replace(cfg, populations=(base, crowd))


def mass_leave(peers: int = 1000, hours: float = 24.0, seed: int = 0) -> SimConfig:
    """Volunteers + spot; at hour 8 half of everything online leaves for good."""
    cfg = volunteers_spot(peers, hours, seed)
    return replace(cfg, scenario="mass-leave", mass_leaves=(MassLeave(at_s=8 * HOUR, fraction=0.5, returns=False),))


def home125m(codec: str) -> Callable[[int, float, int], SimConfig]:
    def scenario(peers: int = 200, hours: float = 24.0, seed: int = 0) -> SimConfig:
        return _internet(f"home125m-{codec}", (volunteer_population(peers),), hours, seed, codec=codec)

    scenario.__doc__ = f"A 125M model on home links, {codec} pseudo-gradients."
    return scenario


def loopback4(
    peers: int = 4,
    hours: float = 1.0,
    seed: int = 0,
    *,
    tokens_per_s: tuple[float, ...] = (2000.0,),
    round_tokens: int = ROUND_TOKENS,
    matchmaking_s: float = 3.0,
    eval_s: float = 0.0,
    loopback_mbps: float = 400.0,
    progress_lag_s: float = 0.0,
    codec: str = "fp16",
) -> SimConfig:
    """The twin of `swarm demo`: CPU nodes of the tiny model on one machine, for calibration.

    Always online, one group, a fast but CPU-bound loopback link. The defaults are placeholders;
    calibration passes the measured rates, round size, matchmaking and evaluation times."""
    link = replace(LINKS["loopback"], up_mbps=const(loopback_mbps), down_mbps=const(loopback_mbps))
    pop = Population(name="loopback", count=peers, gpus=(("cpu", 1.0),), link=link, session_s=const(1e9),
                     gap_s=const(1e9), price="volunteer", online_at_start=1.0, throughput_sigma=0.0,
                     tokens_per_s=tuple(tokens_per_s), returns=False)
    proto = RoundProtocol(round_tokens=round_tokens, target_group_size=max(peers, 1), matchmaking_s=matchmaking_s,
                          eval_s=eval_s, progress_lag_s=progress_lag_s, assumed_bandwidth_mbps=loopback_mbps)
    return SimConfig(scenario="loopback4", populations=(pop,), protocol=proto, model=MODELS["tiny"], codec=codec,
                     hours=hours, seed=seed, sample_s=60.0, ledger_every=5)


SCENARIOS: dict[str, Callable[..., SimConfig]] = {
    "volunteers": volunteers,
    "volunteers-spot": volunteers_spot,
    "flash-crowd": flash_crowd,
    "mass-leave": mass_leave,
    **{f"home125m-{codec}": home125m(codec) for codec in CODECS},
    "loopback4": loopback4,
}


def make_scenario(name: str, peers: int | None = None, hours: float | None = None, seed: int = 0) -> SimConfig:
    try:
        fn = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose one of {sorted(SCENARIOS)}") from None
    kwargs: dict[str, Any] = {"seed": seed}
    if peers is not None:
        kwargs["peers"] = peers
    if hours is not None:
        kwargs["hours"] = hours
    return fn(**kwargs)
