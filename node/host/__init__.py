"""The volunteer's machine and process: settings, when to train, control, metrics, lifeline.

The bottom room above the pure policies: everything else may use it, it uses nothing of node but
``node.policies``.

Map of this package:

    config.py    ``NodeConfig``: one typed settings tree (flags > SWARM_* env > TOML > defaults)
    gate.py      the work gate: may the node train now, and why not (schedule, busy, paused, standby)
    ctl.py       ``swarm ctl``: the owner-only unix socket in the state dir, server and client
    metrics.py   Prometheus ``/metrics`` of a node (``--metrics-port``), read at scrape time
    lifeline.py  nothing outlives its launcher: parent-death signals, a watchdog in hivemind's forked helpers
    heap.py      glibc's malloc returns large frees to the OS (a fixed mmap threshold): a node's memory stays flat
    faults.py    fault-injection seam for churn tests (``CAPASWARM_FAULT``)
"""
