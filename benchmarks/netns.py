"""A shaped-link testbed: one Linux network namespace per node on a bridge, capped with ``tc tbf``.

Topology for a testbed tagged ``T`` with nodes 1..N (every name starts with :data:`PREFIX`):

    namespace csw-T-hub     bridge br0 (10.213.0.254/24) with ports vn1..vnN; an anchor process
    namespace csw-T-n<i>    veth0 = 10.213.0.<i>/24, the other end of vn<i>

"Home" nodes (``homes=H``) sit behind NAT routers, each its own pair of namespaces:

    namespace csw-T-r<j>    the home router: wan0 = 10.213.0.<100+j>/24 on the bridge (port vr<j>),
                            lan0 = 10.214.<j>.1/24; nftables masquerades lan -> wan and its forward
                            filter lets replies in and nothing new (a stateful home router)
    namespace csw-T-h<j>    the home machine: veth0 = 10.214.<j>.2/24, default route via the router

A home node dials out to anyone on the bridge (seen there as its router's address) and nobody
can dial in to it: what a volunteer behind a typical home router gets.

* uplink cap of node i   = ``tbf`` on the egress of ``veth0`` in its namespace;
* downlink cap of node i = ``tbf`` on the egress of ``vn<i>`` in the hub (no ``ifb`` needed);
* bytes: ``vn<i>``'s counters, read from ``/proc/<anchor pid>/net/dev`` (the anchor is a ``sleep``
  in the hub namespace, so sampling costs a file read, not a subprocess): rx = node i's upload,
  tx = its download, at layer 2 (Ethernet headers included, so TCP/IP framing is counted; segmentation
  offload is off on these links, so every frame's headers are, measured 1.0459 x payload for bulk
  TCP vs 1514/1448 = 1.0456). A home's caps sit on its router's ``wan0`` (up) and on ``vr<j>`` in the hub
  (down), and its bytes are ``vr<j>``'s counters (:meth:`Testbed.counters` numbers home j as node N + j).

Nothing is created in the host's namespace: addresses and links exist only inside namespaces this
module created, and no route leads anywhere else.

Latency (``delay_ms`` = D, one way): ``netem`` is not available here, so each node's (and home's)
namespace runs a :mod:`benchmarks.delayrelay` process (port :data:`RELAY_PORT`) and an nftables
``output`` redirect sends the TCP it dials through it; every connection is delayed once, by its
dialer's relay, so any round trip between two nodes is 2 D (a dial costs one more round trip). See
that module for why and for what a split connection does not reproduce (slow start across the long
path). With D = 0 (the default) no relay runs: zero added latency, optimistic wherever round trips
matter.

Teardown always runs: ``Testbed`` is a context manager that also tears down from ``atexit`` and on
SIGTERM/SIGHUP (turned into ``SystemExit`` so ``finally`` blocks run; later signals are ignored so
they cannot cut the teardown short). After a ``kill -9`` of the harness, its *janitor* does it: a
small process in its own session, started with the testbed, that waits for the harness to die and
then removes the testbed's namespaces and the processes inside (``python -m benchmarks.netns
janitor TAG PID``). :func:`clean` (``swarm bench clean``) removes every ``csw-`` namespace left by
anything else. Creating namespaces needs root: :func:`require_root` says so, with no fallback.

:class:`Topology` only *builds* the ``ip``/``tc`` command lists (pure, unit-tested without root);
:class:`Testbed` runs them. :class:`LoopbackBed` has the same interface on 127.0.0.1 with no
shaping and no byte counters (for CI smoke runs).
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.host.lifeline import die_with_parent, unwind_on_signals

__all__ = ["PREFIX", "SUBNET", "LoopbackBed", "Testbed", "Topology", "clean", "measure_goodput", "require_root", "tbf_args"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PREFIX = "csw-"
SUBNET = "10.213.0"  # a /24: nodes .1 .. .N, the hub's bridge .254
HUB_HOST = 254
HOME_WAN_BASE = 100  # router j's bridge address is SUBNET.(100 + j)
HOME_SUBNET = "10.214"  # home j's LAN is 10.214.j.0/24
BRIDGE = "br0"
NODE_IF = "veth0"
RELAY_PORT = 7399  # the delay relay in each namespace (nothing else listens there on it)
TCP_FRAMING = 1448 / 1514  # TCP payload per Ethernet frame at MTU 1500 (timestamps on): goodput bound / tbf rate

Runner = Callable[..., None]  # (cmd, stdin=None)


class NeedsRootError(RuntimeError):
    """Namespaces and ``tc`` need root (or CAP_NET_ADMIN and CAP_SYS_ADMIN)."""


def require_root(nat: bool = False) -> None:
    missing = [tool for tool in ("ip", "tc") + (("nft",) if nat else ()) if shutil.which(tool) is None]
    if missing:
        raise NeedsRootError(f"the shaped-link testbed needs iproute2 ({', '.join(missing)} not found)")
    if os.geteuid() != 0:
        raise NeedsRootError("the shaped-link testbed creates network namespaces and tc qdiscs: run it as root "
                             "(or pass --loopback for an unshaped run on 127.0.0.1 that counts bytes from reports only)")


def tbf_args(rate_mbit: float) -> list[str]:
    """``tbf`` parameters for a cap: a bucket of ~1 ms at the rate (at least 16 KiB, so a few full
    frames pass at once) and at most 50 ms of queue, as a home router's shaper would hold."""
    rate_bps = rate_mbit * 1e6
    burst = max(16 * 1024, int(rate_bps / 8 / 1000))
    return ["tbf", "rate", f"{rate_mbit:g}mbit", "burst", str(burst), "latency", "50ms"]


