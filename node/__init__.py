"""node: the volunteer daemon behind ``swarm join`` (and the ``swarm`` CLI).

Map of this package:

    cli.py        the ``swarm`` command: join, demo; delegates coordinator, sim, bench (no logic)
    config.py     ``NodeConfig``: one typed settings tree (flags > SWARM_* env > TOML > defaults)
    manifests.py  where the run manifest comes from: coordinator, file, or flags
    daemon.py     ``Node``: identity, manifest, swarm, trainer, reporter, signals, status
    swarm.py      hivemind DHT, progress tracker, averager settings, manifest announcements
    averaging.py  the exact-average all-reduce (our runner subclass), wire codecs, byte counters
    codecs.py     pseudo-gradient codecs (fp16 ... 2-bit, top-k) and error feedback; pure torch
    trainer.py    the DiLoCo loop (blocking or overlapped), state sync, checkpoints
    sync.py       the ``--algorithm sync`` baseline: plain hivemind.Optimizer
    state.py      global state, its hash, atomic checkpoints
    model.py      byte-level GPT and its presets
    data.py       the stdlib corpus (or --data), per-node samplers, bits-per-byte evaluation
    reporter.py   signed reports -> on-disk outbox -> coordinator, with back-off
    demo.py       ``swarm demo`` and ``DemoSwarm`` (also the tests' launcher)
    faults.py     fault-injection seam for churn tests (``CAPASWARM_FAULT``)
    runlog.py     logging: JSON lines off a terminal
    policies/     pure decision functions shared with ``sim`` (no torch, hivemind, I/O or clock)

Allowed imports: protocol, node.policies, torch, hivemind, aiohttp (reporter only), the stdlib.
This ``__init__`` stays empty on purpose: ``import node.policies`` (as ``sim`` does) must not
pull in torch or hivemind.
"""
