"""sim: a discrete-event simulator of capaswarm swarms, ten thousand nodes and more over days.

It answers what no test machine can run (how many nodes, which codec, what round size, what budget)
with the code the real system runs: the node's round, timeout, back-off and grouping policies, and
the coordinator's cost model and peer states. It copies none of their logic; what it adds is time,
churn, links and hardware. ``docs/simulator.md`` says how to use it and how well it predicts.

Map of this package::

    engine.py       the event core: a heap of (time, seq, callback), named RNG streams, trace hash
    config.py       SimConfig: populations, links, churn, the round protocol; units in every field
    catalog.py      assumptions: GPUs (TFLOP/s, MFU, prices), link profiles, codec bytes per parameter
    population.py   per-node constants as a struct of arrays; churn (sessions, daily pattern)
    allreduce.py    one group's butterfly all-reduce: time from payload and links, timeouts, bans
    agreement.py    the agreement on failed reducers with hostile members, by the node's own settle()
    status.py       node statuses, id sets, all-reduce groups
    swarm.py        the DiLoCo round for every node: token target, matchmaking, groups, joins, leaves
    ledger.py       accounting: exact integrals of the truth and the coordinator's ledger view
    run.py          simulate(cfg) -> Result: sampling, summary (conservation of tokens included)
    scenarios.py    named scenarios -> SimConfig (volunteers, spot, flash crowd, mass leave, codecs, loopback4)
    calibration.py  predict a real `swarm demo` run and report the relative errors
    fleet.py        a fleet description (TOML: device kinds, prices, links, churn) + a manifest -> SimConfig
    plancmp.py      `swarm plan`: admit everyone vs the cost plan on a fleet (fleets/: the documented examples)
    plots.py        PNG line charts with matplotlib (imported only when plots are written)
    report.py       sim.json and the plots
    cli.py          `swarm sim` / `python -m sim`

Why a small core of our own rather than SimPy (4.1.2 is on PyPI here): SimPy's strength is processes
as generators, one per actor, waiting on events. At ten thousand nodes that is ten thousand
generators and an Event object per wait; we need none of it, because the model is aggregated: a
round is a handful of events (target reached, one per group, resume), a node's inner phase is
``rate x time`` rather than steps, and the swarm's progress is two running sums. What we keep from
SimPy is its scheduler, a heap with a sequence number for deterministic ties (``engine.py``), and its
habit of passing time explicitly. Result: 10,000 peers x 24 h runs in seconds on two cores, with
no new dependency.

Determinism: one seed feeds named streams (``random.Random`` per stream: nodes, churn, matchmaking,
failures, downloads, leaves); ties pop in insertion order; every state change goes into a SHA-256
trace. Same seed, same hash (tested).

Allowed imports: the standard library, ``protocol``, ``node.policies``, ``coordinator.cost``,
``coordinator.states`` and ``coordinator.planner``; matplotlib in ``plots.py`` only, imported when plots are written. Never
torch, hivemind, aiohttp or libp2p, nor any other module of ``node`` or ``coordinator``
(import-linter contracts in pyproject.toml), nor ``benchmarks``.
"""
from .config import Distribution, LinkProfile, MassLeave, Population, RoundProtocol, SimConfig
from .run import Result, simulate
from .scenarios import SCENARIOS, make_scenario

__all__ = [
    "SCENARIOS",
    "Distribution",
    "LinkProfile",
    "MassLeave",
    "Population",
    "Result",
    "RoundProtocol",
    "SimConfig",
    "make_scenario",
    "simulate",
]