@dataclass(frozen=True)
class Topology:
    """N nodes on one bridge; ``up_mbit``/``down_mbit`` cap every node's links (None: no cap)."""

    tag: str
    nodes: int
    up_mbit: float | None = None
    down_mbit: float | None = None
    homes: int = 0  # nodes behind their own NAT router (namespaces r<j>, h<j>)
    delay_ms: float = 0.0  # one-way delay of every connection (its dialer's relay holds each direction)

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 99:
            raise ValueError("1..99 public nodes fit below the routers' addresses")
        if not 0 <= self.homes <= 99:
            raise ValueError("0..99 home nodes")
        if not self.tag or not self.tag.isalnum() or len(self.tag) > 8:
            raise ValueError("tag: 1..8 letters or digits (it goes into namespace names)")
        for cap in (self.up_mbit, self.down_mbit):
            if cap is not None and not 0.1 <= cap <= 10_000:
                raise ValueError(f"cap {cap} Mbit/s is out of range")
        if not 0 <= self.delay_ms <= 5_000:
            raise ValueError(f"one-way delay {self.delay_ms} ms is out of range (0..5000)")

    @property
    def hub(self) -> str:
        return f"{PREFIX}{self.tag}-hub"

    def ns(self, i: int) -> str:
        return f"{PREFIX}{self.tag}-n{i}"

    @staticmethod
    def addr(i: int) -> str:
        return f"{SUBNET}.{i}"

    @staticmethod
    def hub_if(i: int) -> str:
        return f"vn{i}"

    @property
    def hub_addr(self) -> str:
        return f"{SUBNET}.{HUB_HOST}"

    def router(self, j: int) -> str:
        return f"{PREFIX}{self.tag}-r{j}"

    def home(self, j: int) -> str:
        return f"{PREFIX}{self.tag}-h{j}"

    @staticmethod
    def router_wan_addr(j: int) -> str:
        return f"{SUBNET}.{HOME_WAN_BASE + j}"

    @staticmethod
    def home_addr(j: int) -> str:
        return f"{HOME_SUBNET}.{j}.2"

    @property
    def namespaces(self) -> list[str]:
        homes = [ns for j in range(1, self.homes + 1) for ns in (self.router(j), self.home(j))]
        return [self.hub] + [self.ns(i) for i in range(1, self.nodes + 1)] + homes

    @staticmethod
    def nat_ruleset() -> str:
        """The home router's nftables rules: masquerade on the way out; forward replies back in and
        new connections only from the LAN (the stateful filter of every home router)."""
        return (
            "table ip csw_nat {\n"
            "  chain postrouting { type nat hook postrouting priority srcnat; policy accept; oifname \"wan0\" masquerade; }\n"
            "  chain forward { type filter hook forward priority filter; policy drop;\n"
            "    ct state established,related accept\n"
            "    iifname \"lan0\" oifname \"wan0\" accept\n"
            "  }\n"
            "  chain input { type filter hook input priority filter; policy drop;\n"
            "    ct state established,related accept\n"
            "    iifname { \"lo\", \"lan0\" } accept\n"
            "  }\n"
            "}\n"
        )

    def home_commands(self) -> list[list[str]]:
        hub, cmds = self.hub, []
        for j in range(1, self.homes + 1):
            r, h, lan = self.router(j), self.home(j), f"{HOME_SUBNET}.{j}"
            cmds += [
                ["ip", "netns", "add", r],
                ["ip", "netns", "add", h],
                ["ip", "-n", r, "link", "set", "lo", "up"],
                ["ip", "-n", h, "link", "set", "lo", "up"],
                ["ip", "-n", hub, "link", "add", f"vr{j}", "type", "veth", "peer", "name", "wan0", "netns", r],
                ["ip", "-n", hub, "link", "set", f"vr{j}", "master", BRIDGE],
                # one TCP segment per frame on the WAN link too, so that its counters count every header
                ["ip", "-n", hub, "link", "set", f"vr{j}", "gso_max_segs", "1"],
                ["ip", "-n", r, "link", "set", "wan0", "gso_max_segs", "1"],
                ["ip", "-n", hub, "link", "set", f"vr{j}", "up"],
                ["ip", "-n", r, "addr", "add", f"{self.router_wan_addr(j)}/24", "dev", "wan0"],
                ["ip", "-n", r, "link", "set", "wan0", "up"],
                ["ip", "-n", r, "link", "add", "lan0", "type", "veth", "peer", "name", NODE_IF, "netns", h],
                ["ip", "-n", r, "addr", "add", f"{lan}.1/24", "dev", "lan0"],
                ["ip", "-n", r, "link", "set", "lan0", "up"],
                ["ip", "-n", h, "addr", "add", f"{self.home_addr(j)}/24", "dev", NODE_IF],
                ["ip", "-n", h, "link", "set", NODE_IF, "up"],
                ["ip", "-n", h, "route", "add", "default", "via", f"{lan}.1"],
                ["ip", "netns", "exec", r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                ["ip", "netns", "exec", r, "nft", "-f", "-"],  # the ruleset comes on stdin (see Testbed)
            ]
            if self.up_mbit is not None:
                cmds.append(["tc", "-n", r, "qdisc", "add", "dev", "wan0", "root", *tbf_args(self.up_mbit)])
            if self.down_mbit is not None:
                cmds.append(["tc", "-n", hub, "qdisc", "add", "dev", f"vr{j}", "root", *tbf_args(self.down_mbit)])
        return cmds

    def setup_commands(self) -> list[list[str]]:
        hub = self.hub
        cmds = [
            ["ip", "netns", "add", hub],
            ["ip", "-n", hub, "link", "set", "lo", "up"],
            ["ip", "-n", hub, "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "-n", hub, "addr", "add", f"{self.hub_addr}/24", "dev", BRIDGE],
            ["ip", "-n", hub, "link", "set", BRIDGE, "up"],
        ]
        for i in range(1, self.nodes + 1):
            ns, hif = self.ns(i), self.hub_if(i)
            cmds += [
                ["ip", "netns", "add", ns],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
                # created in the hub, its peer moved straight into the node's namespace: nothing in the host's
                ["ip", "-n", hub, "link", "add", hif, "type", "veth", "peer", "name", NODE_IF, "netns", ns],
                # one TCP segment per packet, so that the counters count every Ethernet frame's headers
                # as a real wire would (with segmentation offload a 64 KiB packet carries one header)
                ["ip", "-n", hub, "link", "set", hif, "gso_max_segs", "1"],
                ["ip", "-n", ns, "link", "set", NODE_IF, "gso_max_segs", "1"],
                ["ip", "-n", hub, "link", "set", hif, "master", BRIDGE],
                ["ip", "-n", hub, "link", "set", hif, "up"],
                ["ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", NODE_IF],
                ["ip", "-n", ns, "link", "set", NODE_IF, "up"],
            ]
            if self.up_mbit is not None:
                cmds.append(["tc", "-n", ns, "qdisc", "add", "dev", NODE_IF, "root", *tbf_args(self.up_mbit)])
            if self.down_mbit is not None:
                cmds.append(["tc", "-n", hub, "qdisc", "add", "dev", hif, "root", *tbf_args(self.down_mbit)])
        return cmds + self.home_commands()

    def shape_commands(self, up_mbit: float | None, down_mbit: float | None) -> list[list[str]]:
        """Set (``tbf``) or lift (None) every node's caps on a running testbed: a home's are on its router's WAN link."""
        links = [((self.ns(i), NODE_IF, up_mbit), (self.hub, self.hub_if(i), down_mbit)) for i in range(1, self.nodes + 1)]
        links += [((self.router(j), "wan0", up_mbit), (self.hub, f"vr{j}", down_mbit)) for j in range(1, self.homes + 1)]
        cmds = []
        for pair in links:
            for ns, dev, cap in pair:
                if cap is None:
                    cmds.append(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "pfifo_fast"])
                else:
                    cmds.append(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", *tbf_args(cap)])
        return cmds

    @property
    def dialers(self) -> list[str]:
        """The namespaces whose outgoing TCP gets the delay: every node and every home machine."""
        return [self.ns(i) for i in range(1, self.nodes + 1)] + [self.home(j) for j in range(1, self.homes + 1)]

    def relay_commands(self) -> list[list[str]]:
        """The delay relays (long-running: the testbed starts and reaps them); none when D = 0."""
        if not self.delay_ms:
            return []
        return [["ip", "netns", "exec", ns, sys.executable, "-m", "benchmarks.delayrelay",
                 "--port", str(RELAY_PORT), "--delay-ms", f"{self.delay_ms:g}"] for ns in self.dialers]

    def teardown_commands(self) -> list[list[str]]:
        """Homes, routers and nodes first (their veths go with them), then the hub."""
        return [["ip", "netns", "del", ns] for ns in reversed(self.namespaces)]


# ---------------------------------------------------------------------------------------- running


def _run(cmd: Sequence[str], stdin: str | None = None) -> None:
    if stdin is None and list(cmd[-3:]) == ["nft", "-f", "-"]:
        stdin = Topology.nat_ruleset()
    try:
        subprocess.run(list(cmd), check=True, capture_output=True, text=True, timeout=20, input=stdin)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(e.stderr or '').strip()[:300]}") from None


def _list_namespaces() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    return [entry["name"] for entry in json.loads(out.stdout)]


def _kill_namespace_processes(ns: str) -> int:
    """SIGKILL every process inside ``ns`` (all of them were started by a testbed). Returns how many."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    pids = [int(p) for p in out.stdout.split()] if out.returncode == 0 else []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    left = pids
    while left and time.monotonic() < deadline:  # a namespace is only freed once its last process is gone
        left = [p for p in left if _alive(p)]
        time.sleep(0.02)
    return len(pids)


def _alive(pid: int) -> bool:
    """Still running (a zombie is dead: it only waits for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def clean(prefix: str = PREFIX) -> list[str]:
    """Remove every namespace whose name starts with ``prefix`` and the processes inside; returns their names.

    Also removes host-side links with that prefix (none are created, but an interrupted manual
    experiment might have left one).
    """
    if not prefix.startswith(PREFIX):
        raise ValueError(f"clean only removes {PREFIX}* objects")
    removed = []
    for ns in sorted(_list_namespaces(), reverse=True):  # "-n<i>" sorts after "-hub": nodes first
        if not ns.startswith(prefix):
            continue
        _kill_namespace_processes(ns)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        removed.append(ns)
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, timeout=10)
    if out.returncode == 0 and out.stdout.strip():
        for link in json.loads(out.stdout):
            name = link.get("ifname", "")
            if name.startswith(prefix):
                subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
                removed.append(name)
    return removed


def read_net_dev(pid: int) -> dict[str, tuple[int, int]]:
    """``{interface: (rx_bytes, tx_bytes)}`` of the network namespace that process ``pid`` lives in."""
    out: dict[str, tuple[int, int]] = {}
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f.readlines()[2:]:
            name, _, rest = line.partition(":")
            fields = rest.split()
            out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out


class Testbed:
    """Creates the namespaces of a :class:`Topology` and always removes them.

    ``with Testbed(topo) as bed:`` then ``bed.prefix(i)`` (the command prefix that runs a process
    in node i's namespace), ``bed.addr(i)``, ``bed.counters()``.
    """

    loopback = False

    def __init__(self, topo: Topology, runner: Runner = _run):
        self.topo = topo
        self._runner = runner
        self._anchor: subprocess.Popen[bytes] | None = None
        self._janitor: subprocess.Popen[bytes] | None = None
        self._relays: list[subprocess.Popen[str]] = []
        self._up = False
        self._restore_signals: Callable[[], None] | None = None

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> Testbed:
        require_root(nat=self.topo.homes > 0 or self.topo.delay_ms > 0)
        atexit.register(self.teardown)
        # SIGTERM/SIGHUP unwind (once), so teardown runs; SIGINT stays the caller's (KeyboardInterrupt unwinds too)
        self._restore_signals = unwind_on_signals(lambda signum: SystemExit(128 + signum), (signal.SIGTERM, signal.SIGHUP))
        self._up = True  # from the first command on: a partial set-up is torn down too
        try:
            for cmd in self.topo.setup_commands():
                self._runner(cmd)
            self._anchor = subprocess.Popen(["ip", "netns", "exec", self.topo.hub, "sleep", "infinity"],
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=die_with_parent(signal.SIGKILL))
            self._janitor = subprocess.Popen([sys.executable, "-m", "benchmarks.netns", "janitor", self.topo.tag, str(os.getpid())],
                                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
                                             env={**os.environ, "PYTHONPATH": str(REPO)})
            deadline = time.monotonic() + 5
            while self.topo.hub_if(1) not in self._net_dev_safe():
                if time.monotonic() > deadline:
                    raise RuntimeError("the hub's anchor process did not enter its namespace")
                time.sleep(0.02)
            self._start_relays()
        except BaseException:
            self.teardown()
            raise
        return self

    def _start_relays(self) -> None:
        """One delay relay per dialing namespace, then the redirect that sends its TCP through it."""
        from benchmarks.delayrelay import nft_ruleset

        for cmd in self.topo.relay_commands():
            self._relays.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                                                 cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                                 start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL)))
        for ns, relay in zip(self.topo.dialers, self._relays):
            assert relay.stdout is not None
            ready, _, _ = select.select([relay.stdout], [], [], 15)
            line = relay.stdout.readline().strip() if ready else ""  # "ready" once listening (or EOF: it died)
            if line != "ready":
                raise RuntimeError(f"the delay relay in {ns} did not start (exit {relay.poll()})")
            self._runner(["ip", "netns", "exec", ns, "nft", "-f", "-"], nft_ruleset(RELAY_PORT))

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def teardown(self) -> None:
        if not self._up:
            return
        self._up = False
        for ns in reversed(self.topo.namespaces):
            _kill_namespace_processes(ns)  # the anchor and any node still running
        if self._anchor is not None:
            self._anchor.wait(5)
        for relay in self._relays:
            if relay.poll() is None:
                relay.kill()
            relay.wait(5)
        for cmd in self.topo.teardown_commands():
            try:
                self._runner(cmd)
            except (subprocess.CalledProcessError, RuntimeError):
                pass  # a set-up that failed half-way has fewer namespaces
        if self._janitor is not None:  # nothing left for it to do
            self._janitor.kill()
            self._janitor.wait(5)
        if self._restore_signals is not None:
            self._restore_signals()
            self._restore_signals = None
        atexit.unregister(self.teardown)

    # ------------------------------------------------------------ using it
    @property
    def nodes(self) -> int:
        return self.topo.nodes

    def shape(self, up_mbit: float | None, down_mbit: float | None) -> None:
        """Change every node's caps now (None lifts one): e.g. let a swarm assemble fast, then cap it."""
        for cmd in self.topo.shape_commands(up_mbit, down_mbit):
            self._runner(cmd)

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.topo.ns(i)]

    def home_prefix(self, j: int) -> list[str]:
        """Run a process on home machine ``j`` (behind its NAT router)."""
        return ["ip", "netns", "exec", self.topo.home(j)]

    def hub_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.topo.hub]

    def addr(self, i: int) -> str:
        return self.topo.addr(i)

    @property
    def hub_addr(self) -> str:
        return self.topo.hub_addr

    def _net_dev_safe(self) -> dict[str, tuple[int, int]]:
        try:
            return read_net_dev(self._anchor.pid) if self._anchor else {}
        except (FileNotFoundError, ProcessLookupError):
            return {}

    @property
    def homes(self) -> int:
        return self.topo.homes

    def counters(self) -> dict[int, tuple[int, int]]:
        """``{node: (bytes uploaded, bytes downloaded)}`` at layer 2, from the hub's ports.

        Home ``j`` is node ``nodes + j`` here, counted on its router's WAN port ``vr<j>``: what the
        home sends and receives past its NAT (its LAN traffic with its router is not counted).
        """
        dev = read_net_dev(self._anchor.pid) if self._anchor else {}
        ports = {i: self.topo.hub_if(i) for i in range(1, self.topo.nodes + 1)}
        ports |= {self.topo.nodes + j: f"vr{j}" for j in range(1, self.topo.homes + 1)}
        return {i: (dev[port][0], dev[port][1]) for i, port in ports.items() if port in dev}


