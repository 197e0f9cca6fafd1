"""``swarm bench ...``: the entry point (``capaswarm.commands``) that picks a benchmark by its first word.

``quality`` and ``attacks`` are token-space simulations in one process; every other word (a shaped-link
suite, or ``clean``) goes to :func:`benchmarks.suites.main`.
"""
from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "quality":  # token-space simulation of the training algorithm
        from benchmarks.quality import main as quality_main

        return quality_main(argv[1:])
    if argv and argv[0] == "attacks":  # the attack suite in the token-space simulation
        from benchmarks.attacks import main as attacks_main

        return attacks_main(argv[1:])
    from benchmarks.suites import main as suites_main  # shaped-link suites, and `bench clean`

    return suites_main(argv)
