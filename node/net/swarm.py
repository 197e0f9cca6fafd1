"""Joining the libp2p swarm: the DHT, progress tracking, the averager, and the run check.

hivemind objects are built here and nowhere else (``averaging.py`` holds our averager
subclass): ``SwarmHandles`` owns them, builds a DiLoCo run's tracker and averager
(``start_training``) and answers the trainer's fresh questions to the DHT.

Every key a run writes to the DHT starts with the run's prefix, ``<run_id>_<manifest hash[:8]>``:
nodes training a different manifest never meet in matchmaking, and ``find_foreign_manifests`` names them so the user sees why.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hivemind
import torch
from hivemind.optim.progress_tracker import ProgressTracker
from hivemind.p2p import P2PDaemonError
from hivemind.utils import get_dht_time

from node.host import faults
from node.averaging.averager import PseudoGradientAverager
from node.averaging.records import AgreementRecords
from node.averaging.wire import make_codec
from node.uplink.bootstrap import JoinError
from node.host.config import NodeConfig
from node.policies.timeouts import allreduce_timeout, chunk_timeout
from protocol import Identity, RunManifest

__all__ = ["SwarmHandles", "find_foreign_manifests", "run_prefix", "start_dht"]

logger = logging.getLogger(__name__)


def run_prefix(manifest: RunManifest) -> str:
    return f"{manifest.run_id}_{manifest.content_hash[:8]}"


def start_dht(cfg: NodeConfig, key_path: Path, initial_peers: list[str] | None = None, *,
              client_mode: bool = False) -> hivemind.DHT:
    """Start the DHT (and its p2pd). Raises :class:`JoinError` for what a volunteer can fix.

    ``client_mode``: a DHT client (behind NAT): it asks, never answers, and is in no one's routing
    table; the averager built on it follows (hivemind's ``client_mode`` defaults to the DHT's), so
    it sends its share of each all-reduce and reduces nothing. Its p2pd still listens, so the
    coordinator's dial-back can reach it if it is reachable after all.
    """
    peers = cfg.initial_peers if initial_peers is None else initial_peers
    if not peers and not cfg.new_swarm:
        raise JoinError("no peers to join: pass --coordinator URL (it lists reachable peers), --initial-peers "
                        "(the line another node printed), or --new-swarm to start a swarm")
    try:
        return _dht(cfg, key_path, peers, client_mode)
    except P2PDaemonError as e:
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        if "address already in use" in detail:
            raise JoinError(f"cannot listen on {' '.join(cfg.host_maddrs)}: the port is in use (is another node running "
                            f"there?). Stop it or choose another port in --host-maddrs") from None
        raise JoinError(f"the libp2p daemon did not start: {detail[-300:]}") from None
    except RuntimeError as e:
        if "bootstrap failed" not in str(e):
            raise
        raise JoinError(f"none of the {len(peers)} peer address(es) to join answered ({', '.join(peers)[:300]}): "
                        "the swarm may have moved on; try again, or check --initial-peers") from None


def _dht(cfg: NodeConfig, key_path: Path, peers: list[str], client_mode: bool) -> hivemind.DHT:
    return hivemind.DHT(
        initial_peers=peers,
        client_mode=client_mode,
        # behind NAT, ask reachable peers to relay for us (libp2p circuit relay v2 via auto-relay)
        use_auto_relay=client_mode,
        host_maddrs=cfg.host_maddrs,
        announce_maddrs=cfg.announce_maddrs or None,
        identity_path=str(key_path),
        nat_port_map=cfg.nat_port_map,
        # hivemind's identity-collision probe parses the key file as RSA only; our Ed25519 keys are
        # generated per node, so the probe (and the extra p2pd it starts) is skipped
        check_if_identity_free=False,
        # agreement records are signed by their poster and refused otherwise (node/averaging/records.py)
        record_validators=[AgreementRecords(Identity.load(key_path))],
        start=True,
    )


def make_tracker(dht: hivemind.DHT, manifest: RunManifest, cfg: NodeConfig) -> ProgressTracker:
    """hivemind's progress tracking, counting tokens where hivemind counts samples."""
    tracker = ProgressTracker(
        dht,
        prefix=run_prefix(manifest),
        target_batch_size=manifest.round_tokens,
        min_refresh_period=0.25,
        max_refresh_period=2.0,
        default_refresh_period=1.0,
        metadata_expiration=cfg.progress_expiration_s,
        start=True,
    )
    if faults.blind_tracker():  # test seam: its first read of the swarm's progress found nothing
        tracker.global_progress = tracker._parse_swarm_progress_data(None)
    return tracker


def averager_kwargs(cfg: NodeConfig, payload_bytes: int, max_peers: int = 64) -> dict[str, Any]:
    """Matchmaking and all-reduce timeouts from payload size and the assumed link speed."""
    bandwidth = cfg.bandwidth
    # a sender silent for this long is banned; a reducer silent for twice this long fails the round
    chunk = chunk_timeout(bandwidth, floor_s=cfg.chunk_timeout_floor_s)
    return dict(
        min_matchmaking_time=cfg.matchmaking_time_s,
        request_timeout=min(1.0, cfg.matchmaking_time_s / 2),  # hivemind: keep below matchmaking time
        allreduce_timeout=allreduce_timeout(payload_bytes, max_peers, bandwidth),
        next_chunk_timeout=chunk,
        bandwidth=bandwidth,
        declare_state_period=5.0,
    )