class LoopbackBed:
    """The same interface on 127.0.0.1: no namespaces, no shaping, no byte counters."""

    loopback = True
    hub_addr = "127.0.0.1"
    homes = 0

    def __init__(self, nodes: int):
        self.nodes = nodes

    def __enter__(self) -> LoopbackBed:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def prefix(self, i: int) -> list[str]:
        return []

    def hub_prefix(self) -> list[str]:
        return []

    def addr(self, i: int) -> str:
        return "127.0.0.1"

    def counters(self) -> dict[int, tuple[int, int]]:
        return {}

    def shape(self, up_mbit: float | None, down_mbit: float | None) -> None:
        pass  # loopback is never shaped


# ---------------------------------------------------------------------------------------- goodput

_RECEIVER = r"""
import json, socket, sys, time
srv = socket.socket(); srv.settimeout(float(sys.argv[3]))
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept(); conn.settimeout(float(sys.argv[3]))
n, t0 = 0, None
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    if t0 is None:
        t0 = time.perf_counter()
    n += len(chunk)
t1 = time.perf_counter()
print(json.dumps({"bytes": n, "seconds": t1 - (t0 or t1)}), flush=True)
"""

_SENDER = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
block = b"\0" * (1 << 16); left = int(sys.argv[3])
while left > 0:
    s.sendall(block[: min(left, len(block))]); left -= len(block)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
