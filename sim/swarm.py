"""The DiLoCo round protocol, as ``node/train/trainer.py`` runs it, for every node of the swarm at once.

A node's life (``status``)::

    OFFLINE --join--> DOWNLOADING --state--> COMPUTING --target--> AVERAGING --ok--> EVAL --+
                        ^    |                   ^                      |failed            |
                        |    +--> WAITING -------+<---------------------+------------------+
                        |         (newest state still being averaged)   |  ready: compute if the
                        +-----------------------------------------------+  swarm is on our round,
                                                                           else download (or wait)
    any --leave--> OFFLINE   (the tokens of its unfinished round are wasted; a graceful leaver
                              in AVERAGING finishes the all-reduce first)

Rounds are aggregated, not stepped: a computing node contributes ``rate x (t - start)`` tokens,
so the swarm's progress is ``R t - S`` with ``R`` the sum of rates and ``S`` the sum of
``rate x start``; every join or leave moves ``R`` and reschedules the one "target reached"
event with :func:`node.policies.schedule.eta_seconds`. When it fires, every computing node stops,
matchmaking (:func:`node.policies.grouping.form_groups`) cuts them into groups, and each group's
all-reduce is one event (``allreduce.run_group``). Groups that finish early start the next round
early (fast groups never wait for slow ones); a group that finishes after the swarm has moved on
two rounds is behind (:func:`node.policies.schedule.is_behind`) and downloads the state.

Two round counters: ``open_round`` collects tokens now; ``state_round`` is the newest global
state any node holds (it moves when the first group of a round finishes). A joiner downloads
``state_round``; if the swarm has meanwhile opened a later round, it is behind and downloads again.
"""
from __future__ import annotations

from node.policies.backoff import next_delay
from node.policies.grouping import form_groups
from node.policies.model_size import param_count
from node.policies.schedule import RoundProgress, eta_seconds, is_behind, round_done
from node.policies.timeouts import allreduce_bytes, state_download_timeout

from coordinator.planner import PeerFigures, PlanSettings, make_plan

from .agreement import agree
from .allreduce import MBIT, run_group
from .catalog import CODECS
from .config import MassLeave, SimConfig
from .engine import Engine, Streams, Trace
from .ledger import Accounts
from .population import Churn, build_nodes
from .status import AVERAGING, COMPUTING, DOWNLOADING, EVAL, HOLDS_STATE, OFFLINE, STANDBY, WAITING, Group, IdSet

__all__ = ["Swarm"]


