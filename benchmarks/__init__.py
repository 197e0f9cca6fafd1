"""benchmarks: measurements whose figures go into BENCHMARKS.md (nothing here is asserted in CI).

Map of this package::

    quality.py             token-space quality: k DiLoCo replicas in one process with the wire codecs,
                           vs data-parallel training with the same global batch (`swarm bench quality`)
    suites/                shaped-link suites on real swarms (`swarm bench SUITE`); its own map
    netns.py               the shaped-link testbed: network namespaces, a bridge, `tc tbf`, byte counters
    swarm_tax.py           communication tax and bytes vs the all-reduce bound of a loopback swarm
    coordinator_ingest.py  coordinator ingest rate and state latency, on loopback
    sim_scale.py           wall time of the discrete-event simulator at 10,000 peers

Each benchmark is also a script (``python -m benchmarks.<name>`` or ``python benchmarks/<name>.py``).
Imports: anything of the project; nothing in the project imports a benchmark except ``node.cli``,
which hands ``swarm bench ...`` to the benchmark's ``main(argv) -> int``.
"""
