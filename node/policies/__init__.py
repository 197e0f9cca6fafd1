"""node.policies: pure decision functions shared by ``node`` and ``sim``.

No torch, no hivemind, no I/O, no clock: time and randomness come in as arguments, so the
simulator runs exactly the logic the daemon runs.

    schedule.py  when a round is done, how to split it, whether a node is behind the swarm
    timeouts.py  all-reduce / matchmaking / state-download timeouts from payload and bandwidth
    backoff.py   exponential back-off with full jitter for resends and reconnects
    grouping.py  how peers are split into averaging groups (used by the simulator to study grouping)
    model_size.py parameter counts and payload bytes from a model's shape (no torch)

Allowed imports: the standard library and ``protocol``.
"""
