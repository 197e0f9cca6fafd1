"""Node statuses and the two small containers the swarm keeps: id sets and all-reduce groups."""
from __future__ import annotations

__all__ = ["AVERAGING", "COMPUTING", "DOWNLOADING", "EVAL", "HOLDS_STATE", "OFFLINE", "STANDBY", "WAITING", "Group", "IdSet"]

OFFLINE, DOWNLOADING, WAITING, COMPUTING, AVERAGING, EVAL, STANDBY = range(7)  # STANDBY: told so by the cost plan


class Group:
    """One all-reduce group of one round. ``members`` shrinks as members leave or are banned;
    ``version`` invalidates a scheduled "done" event when the end time moves."""

    __slots__ = ("round", "members", "started", "begin", "end", "version", "ok", "size", "share", "cause", "payload")

    def __init__(self, round_: int, members: list[int]) -> None:
        self.round, self.members, self.payload = round_, members, 0.0
        self.started, self.begin, self.end, self.version = False, 0.0, 0.0, 0
        self.ok, self.size, self.share, self.cause = True, len(members), 1.0, ""  # size: whose average it is
        # share: of allreduce_bytes each member sent; cause: why it failed (a WASTE_CAUSES name)


class IdSet:
    """Node ids with O(1) add, remove and uniform choice (online nodes; holders of a state)."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.pos: dict[int, int] = {}

    def add(self, i: int) -> None:
        self.pos[i] = len(self.items)
        self.items.append(i)

    def discard(self, i: int) -> None:
        if i not in self.pos:
            return
        k = self.pos.pop(i)
        last = self.items.pop()
        if last != i:
            self.items[k] = last
            self.pos[last] = k

    def __contains__(self, i: int) -> bool:
        return i in self.pos

    def __len__(self) -> int:
        return len(self.items)


HOLDS_STATE = (COMPUTING, AVERAGING, EVAL)  # can serve a state download
