"""Training: the DiLoCo loop, a round's schedule, the math, what is counted, the baseline.

A round, top to bottom: ``trainer.py`` runs the inner AdamW steps (``diloco.py``; over several
local devices with ``ddp.py``), takes the pseudo-gradient, and hands it to its schedule
(``rounds.py``: blocking or overlapped) which launches and lands the all-reduce
(``node.averaging``) and takes the outer Nesterov step; ``stats.py`` counts the round.

Map of this package:

    trainer.py  ``Trainer``: the DiLoCo loop, read top to bottom (``run`` first); model, optimizers, resume
    rounds.py   a round's all-reduce (launch, land) and its schedule: ``Blocking`` or ``Overlap`` (diloco-overlap)
    diloco.py   the DiLoCo math, once: inner AdamW and its step, pseudo-gradient, outer Nesterov step; pure torch
    stats.py    ``RoundResult`` and ``TrainerStats``: what both trainers count, for reports, status.json, checkpoints
    ddp.py      ``--device``, ``--devices``: data-parallel inner steps over the node's local devices (one peer)
    sync.py     the ``--algorithm sync`` baseline: plain hivemind.Optimizer
"""