class Swarm:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg, self.proto = cfg, cfg.protocol
        streams = Streams(cfg.seed)
        self.nodes = nodes = build_nodes(cfg, streams("nodes"))
        self.churn = Churn(cfg.populations, streams("churn"))
        self.rng_match, self.rng_fail, self.rng_dl = streams("matchmaking"), streams("failures"), streams("downloads")
        self.rng_leave = streams("leaves")
        hostile_rng = streams("hostile")  # who is hostile in the agreement (RoundProtocol.hostile_fraction)
        self.hostile = [hostile_rng.random() < self.proto.hostile_fraction for _ in range(len(nodes))]
        self.params = param_count(cfg.model)
        self.codec = CODECS[cfg.codec]
        self.payload = self.codec.payload_bytes(self.params, self.proto.group_size(len(nodes)))  # a full group's
        self.timeout_payload = self.params * self.proto.timeout_bytes_per_param
        self.state_bytes = self.params * self.proto.state_bytes_per_param
        self.acct = Accounts(nodes, cfg.heartbeat_s, cfg.thresholds, cfg.target_tokens)
        self.engine = Engine(before=self.acct.advance)
        self.trace = Trace(cfg.keep_trace)
        n = len(nodes)
        self.status = [OFFLINE] * n
        self.gen = [0] * n  # bumped at every join and leave: events of an older session are stale
        self.held = [0] * n  # the node holds the global state after this many rounds
        self.start = [0.0] * n  # when the node started computing
        self.round_start = [0.0] * n  # when its current round of work began (the report's wall_s)
        self.tokens = [0.0] * n  # tokens of the round it is averaging or evaluating
        self.group: list[Group | None] = [None] * n
        self.attempt = [0] * n  # failed state downloads in a row
        self.uploads = [0] * n  # state downloads a node is serving now
        self.retired = [False] * n
        self.leaving = [False] * n  # a graceful leaver finishing its all-reduce first
        self.online = IdSet()
        self.holders = IdSet()  # online nodes that hold a global state (status in HOLDS_STATE)
        self.computing: dict[int, None] = {}  # insertion-ordered, so iteration is deterministic
        self.waiting: list[tuple[int, int]] = []  # (node, gen) waiting for a newer state
        self.R = self.S = 0.0
        self.open_round = self.state_round = 0
        self.pending_groups = 0  # groups whose all-reduce has not finished yet
        self.target_version = 0
        self.dirty = False  # the swarm rate changed since the target event was scheduled
        self.closing = False
        self.rounds: list[dict[str, float]] = []  # one row per closed round
        # the cost plan (cfg.plan): who is told to stand by, and when it was last made
        self.standby = [False] * n
        self.plan_round = -(10**9)
        self.plan_members: frozenset[int] = frozenset()
        self.plans: list[dict[str, float]] = []  # one row per plan: t, round, burn, cap, standby, tokens/s
        self.plan_pending = False  # a re-plan for a join or leave is scheduled

    # --- setup ----------------------------------------------------------------------------------
    def schedule_population(self) -> None:
        for i in range(len(self.nodes)):
            t = self.churn.first_arrival(self.nodes.pop[i], self.nodes.utc_offset_h[i])
            if t is not None and t < self.cfg.duration_s:
                self.engine.at(t, self._join, i, 0)
        for ml in self.cfg.mass_leaves:
            self.engine.at(ml.at_s, self._mass_leave, ml)

    # --- churn ----------------------------------------------------------------------------------
    def _join(self, i: int, gen: int) -> None:
        if gen != self.gen[i] or self.retired[i]:
            return
        t = self.engine.now
        self.gen[i] += 1
        self.online.add(i)
        self.acct.join(i, t)
        self.trace(t, "join", i)
        self.engine.at(t + self.churn.session(self.nodes.pop[i]), self._leave, i, self.gen[i])
        self._plan_soon()
        if t == 0.0 and not self.cfg.initial_download:
            self._ready(i, 0)  # the run starts: everyone builds round 0 from the manifest's seed
        elif self.standby[i]:
            self._to_standby(i, self.held[i])
        else:
            self._download(i)
        self._retarget()

    def _leave(self, i: int, gen: int) -> None:
        if gen != self.gen[i]:
            return
        graceful = self.rng_leave.random() < self.cfg.populations[self.nodes.pop[i]].graceful
        if graceful and self.status[i] == AVERAGING and self.group[i] is not None:
            # Ctrl-C only sets the daemon's stop flag: the blocking averager.step finishes first
            self.leaving[i] = True
            self.trace(self.engine.now, "leaving", i)
            return
        self._depart(i, graceful)
        self._retarget()

    def _depart(self, i: int, graceful: bool) -> None:
        t, st = self.engine.now, self.status[i]
        if st == STANDBY:
            self.acct.resume(i)  # billing resumes only to stop with the session below
        if st == COMPUTING:
            self._stop_computing(i, t)
            self.acct.waste(i, self.tokens[i], "leave")
        elif st == AVERAGING and self.group[i] is not None:
            self._leave_group(i, t)
        elif st == AVERAGING:  # banned straggler, not told yet
            self.acct.waste(i, self.tokens[i], "straggler")
        elif st == EVAL:  # its round is in the model; the report goes out as it shuts down
            self.acct.report(i, self.tokens[i], t - self.round_start[i], ok=True)
        self._set_status(i, OFFLINE)
        self.gen[i] += 1
        self.leaving[i] = False
        self.online.discard(i)
        pop = self.cfg.populations[self.nodes.pop[i]]
        self.acct.leave(i, t, graceful)
        self._plan_soon()
        self.trace(t, "leave", i)
        if pop.returns and not self.retired[i]:
            back = self.churn.next_arrival(self.nodes.pop[i], t, self.nodes.utc_offset_h[i])
            if back < self.cfg.duration_s:
                self.engine.at(back, self._join, i, self.gen[i])

    def _mass_leave(self, ml: MassLeave) -> None:
        names = [p.name for p in self.cfg.populations]
        candidates = sorted(i for i in self.online.items if ml.population is None or names[self.nodes.pop[i]] == ml.population)
        chosen = self.rng_leave.sample(candidates, round(ml.fraction * len(candidates)))
        self.trace(self.engine.now, "mass_leave", len(chosen))
        for i in chosen:  # an outage or a reclaim: nobody says goodbye
            self.retired[i] = not ml.returns
            self._depart(i, graceful=False)
        self._retarget()

    # --- state download -------------------------------------------------------------------------
    def _download(self, i: int) -> None:
        t, nodes, rng = self.engine.now, self.nodes, self.rng_dl
        self._set_status(i, DOWNLOADING)
        provider = -1
        for _ in range(3 if len(self.holders) else 0):  # a peer that holds a state: the least busy of 3 asked
            k = self.holders.items[rng.randrange(len(self.holders))]
            if provider < 0 or self.uploads[k] < self.uploads[provider]:
                provider = k
        if provider < 0:  # node/train/trainer.py: "no peer could give us newer state yet; continuing"
            self.held[i] = self.state_round
            self._start_computing(i, t)
            return
        self.acct.downloads += 1
        # the provider's uplink is shared with the downloads it already serves (fixed at the start)
        bandwidth = min(nodes.down[i], nodes.up[provider] / (self.uploads[provider] + 1))
        self.uploads[provider] += 1
        duration = self.state_bytes / bandwidth + nodes.rtt[i]
        timeout = state_download_timeout(int(self.state_bytes), self.proto.assumed_bandwidth_mbps * MBIT)
        unlucky = rng.random() < self.proto.download_failure_rate
        self.trace(t, "download", i)
        if duration > timeout or unlucky:
            give_up = min(duration, timeout) * (rng.random() if unlucky else 1.0)
            self.acct.transfer(provider, i, self.state_bytes * give_up / duration)
            self.engine.at(t + give_up, self._download_failed, i, self.gen[i], provider)
        else:
            self.acct.transfer(provider, i, self.state_bytes)
            self.engine.at(t + duration, self._downloaded, i, self.gen[i], self.state_round, provider)

    def _download_failed(self, i: int, gen: int, provider: int) -> None:
        self.uploads[provider] -= 1
        if gen == self.gen[i]:
            delay = next_delay(self.attempt[i], self.rng_dl, base=1.0, cap=60.0)
            self.attempt[i] += 1
            self.engine.at(self.engine.now + delay, self._retry_download, i, gen)

    def _retry_download(self, i: int, gen: int) -> None:
        if gen == self.gen[i]:
            self._download(i)
            self._retarget()

    def _downloaded(self, i: int, gen: int, state_round: int, provider: int) -> None:
        self.uploads[provider] -= 1
        if gen == self.gen[i]:
            self.attempt[i] = 0
            self._ready(i, state_round)
            self._retarget()

    def _ready(self, i: int, held: int) -> None:
        """Node ``i`` holds the global state after ``held`` rounds: compute, or catch up first."""
        self.held[i] = held
        if self.standby[i]:
            self._to_standby(i, held)
        elif not is_behind(held, self.open_round):
            self._start_computing(i, self.engine.now)
        elif held < self.state_round:
            self._download(i)  # a newer state exists already
        elif self.pending_groups > 0:
            self._set_status(i, WAITING)  # the newer state is still being averaged
            self.waiting.append((i, self.gen[i]))
        else:  # every group of the rounds in between failed: no newer state will come
            self._start_computing(i, self.engine.now)

    # --- the cost plan --------------------------------------------------------------------------
    def _to_standby(self, i: int, held: int) -> None:
        self.held[i] = held
        self._set_status(i, STANDBY)
        self.acct.pause(i)
        self.trace(self.engine.now, "standby", i)

    def _plan_soon(self) -> None:
        """Peers came or went: re-plan once, after every other event of this instant (a crowd of joins
        costs one plan, as the coordinator re-plans once per snapshot)."""
        if self.cfg.plan is not None and not self.plan_pending:
            self.plan_pending = True
            self.engine.at(self.engine.now, self._planned_soon)

    def _planned_soon(self) -> None:
        self.plan_pending = False
        self._maybe_plan(self.open_round)
        self._retarget()

    def _maybe_plan(self, round_: int) -> None:
        """Run :func:`coordinator.planner.make_plan` on the online nodes (the coordinator's re-plan rule)."""
        policy = self.cfg.plan
        assert policy is not None
        members = frozenset(self.online.items)
        if round_ - self.plan_round < policy.every_rounds and members == self.plan_members:
            return
        self.plan_round, self.plan_members = round_, members
        nodes, acct, pops = self.nodes, self.acct, self.cfg.populations
        online = sorted(members)
        # the sim knows each node's true rate and link; the coordinator measures them (plans.py)
        figures = [PeerFigures(
            peer_id=str(i), tokens_per_s=nodes.rate[i], price_usd_per_hour=nodes.price[i].usd_per_hour,
            paid=nodes.declared[i] > 0,
            reliability=(acct.reports[i] - acct.failed[i]) / acct.reports[i] if acct.reports[i] else 1.0,
            uptime=pops[nodes.pop[i]].availability(), link_bytes_per_s=nodes.link(i), active_before=not self.standby[i],
        ) for i in online]
        settings = PlanSettings(round_tokens=self.proto.round_tokens, payload_bytes=self.payload,
                                overhead_s=self.proto.matchmaking_s + self.proto.eval_s, hysteresis=policy.hysteresis)
        remaining = max(self.cfg.target_tokens - acct.tokens_ok_total, 0)
        result = make_plan(figures, policy.budget, settings, remaining_tokens=remaining, spent_usd=acct.true_usd,
                           now=self.engine.now)
        for d in result.decisions:
            i = int(d.peer_id)
            self.standby[i] = not d.active
            if d.active and self.status[i] == STANDBY:  # back: catch up by state download
                self.acct.resume(i)
                self._download(i)
            elif not d.active and self.status[i] == COMPUTING:  # the node abandons its inner phase at once
                self._stop_computing(i, self.engine.now)
                self.acct.waste(i, self.tokens[i], "standby")
                self._to_standby(i, self.held[i])
        self.plans.append({"t": self.engine.now, "round": round_, "burn": result.burn_usd_per_hour,
                           "cap": -1.0 if result.cap_usd_per_hour is None else result.cap_usd_per_hour,
                           "standby": float(sum(self.standby[i] for i in online)), "tokens_per_s": result.tokens_per_s})
        self.trace(self.engine.now, "plan", len(result.standby))

    def _wake_waiting(self) -> None:
        waiting, self.waiting = self.waiting, []
        for i, gen in waiting:
            if gen == self.gen[i] and self.status[i] == WAITING:
                self._ready(i, self.held[i])

    def _set_status(self, i: int, status: int) -> None:
        self.status[i] = status
        if status in HOLDS_STATE:
            if i not in self.holders:
                self.holders.add(i)
        else:
            self.holders.discard(i)

    # --- the inner phase ------------------------------------------------------------------------
    def _start_computing(self, i: int, t: float) -> None:
        rate = self.nodes.rate[i]
        self._set_status(i, COMPUTING)
        self.start[i] = self.round_start[i] = t
        self.computing[i] = None
        self.R += rate
        self.S += rate * t
        self.acct.rate, self.acct.n_computing = self.R, len(self.computing)
        self.dirty = True

    def _stop_computing(self, i: int, t: float) -> None:
        rate, start = self.nodes.rate[i], self.start[i]
        self.tokens[i] = rate * (t - start)
        self.acct.compute_s[i] += t - start
        del self.computing[i]
        if self.computing:
            self.R -= rate
            self.S -= rate * start
        else:  # no float drift survives an empty round
            self.R = self.S = 0.0
        self.acct.rate, self.acct.n_computing = self.R, len(self.computing)
        self.dirty = True

    def progress(self) -> float:
        """Tokens the swarm has processed in the open round so far."""
        return self.R * self.engine.now - self.S

    def _retarget(self, force: bool = False) -> None:
        """Reschedule the one event at which the open round reaches its token target."""
        if not (self.dirty or force):
            return
        self.dirty = False
        self.target_version += 1
        if self.closing or self.R <= 0:
            return
        rp = RoundProgress(self.open_round, int(self.progress()), self.R, len(self.computing))
        eta = eta_seconds(rp, self.proto.round_tokens)
        self.engine.at(self.engine.now + eta, self._on_target, self.open_round, self.target_version)

    def _on_target(self, round_: int, version: int) -> None:
        if version != self.target_version:
            return
        rp = RoundProgress(round_, round(self.progress()), self.R, len(self.computing))
        if not round_done(rp, self.proto.round_tokens, round_):
            self._retarget(force=True)
        elif self.proto.progress_lag_s > 0:  # peers keep stepping until they notice
            self.closing = True
            self.engine.at(self.engine.now + self.proto.progress_lag_s, self._close_round)
        else:
            self._close_round()

    # --- matchmaking and all-reduce -------------------------------------------------------------
    def _close_round(self) -> None:
        t, r = self.engine.now, self.open_round
        self.closing = False
        members = list(self.computing)
        tokens = self.progress()
        for i in members:
            self._stop_computing(i, t)
            self._set_status(i, AVERAGING)
        self.open_round += 1
        self.trace(t, "close", r)
        key = self.nodes.link if self.proto.grouping == "bandwidth" else None
        groups = [Group(r, g) for g in form_groups(members, self.proto.group_size(len(members)), self.rng_match, key)]
        for g in groups:
            for i in g.members:
                self.group[i] = g
        self.pending_groups += len(groups)
        self.rounds.append({"round": r, "closed_at": t, "peers": len(members), "tokens": tokens, "groups": len(groups),
                            "failed_groups": 0, "first_done": -1.0, "last_done": -1.0})
        self.engine.at(t + self.proto.matchmaking_s, self._start_allreduce, groups)
        if self.cfg.plan is not None:
            self._maybe_plan(r)
        self._retarget()

    def _start_allreduce(self, groups: list[Group]) -> None:
        t, nodes = self.engine.now, self.nodes
        for g in groups:
            g.members = [i for i in g.members if self.group[i] is g]  # some left during matchmaking
            g.payload = self.codec.payload_bytes(self.params, len(g.members))
            out = run_group(g.payload, [nodes.link(i) for i in g.members], [nodes.rtt[i] for i in g.members],
                            self.proto, self.rng_fail, self.timeout_payload)
            g.started, g.ok, g.size, g.share, g.cause = True, out.ok, out.group_size, out.sent_share, out.cause
            g.begin, g.end = t, t + out.duration_s
            for k in out.banned:
                i = g.members[k]
                self.group[i] = None
                self.engine.at(t + out.banned_at_s, self._fail_member, i, self.gen[i], g.round)
            if out.banned:
                g.members = [i for i in g.members if self.group[i] is g]
            if g.ok and len(g.members) > 1 and any(self.hostile[i] for i in g.members):
                # the agreement after the data phase, by the node's own rule
                decision = agree([self.hostile[i] for i in g.members], self.proto.hostile_kind)
                g.end += decision.waited_s
                if not decision.applied:
                    g.ok, g.cause = False, "agreement"
            self.engine.at(g.end, self._group_done, g, g.version)

    def _leave_group(self, i: int, t: float) -> None:
        """Member ``i`` leaves its group. Before the all-reduce starts, the group assembles without
        it; after, the rest notice a chunk timeout later, and (as the node does) give the round up."""
        g = self.group[i]
        assert g is not None
        self.group[i] = None
        self.acct.waste(i, self.tokens[i], "leave")
        if not g.started:
            return
        noticed = t + self.proto.failure_detect_s
        if self.proto.leave_fails_group and (g.ok or noticed < g.end):
            done = min(1.0, (t - g.begin) / (g.end - g.begin)) if g.end > g.begin else 1.0
            g.share *= done  # of the bytes it would have sent
            g.end = noticed if g.ok else min(g.end, noticed)
            g.ok, g.cause = False, "left_group"
        elif noticed > g.end:  # hivemind: fill in the dead reducer's share and finish
            g.end = noticed
        else:
            return
        g.version += 1
        self.engine.at(g.end, self._group_done, g, g.version)

    def _fail_member(self, i: int, gen: int, round_: int) -> None:
        """A banned straggler learns that its all-reduce failed."""
        if gen == self.gen[i]:
            t = self.engine.now
            self.acct.waste(i, self.tokens[i], "straggler")
            self.acct.report(i, self.tokens[i], t - self.round_start[i], ok=False)
            self.trace(t, "fail", i)
            self._ready(i, round_)  # it keeps its state; behind the swarm, it downloads
            self._retarget()

    def _group_done(self, g: Group, version: int) -> None:
        if version != g.version:
            return
        t = self.engine.now
        live = [i for i in g.members if self.group[i] is g]
        row = self.rounds[g.round]
        row["first_done"] = t if row["first_done"] < 0 else row["first_done"]
        row["last_done"] = max(row["last_done"], t)
        self.pending_groups -= 1
        nbytes = allreduce_bytes(g.payload, g.size) * g.share  # type: ignore[arg-type]
        for i in live:
            self.group[i] = None
            self.acct.exchange(i, nbytes)
        if not g.ok:
            row["failed_groups"] += 1
            for i in live:
                self.acct.waste(i, self.tokens[i], g.cause)
                self.acct.report(i, self.tokens[i], t - self.round_start[i], ok=False)
                self.trace(t, "fail", i)
                # node/train/rounds.py: a failed group keeps the old global state; if other groups
                # stepped, the swarm has moved past it and the next round starts with a download
                self._ready(i, g.round)
        elif live:
            self.trace(t, "averaged", g.round)
            for i in live:
                self._set_status(i, EVAL)
            members = [(i, self.gen[i]) for i in live]
            if self.proto.eval_s > 0:
                self.engine.at(t + self.proto.eval_s, self._resume, members, g.round)
            else:
                self._resume(members, g.round)
            if g.round + 1 > self.state_round:
                self.state_round = g.round + 1
                self._wake_waiting()
        for i in live:
            if self.leaving[i]:  # its all-reduce is over: now it leaves
                self._depart(i, graceful=True)
        if self.pending_groups == 0 and self.waiting:
            self._wake_waiting()
        self._retarget()

    def _resume(self, members: list[tuple[int, int]], round_: int) -> None:
        t = self.engine.now
        for i, gen in members:
            if gen == self.gen[i]:  # else it left during evaluation and reported on the way out
                self.acct.report(i, self.tokens[i], t - self.round_start[i], ok=True)
                self._ready(i, round_ + 1)
        self._retarget()

    # --- the end --------------------------------------------------------------------------------
    def in_flight(self) -> float:
        """Tokens computed but not yet counted as used or wasted when the run stops."""
        t = self.engine.now
        computing = sum(self.nodes.rate[i] * (t - self.start[i]) for i in self.computing)
        rest = sum(self.tokens[i] for i in range(len(self.nodes)) if self.status[i] in (AVERAGING, EVAL))
        return computing + rest
