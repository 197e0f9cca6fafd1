"""Trust in others' work: spot checks of claimed rounds and the validator role.

Map of this package:

    spotcheck.py   spot checks of claimed work: a peer's windows of a round, the loss gain of its update; pure torch
    validator.py   the validator's side: a claim and the round's global state in, a ``SpotCheckVerdict`` out
    validating.py  ``--role validator``: follows the swarm's state, downloads peers' updates, sends verdicts
"""
