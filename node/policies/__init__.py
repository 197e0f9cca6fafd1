"""node.policies: pure decision functions shared by ``node`` and ``sim``.

No torch, no hivemind, no I/O, no clock: time and randomness come in as arguments, so where the
simulator models a decision the daemon makes, it runs the daemon's own function. Who uses what
(node / sim) is noted per module: not every policy is shared.

    schedule.py  when a round is done, how to split it, whether a node is behind the swarm (both)
    timeouts.py  all-reduce / matchmaking / state-download timeouts from payload and bandwidth (both)
    backoff.py   exponential back-off with full jitter for resends and reconnects (both)
    agreement.py members agree on which reducers failed (a majority's claims count), so every member
                 applies the same average and a lying minority drops only its own round (both)
    grouping.py  how peers are split into averaging groups (sim only: hivemind's matchmaking groups the node)
    model_size.py parameter counts and payload bytes from a model's shape, no torch (sim only)
    gate.py      the work gate's rules: schedule hours (across midnight), busy hysteresis, reasons (node only)
    roles.py     reducer or client, from the --role flag and the coordinator's dial-back verdict (node only)
    spotcheck.py which (peer, round) claims a validator checks: a keyed, unpredictable sample (node only)

Allowed imports: the standard library and ``protocol``.
"""
