"""node: the volunteer daemon behind ``swarm join`` (and the ``swarm`` CLI).

Map of this package:

    cli.py        the ``swarm`` command: join, ctl, demo; hands coordinator, sim, plan, bench on (no logic)
    subcommands.py  other packages' ``swarm`` commands, found by entry point (``capaswarm.commands``)
    config.py     ``NodeConfig``: one typed settings tree (flags > SWARM_* env > TOML > defaults); join flags come from it
    manifests.py  where the run manifest comes from: coordinator, file, or flags
    bootstrap.py  from the coordinator: the run-key-signed manifest (pinned), bootstrap peers; JoinError
    preflight.py  ``swarm join --check``: coordinator, manifest, version, reachability, memory, tokens/s
    dialback.py   ``python -m node.dialback``: the coordinator's dial-back probe (py-libp2p, own process)
    daemon.py     ``Node``: identity, manifest, swarm, trainer, reporter, signals, status
    swarm.py      hivemind DHT, progress tracker, averager (built here, handed to the trainer), manifest announcements
    averaging.py  the exact-average all-reduce (our runner subclass), wire codecs, byte counters
    agreement.py  members agree on which reducers failed, so every member applies the same average
    linktimeouts.py  the averager's chunk and all-reduce timeouts, following the measured link and the expected group
    robust.py     robust aggregation of one part (norm clip, CenteredClip, trimmed mean) and outlier stats
    group.py      checks on what group members gathered (tokens, state hash, round): drop the malformed
    announce.py   signed state-hash announcements in the DHT; the majority hash a joiner accepts
    spotcheck.py  spot checks of claimed work: a peer's windows of a round, the loss gain of its update; pure torch
    validator.py  the validator's side: a claim and the round's global state in, a ``SpotCheckVerdict`` out
    validating.py ``--role validator``: follows the swarm's state, downloads peers' updates, sends verdicts
    codecs.py     pseudo-gradient codecs (fp16 ... 2-bit, top-k) and error feedback; pure torch
    trainer.py    ``Trainer``: the DiLoCo loop, read top to bottom (``run`` first); model, optimizers, resume
    rounds.py     a round's all-reduce (launch, land) and its schedule: ``Blocking`` or ``Overlap`` (diloco-overlap)
    statesync.py  the global state and peers: serve it, announce its hash, download and check theirs
    stats.py      ``RoundResult`` and ``TrainerStats``: what both trainers count, for reports, status.json, checkpoints
    diloco.py     the DiLoCo math, once: inner AdamW and its step, pseudo-gradient, outer Nesterov step; pure torch
    ddp.py        ``--device``, ``--devices``: data-parallel inner steps over the node's local devices (one peer)
    sync.py       the ``--algorithm sync`` baseline: plain hivemind.Optimizer
    state.py      global state, its hash, the checkpoint's schema (``NodeCheckpoint``), atomic writes
    model.py      the GPT (GPT-2's exact architecture) and its presets
    tokenizer.py  vocabularies: bytes, or a BPE trained locally with ``tokenizers``; tokenizer.json
    export.py     the global model <-> the Hugging Face GPT-2 layout (safetensors, config, tokenizer)
    modelcard.py  the export's README.md: run, validation curve, compute and $, contributors
    generate.py   ``swarm generate``: sampling from an export or a state dir
    certificates.py  attribution certificates checked offline (``swarm certificate verify``)
    commands.py   ``swarm export | generate | certificate | data``: flags and one-line errors
    data.py       the stdlib corpus (or --data), per-(run, peer, round) samplers, bits-per-byte evaluation
    textfiles.py  text files found by content (UTF-8, no NUL; gzip/xz/zstd read), skips counted by reason
    shards.py     ``swarm data prepare``: text files -> memory-mapped token shards (bounded memory)
    initial.py    a run's initial checkpoint: find or fetch it, verify its sha256, load it
    reporter.py   signed reports -> on-disk outbox -> coordinator, with back-off
    gate.py       the work gate: may the node train now, and why not (schedule, busy, paused, standby)
    ctl.py        ``swarm ctl``: the owner-only unix socket in the state dir, server and client
    metrics.py    Prometheus ``/metrics`` of a node (``--metrics-port``), read at scrape time
    planfollow.py the coordinator's cost plan: fetch, verify against the pinned run key, set "standby"
    launcher.py   the one launcher: ``SwarmLauncher`` (``swarm join`` processes, placed by a hook: prefix,
                  addresses), ``start_coordinator``; used by the demo, the tests and the benchmarks
    demo.py       ``swarm demo``: a coordinator and N nodes on 127.0.0.1, progress lines, a JSON report
    faults.py     fault-injection seam for churn tests (``CAPASWARM_FAULT``)
    lifeline.py   nothing outlives its launcher: parent-death signals, a watchdog in hivemind's forked helpers
    policies/     pure decision functions shared with ``sim`` (no torch, hivemind, I/O or clock)

Allowed imports: protocol, ops, node.policies, torch, hivemind, numpy (codecs, data, shards),
pydantic-settings (config), aiohttp (reporter only), psutil (gate), prometheus_client (metrics),
zstandard (textfiles), the stdlib; safetensors and tokenizers (export, initial, tokenizer, shards;
tokenizers only where a BPE vocabulary is used); py-libp2p and trio in ``dialback`` only, which nothing
imports (it cannot share an interpreter with hivemind).
Never coordinator, sim or benchmarks (import-linter): their commands are entry points.
This ``__init__`` stays empty on purpose: ``import node.policies`` (as ``sim`` does) must not
pull in torch or hivemind.
"""
