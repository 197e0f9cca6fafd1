"""benchmarks: measurements whose figures go into BENCHMARKS.md (nothing here is asserted in CI).

Map of this package::

    cli.py                 ``swarm bench WORD ...`` (an entry point): quality, attacks, or a suite
    quality.py             token-space quality: k DiLoCo replicas in one process with the wire codecs,
                           vs data-parallel training with the same global batch (`swarm bench quality`)
    attacks.py             attack suite in the token-space simulation: poisoned pseudo-gradients, with
                           and without robust aggregation (`swarm bench attacks`)
    robust_cost.py         cost of robust aggregation per round vs the plain mean, small preset
    spotcheck.py           spot checks: nondeterminism of a check, margins of honest and dishonest updates
    soak.py                forks under load: the overlap and churn swarm tests again and again beside a CPU hog
    suites/                shaped-link suites on real swarms (`swarm bench SUITE`); its own map
    netns.py               the shaped-link testbed: network namespaces, a bridge, `tc tbf`, byte counters,
                           latency through delayrelay.py
    delayrelay.py          the testbed's latency: a transparent TCP relay (nftables redirect) holding bytes D ms
    pgserver.py            a throwaway PostgreSQL server (temp dir, unprivileged user, Unix socket only) for the
                           ledger's PostgreSQL tests and the ingest benchmark
    swarm_tax.py           communication tax and bytes vs the all-reduce bound of a loopback swarm
    coordinator_ingest.py  coordinator ingest rate and state latency, on loopback
    data_prepare.py        ``swarm data prepare`` at scale: a generated corpus of N GB -> shards, peak memory
    sim_scale.py           wall time of the discrete-event simulator at 10,000 peers
    sim_agreement.py       hostile members in the agreement on failed reducers, by swarm size and grouping
    gpu.py                 the GPU path: bf16 tokens/s and MFU of gpt2-124m, the outer step, DDP over the GPUs
                           present; ``--smoke`` runs it on a CPU (in the suite)
    commit_cost.py         what a commitment costs: a SHA-256 / BLAKE2b digest of every encoded all-reduce part at 124M
    memory_fit.py          which model a volunteer's 8 / 16 / 24 / 80 GB trains (``join --check``'s estimate)

Each benchmark is also a script (``python -m benchmarks.<name>`` or ``python benchmarks/<name>.py``).
Imports: anything of the project; nothing in the project imports a benchmark: ``swarm bench ...``
reaches ``cli.main`` through the ``capaswarm.commands`` entry point (pyproject.toml).
"""
