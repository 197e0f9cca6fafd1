"""A node's role in the swarm, from what it was asked for and whether others can dial it.

    reducer  reachable: a DHT server; reduces a share of each all-reduce; serves state to joiners
    client   not reachable (behind NAT): a DHT client; sends its share of each all-reduce and
             receives the average, reduces nothing, serves nothing (hivemind's ``client_mode``)
    validator  trains nothing: a DHT client that follows the swarm's state and spot-checks the
             others' updates (``node/trust/validating.py``); only ever by request

Reachability is the coordinator's dial-back verdict on the addresses the node claimed:
"public" (a dial reached our key), "private" (nothing answered), "unknown" (no coordinator, or no
verdict in time). Unknown keeps the optimistic default, reducer, which is what every node was
before roles existed: a wrong "reducer" costs the swarm timeouts, a wrong "client" costs nothing
but a reducer less, yet with no verdict at all we cannot tell, and a swarm of clients cannot train.
So a node in auto mode starts as a reducer and, told "private", restarts its DHT as a client: the
restart (new port, new addresses) then only ever happens to addresses nobody lists.
"""
from __future__ import annotations

__all__ = ["REACHABILITY", "ROLES", "choose_role"]

ROLES = ("reducer", "client", "validator")
REACHABILITY = ("public", "private", "unknown")


def choose_role(requested: str, reachability: str) -> str:
    """``requested`` is "auto", "reducer", "client" or "validator" (the ``--role`` flag)."""
    if requested in ROLES:
        return requested
    if requested != "auto":
        raise ValueError(f"role must be auto, reducer, client or validator, not {requested!r}")
    return "client" if reachability == "private" else "reducer"
