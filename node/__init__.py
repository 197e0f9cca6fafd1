"""node: the volunteer daemon behind ``swarm join`` (and the ``swarm`` CLI).

Rooms, top to bottom: a room imports only the rooms below it (the import-linter layers contract in
pyproject.toml; docs/architecture.md walks a round and a report through them):

    cli/        what a person types: ``swarm`` and its commands, ``swarm join --check``, ``swarm demo``,
                the launcher the demo, tests and benchmarks share
    daemon/     the node process: ``Node`` wires identity, manifest, swarm, trainer and reporter
    trust/      spot checks of claimed work and the validator role
    train/      the DiLoCo loop, a round's schedule (blocking, overlap), the math, stats, the sync baseline
    net/        the swarm's networking: DHT, averager start, state announcements and downloads, dial-back
    uplink/     the node's side of the coordinator: manifest and peers, reports, the cost plan
    averaging/  the exact-average all-reduce: runner, robust reduction, agreement, codecs, timeouts
    data/       corpus, split, per-round windows, text files, prepared shards
    model/      the GPT, vocabularies, global state and checkpoints, exports, model cards, certificates
    host/       the volunteer's machine and process: config, work gate, ctl, metrics, lifeline, faults
    policies/   pure decision functions shared with ``sim`` (no torch, hivemind, I/O or clock)

``uplink`` and ``averaging`` are siblings: neither imports the other.

Allowed imports: protocol, ops, node.policies, torch, hivemind, numpy (averaging/codecs, data/),
pydantic-settings (host/config), aiohttp (uplink/reporter only), psutil (host/gate), prometheus_client
(host/metrics),
zstandard (data/textfiles), the stdlib; safetensors and tokenizers (model/, data/shards;
tokenizers only where a BPE vocabulary is used); py-libp2p and trio in ``net/dialback`` only, which nothing
imports (it cannot share an interpreter with hivemind).
Never coordinator, sim or benchmarks (import-linter): their commands are entry points.
This ``__init__`` stays empty on purpose: ``import node.policies`` (as ``sim`` does) must not
pull in torch or hivemind.
"""