def _serves_nothing() -> tuple[dict[str, Any], list[torch.Tensor]]:
    raise RuntimeError("a validator serves no state")


def announce_manifest(dht: hivemind.DHT, manifest: RunManifest, ttl: float = 60.0) -> None:
    dht.store(
        f"{manifest.run_id}_manifests",
        subkey=dht.peer_id.to_base58(),
        value=manifest.content_hash,
        expiration_time=get_dht_time() + ttl,
        return_future=True,
    )


def find_foreign_manifests(dht: hivemind.DHT, manifest: RunManifest) -> dict[str, str]:
    """Peers of the same run id that announce a different manifest hash: {peer_id: hash}."""
    found = dht.get(f"{manifest.run_id}_manifests", latest=True)
    if found is None or not isinstance(found.value, dict):
        return {}
    ours = manifest.content_hash
    return {
        str(peer): str(v.value)
        for peer, v in found.value.items()
        if isinstance(getattr(v, "value", None), str) and v.value != ours
    }


class SwarmHandles:
    """The hivemind objects of one node, shut down in reverse order of creation."""

    def __init__(self, dht: hivemind.DHT, *, joined: bool = False):
        self.dht = dht
        self.joined = joined  # bootstrapped from peers already in the swarm (not its first node)
        self.tracker: ProgressTracker | None = None
        self.averager: Any = None
        self._tracking: tuple[RunManifest, NodeConfig] | None = None

    def start_training(self, manifest: RunManifest, cfg: NodeConfig, shapes: list[torch.Size],
                       serve_state: Callable[[], tuple[dict[str, Any], list[torch.Tensor]]]) -> None:
        """A DiLoCo run's progress tracker and pseudo-gradient averager (buffers of ``shapes``; it serves
        ``serve_state()`` to joiners)."""
        self._tracking = manifest, cfg
        self.tracker = make_tracker(self.dht, manifest, cfg)
        self.averager = PseudoGradientAverager(
            [torch.zeros(s) for s in shapes],
            self.dht,
            prefix=run_prefix(manifest),
            state_provider=serve_state,
            compression=make_codec(manifest.codec),
            aggregation=manifest.hparams.aggregation,
            serve_updates=cfg.serve_updates,
            start=True,
            **averager_kwargs(cfg, 4 * sum(s.numel() for s in shapes)),
        )

    def start_validating(self, manifest: RunManifest, cfg: NodeConfig, shapes: list[torch.Size]) -> None:
        """An averager that never averages: it downloads states and updates for a validator, serves
        nothing, and joins no progress tracking (a validator is not a training peer)."""
        self.averager = PseudoGradientAverager(
            [torch.zeros(s) for s in shapes], self.dht, prefix=run_prefix(manifest), state_provider=_serves_nothing,
            compression=make_codec(manifest.codec), serve_updates=False, allow_state_sharing=False, start=True,
            **averager_kwargs(cfg, 4 * sum(s.numel() for s in shapes)),
        )

    def restart_tracker(self) -> None:
        """A fresh progress tracker (after ``tracker.shutdown()`` left the swarm's rounds)."""
        assert self._tracking is not None, "start_training first"
        self.tracker = make_tracker(self.dht, *self._tracking)

    def others_training(self) -> bool:
        """A fresh look at the DHT: the tracker's cached view lags just after a peer joins, and a
        node that wrongly believes it is alone steps on its own and forks the global state."""
        found = self.dht.get(self.tracker.training_progress_key, latest=True)
        if found is None or not isinstance(found.value, dict):
            return False
        return sum(1 for v in found.value.values() if getattr(v, "value", None) is not None) > 1

    def swarm_round(self) -> int:
        """The swarm's round from a fresh look at the DHT. The tracker's view comes from one read when
        it starts; a joiner whose read found no record yet (its DHT had just bootstrapped) believed the
        swarm was at round 0, skipped the state download, trained from the seed weights and averaged
        that work into the others' later round (then resynchronised, too late for them)."""
        tracker = self.tracker
        newest = tracker.global_epoch
        try:
            found = self.dht.get(tracker.training_progress_key, latest=True)
        except Exception:  # the DHT is stopping, or the read failed: keep the tracker's view
            logger.debug("could not read the swarm's progress", exc_info=True)
            return newest
        if found is not None and isinstance(found.value, dict):
            for entry in found.value.values():
                progress = getattr(entry, "value", None)
                if isinstance(progress, dict) and isinstance(progress.get("epoch"), int):
                    newest = max(newest, progress["epoch"])
        return newest

    @property
    def visible_maddrs(self) -> list[str]:
        return [str(a) for a in self.dht.get_visible_maddrs()]

    def shutdown(self) -> None:
        for name in ("averager", "tracker"):
            obj = getattr(self, name)
            if obj is None:
                continue
            try:
                obj.shutdown()
            except Exception:  # shutting down: report and keep going so p2pd is still stopped
                logger.warning("error while shutting down %s", name, exc_info=True)
        self.dht.shutdown()
