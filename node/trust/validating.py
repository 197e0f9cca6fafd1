"""``swarm join --role validator``: a node that trains nothing and spot-checks the others' work.

Its loop, every ``validator_poll_s`` seconds::

    follow_state()      the newest global state a majority of peers announced, downloaded and checked
                        as a joiner's (node/net/statesync.py); the last few are kept, by hash
    fetch_updates()     every announcing peer's last update (``rpc_download_update``: its round, its
                        claimed tokens, the hash of the global state it started from, the tensors),
                        kept once per (peer, round) if ``is_sampled`` picks it and we hold its state
    judge() each        ``node.trust.validator.Validator`` -> a signed ``SpotCheckVerdict`` to the
                        coordinator (which counts it only from validators its operator listed)

What a validator can check, and what not (docs/coordinator.md, *Spot checks*): a peer serves the
update it put into the all-reduce (``node.train.rounds.launch`` keeps it), so a free rider that claims
tokens and averages zeros serves zeros and fails; a peer could serve something other than what it
averaged, but to pass it must serve real work on its own windows, which is the work it claimed;
what it averaged is for the reducers' robust aggregation to bound. Peers behind NAT (clients) are
not dialable, so their updates are not checked. Runs with ``diloco-overlap`` are refused: there an
inner phase starts from the global state plus the peer's own last progress, which the validator
cannot know.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from node.data.corpus import Corpus
from node.policies.spotcheck import is_sampled
from node.model.state import GlobalState
from node.train.stats import TrainerStats
from node.net.statesync import StateSync
from node.trust.validator import Validator
from protocol import Identity, RunManifest, SpotCheckVerdict

__all__ = ["KEEP_STATES", "Claim", "ValidatorRole"]

logger = logging.getLogger(__name__)

KEEP_STATES = 4  # global states held, newest first: an update is judged against the one it started from
UPDATE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Claim:
    """One peer's update of one round, to judge against the state it started from."""

    peer: str
    round: int
    tokens: int
    state: GlobalState
    update: list[torch.Tensor]


class ValidatorRole:
    """Duck-types the trainer for the daemon (``status``, ``round``, ``stats``, ``state_hash``, ``run``)."""

    def __init__(self, manifest: RunManifest, corpus: Corpus, swarm: Any, *, cfg: Any, identity: Identity, device: str,
                 send: Callable[[SpotCheckVerdict], None], next_seq: Callable[[], int]):
        if manifest.algorithm != "diloco":
            raise ValueError(f"a validator checks diloco runs; this run uses {manifest.algorithm}")
        self.manifest, self.swarm, self.cfg, self.identity = manifest, swarm, cfg, identity
        self.send, self.next_seq = send, next_seq
        self.peer_id = identity.peer_id
        self.validator = Validator(manifest, corpus.train, device=device)
        self.shapes = [p.shape for p in self.validator.model.parameters()]  # its scratch model is this run's GPT
        swarm.start_validating(manifest, cfg, self.shapes)
        payload = 4 * sum(s.numel() for s in self.shapes)
        self.statesync = StateSync(swarm, manifest, identity, payload, cfg.bandwidth)
        self.states: OrderedDict[str, GlobalState] = OrderedDict()  # by hash, newest last
        self.judged: set[tuple[str, int]] = set()
        self.verdicts: Counter[str] = Counter()  # reason -> count, for status.json
        self.status, self.round, self.state_hash = "joining", 0, ""
        self.stats = TrainerStats()

    def run(self, stop: threading.Event, on_round: Any = None, max_rounds: int | None = None) -> None:
        self.status = "validating"
        while not stop.is_set():
            self.follow_state()
            # every peer's update first, then the checks: a check takes about a round of compute, and
            # by its end the others serve later rounds (a loaded CI run only ever checked the first peer)
            for claim in self.fetch_updates(self.peers()):
                if stop.is_set():
                    break
                self.judge(claim)
            stop.wait(self.cfg.validator_poll_s)

    def follow_state(self) -> None:
        """Download the newest majority-announced state if it is newer than the newest we hold."""
        newest = next(reversed(self.states.values()), None)
        state = self.statesync.download(newest.round + 1 if newest else 0, self.shapes)
        if state is None or state.hash in self.states:
            return
        self.states[state.hash] = state
        while len(self.states) > KEEP_STATES:
            self.states.popitem(last=False)
        self.round, self.state_hash = state.round, state.hash
        self.stats.synced_from_peers = {"round": state.round, "state_hash": state.hash}
        logger.info("holding the global state of round %d (%s)", state.round, state.hash[:12])

    def peers(self) -> list[str]:
        """Peers that announced a state recently: the swarm's training peers."""
        announcer = self.statesync.announcer
        try:
            records = announcer.records() if announcer is not None else []
        except Exception as e:  # the DHT is busy or stopping: next time
            logger.warning("could not read the state announcements: %r", e)
            return []
        return sorted({a.peer_id for a in records if a.peer_id != self.peer_id})

    def fetch_updates(self, peers: list[str]) -> list[Claim]:
        """The updates of ``peers`` (in random order: none is favoured) that are ours to judge."""
        peers = random.sample(peers, len(peers))
        return [claim for peer in peers if (claim := self.fetch(peer)) is not None]

    def fetch(self, peer: str) -> Claim | None:
        """``peer``'s last update, if it is well-formed, not judged yet, sampled, and started from a state we hold."""
        got = self.swarm.averager.load_update(peer, UPDATE_TIMEOUT_S)
        if got is None:
            return None
        meta, update = got
        meta = meta if isinstance(meta, dict) else {}
        round_, tokens, started_from = meta.get("round"), meta.get("tokens"), meta.get("state_hash")
        if not (_count(round_) and _count(tokens) and isinstance(started_from, str)):
            logger.warning("peer %s served an update with malformed metadata; ignored", peer)
            return None
        if (peer, round_) in self.judged or not is_sampled(self.validator.secret, peer, round_, self.cfg.spot_check_rate):
            return None
        state = self.states.get(started_from)
        if state is None:  # its round started from a state we never held (we joined later, or it was forked)
            return None
        if [u.shape for u in update] != self.shapes or not all(u.dtype == torch.float32 for u in update):
            logger.warning("peer %s served an update of the wrong shapes; ignored", peer)
            return None
        self.judged.add((peer, round_))
        return Claim(peer, round_, tokens, state, update)

    def judge(self, claim: Claim) -> None:
        """Check one claim and send the signed verdict."""
        try:
            result = self.validator.check(claim.state.params, claim.peer, claim.round, claim.tokens, claim.update)
        except ValueError as e:  # a claim too small to check
            logger.info("round %d of %s not checked: %s", claim.round, claim.peer, e)
            return
        self.verdicts[result.reason] += 1
        log = logger.info if result.passed else logger.warning
        log("spot check of %s round %d (%d tokens): %s (gain %.4f, random %.4f, reference %s)", claim.peer, claim.round,
            claim.tokens, result.reason, result.gain, result.random_gain, result.reference_gain)
        self.send(self.validator.verdict(self.peer_id, self.next_seq(), time.time(), claim.peer, claim.round, claim.tokens,
                                         result, claim.update))


def _count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**53
