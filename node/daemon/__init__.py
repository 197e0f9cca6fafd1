"""The node process behind ``swarm join``: wires identity, manifest, swarm, trainer and reporter.

Map of this package:

    node.py      ``Node`` and ``run_node``: start-up, the periodic thread, orderly shutdown on signals
    machine.py   what the node trains on (``Hardware``), its work gate, the GPU memory cap
    reports.py   report sequence numbers that survive restarts; contribution and outlier reports
    status.py    ``NodeViews``: status.json, the ``/metrics`` figures, the status line, reachability
"""