"""


def measure_goodput(bed: Testbed, src: int, dst: int, nbytes: int = 2_000_000, port: int = 5201, timeout: float = 30.0) -> float:
    """TCP goodput in Mbit/s of one ``nbytes`` transfer from node ``src`` to node ``dst``.

    Timed at the receiver from the first byte to EOF; every socket call has a timeout, and both
    processes are killed if they overrun.
    """
    recv = subprocess.Popen([*bed.prefix(dst), sys.executable, "-c", _RECEIVER, bed.addr(dst), str(port), str(timeout)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        if recv.stdout.readline().strip() != "ready":
            raise RuntimeError(f"goodput receiver failed: {recv.stderr.read() if recv.stderr else ''}")
        subprocess.run([*bed.prefix(src), sys.executable, "-c", _SENDER, bed.addr(dst), str(port), str(nbytes), str(timeout)],
                       check=True, capture_output=True, timeout=timeout)
        out, err = recv.communicate(timeout=timeout)
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait(5)
    if result["bytes"] != nbytes or result["seconds"] <= 0:
        raise RuntimeError(f"goodput transfer incomplete: {result}")
    return result["bytes"] * 8 / result["seconds"] / 1e6


# ---------------------------------------------------------------------------------------- janitor


def janitor(tag: str, owner: int, poll_s: float = 0.2) -> list[str]:
    """Wait until process ``owner`` is gone, then remove testbed ``tag``'s namespaces and what runs inside."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while _alive(owner):
        time.sleep(poll_s)
    return clean(f"{PREFIX}{tag}-")


if __name__ == "__main__":  # python -m benchmarks.netns janitor TAG PID
    if len(sys.argv) != 4 or sys.argv[1] != "janitor":
        sys.exit("usage: python -m benchmarks.netns janitor TAG PID")
    removed = janitor(sys.argv[2], int(sys.argv[3]))
    if removed:
        print(f"janitor: the testbed's owner died; removed {', '.join(removed)}", file=sys.stderr)
