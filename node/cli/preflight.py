"""``swarm join --check``: will this machine be useful to this run? One screen, exit 0 or 1.

Checks, in order, each one line (✓ ok, ✗ a reason to fix, · information):
coordinator reachable; manifest fetched, its hash, its signature (against ``--run-key`` or the
pinned key); software version against the manifest's ``min_version``; reachability (the
coordinator's dial-back verdict on a short-lived libp2p listener: public, or behind NAT and
therefore a client); free disk for checkpoints; RAM / GPU memory against the model; a few real
training steps giving tokens/s; and what that means: tokens per hour, the share of a round at the
swarm's current speed, and $ per 1M tokens at the price the coordinator's price table gives it
(a paid node's declared price, checked against the table and the coordinator's limit).

The memory a model needs is estimated from its shape (``node.policies.model_size.memory_need``: on
the training device the weights, gradients, AdamW's two moments and one micro-batch's activations,
less with ``--micro-batches`` and ``--activation-checkpointing``; in RAM the global copy, its
momentum, the round's buffers, a state in transfer, the averager process and the runtime; a CPU node
holds both in RAM); ``memory_required_gb`` in the config replaces what is compared with the device
(e.g. a deployment's own measurement). A ``presets`` line says which presets fit this device and with
which of those flags.
"""
from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from dataclasses import dataclass, field

from node.uplink.bootstrap import PIN_FILE, JoinError, coordinator_get, fetch_signed_manifest
from node.averaging.codecs import get_codec
from node.host.config import NodeConfig
from node.policies.model_size import fitting_setup, memory_need
from protocol import SOFTWARE_VERSION, Hardware, Heartbeat, IncompatibleVersion, RunManifest, check_software_version, seal

__all__ = ["Preflight", "run_check"]


@dataclass
class Preflight:
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (mark, check, detail)

    def ok(self, check: str, detail: str) -> None:
        self.lines.append(("✓", check, detail))

    def fail(self, check: str, detail: str) -> None:
        self.lines.append(("✗", check, detail))

    def info(self, check: str, detail: str) -> None:
        self.lines.append(("·", check, detail))

    @property
    def ready(self) -> bool:
        return all(mark != "✗" for mark, _, _ in self.lines)

    def render(self) -> str:
        width = max((len(c) for _, c, _ in self.lines), default=0)
        out = [f"{mark} {check:<{width}}  {detail}" for mark, check, detail in self.lines]
        reasons = [f"{c}: {d}" for m, c, d in self.lines if m == "✗"]
        out.append("READY to join" if not reasons else "NOT READY:\n  " + "\n  ".join(reasons))
        return "\n".join(out)


def presets_that_fit(memory_gb: float, batch_size: int, device: str = "cpu") -> str:
    """Which presets this memory (of ``device``) trains at the run's batch size, and with which flags."""
    from node.model.gpt import PRESETS

    out = []
    for name, spec in PRESETS.items():
        setup = fitting_setup(spec, batch_size, memory_gb, device=device)
        if setup is None:
            out.append(f"{name} does not fit")
            continue
        k, checkpointing = setup
        flags = ([f"--micro-batches {k}"] if k > 1 else []) + (["--activation-checkpointing"] if checkpointing else [])
        out.append(f"{name} fits" + (f" with {' '.join(flags)}" if flags else ""))
    return "; ".join(out)


def _reachability(cfg: NodeConfig, manifest: RunManifest, report: Preflight) -> None:
    """Listen briefly with a real libp2p daemon and ask the coordinator to dial it back."""
    from node.daemon.reports import SeqCounter
    from node.net.swarm import start_dht
    from protocol import Identity

    identity = Identity.load_or_create(cfg.key_path)
    dht = None
    try:
        dht = start_dht(cfg.model_copy(update={"new_swarm": True}), cfg.key_path, [], client_mode=True)
        maddrs = [str(a) for a in dht.get_visible_maddrs()][:16]
        seq = SeqCounter(cfg.state_dir / "report_seq")
        verdict, deadline = "unknown", time.monotonic() + cfg.reachability_wait_s
        while verdict == "unknown" and time.monotonic() < deadline:
            hb = Heartbeat(run_id=manifest.run_id, peer_id=identity.peer_id, seq=seq.next(), sent_at=time.time(), round=0,
                           status="joining", software_version=SOFTWARE_VERSION, maddrs=maddrs, public_name=cfg.public_name,
                           manifest_hash=manifest.content_hash)
            import urllib.request

            request = urllib.request.Request(cfg.coordinator.rstrip("/") + "/api/v1/reports", data=seal(hb, identity),
                                             headers={"Content-Type": "application/msgpack"})
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    verdict = json.loads(r.read()).get("reachability", "unknown")
            except OSError:
                pass
            if verdict == "unknown":
                time.sleep(1.0)
    except JoinError as e:
        report.fail("reachability", str(e))
        return
    finally:
        if dht is not None:
            dht.shutdown()
    if verdict == "public":
        report.ok("reachability", "public: the coordinator dialed us back; this node will be a reducer")
    elif verdict == "private":
        report.ok("reachability", "behind NAT (nobody can dial us): this node will be a client (sends its share, reduces nothing)")
    else:
        report.info("reachability", f"unknown: no dial-back verdict in {cfg.reachability_wait_s:.0f} s; the node will start as a reducer")


def _train_steps(cfg: NodeConfig, manifest: RunManifest, device: str, steps: int) -> float:
    """tokens/s of ``steps`` real inner steps (after one warm-up step) on this machine."""
    import torch

    from node.data.load import load_corpus

    from node.data.sampler import ByteSampler
    from node.train.diloco import inner_optimizer, inner_step
    from node.model.gpt import GPT

    torch.set_num_threads(cfg.threads)
    corpus = load_corpus(cfg.data, manifest.data.val_fraction)
    spec, hp = manifest.model, manifest.hparams
    model = GPT(spec).to(device)
    opt = inner_optimizer(model.parameters(), hp)
    sampler = ByteSampler.for_node(corpus.train, spec.block_size, hp.batch_size, manifest.run_id, "preflight")
    started, tokens = 0.0, 0
    for i in range(steps + 1):
        if i == 1:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        x, y = sampler.batch()
        inner_step(model, opt, x, y, lr=hp.inner_lr, grad_clip=hp.grad_clip, device=device)  # the trainer's own step
        if i >= 1:
            tokens += x.numel()
    if device == "cuda":
        torch.cuda.synchronize()
    return tokens / max(time.perf_counter() - started, 1e-9)


def run_check(cfg: NodeConfig) -> int:
    report = Preflight()
    try:
        _checks(cfg, report)
    finally:
        print(report.render(), flush=True)
    return 0 if report.ready else 1


def _checks(cfg: NodeConfig, report: Preflight) -> None:
    import torch

    from node.daemon.machine import detect_hardware
    from node.train.ddp import parse_devices, pick_device
    from node.model.gpt import GPT

    if not cfg.coordinator:
        report.fail("coordinator", "no --coordinator URL given (the check asks the coordinator)")
        return
    pin = cfg.state_dir / PIN_FILE
    pinned = cfg.run_key or (pin.read_text().strip() if pin.exists() else None)
    try:
        manifest, signer = fetch_signed_manifest(cfg.coordinator, None, pinned, check_version=False)
    except JoinError as e:
        report.fail("coordinator", str(e))
        return
    report.ok("coordinator", f"{cfg.coordinator} answered")
    how = "--run-key" if cfg.run_key else ("the key pinned on first join" if pinned else "nothing pinned yet (trust on first use)")
    report.ok("manifest", f"run {manifest.run_id!r}, hash {manifest.content_hash[:16]}..., signed by {signer[:16]}... ({how})")
    try:
        check_software_version(manifest.min_version)
        report.ok("version", f"capaswarm {SOFTWARE_VERSION}" + (f" (run needs >= {manifest.min_version})" if manifest.min_version else ""))
    except IncompatibleVersion as e:
        report.fail("version", str(e))

    spec, hp = manifest.model, manifest.hparams
    model_params = GPT(spec).num_params()
    if hp.batch_size % cfg.micro_batches:
        report.fail("memory", f"--micro-batches {cfg.micro_batches} does not divide the run's batch of {hp.batch_size}")
    need = memory_need(spec, hp.batch_size, micro_batches=cfg.micro_batches, checkpointing=cfg.activation_checkpointing,
                       overlap=manifest.algorithm == "diloco-overlap",
                       error_feedback=get_codec(manifest.codec).error_feedback)
    device = pick_device(cfg.device)
    need_gb = cfg.memory_required_gb if cfg.memory_required_gb is not None else need.needed_on(device)
    hw = detect_hardware(device, parse_devices(cfg.devices, device, torch.cuda.device_count() if device == "cuda" else 0))
    where = "GPU memory" if device == "cuda" else "RAM"
    if hw.memory_gb >= need_gb:
        report.ok("memory", f"{where} {hw.memory_gb:.1f} GB >= {need_gb:.2f} GB needed ({spec.preset}, {model_params / 1e6:.1f}M parameters)")
    else:
        report.fail("memory", f"{where} {hw.memory_gb:.1f} GB < {need_gb:.2f} GB needed for {spec.preset} ({model_params / 1e6:.1f}M parameters)")
    if device == "cuda":  # the global state, the round's buffers and the averager stay in RAM
        ram_gb = detect_hardware("cpu", [0]).memory_gb
        (report.ok if ram_gb >= need.host_gb else report.fail)(
            "host memory", f"RAM {ram_gb:.1f} GB, {need.host_gb:.2f} GB needed beside the GPU's")
    report.info("presets", f"at a batch of {hp.batch_size}: {presets_that_fit(hw.memory_gb, hp.batch_size, device)}")
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(cfg.state_dir).free / 2**30
    ckpt_gb = 2 * 5 * 4 * model_params / 2**30  # checkpoint (+ its temporary copy): params, momentum, AdamW state
    (report.ok if free_gb >= ckpt_gb else report.fail)("disk", f"{free_gb:.1f} GB free in {cfg.state_dir}, checkpoints need {ckpt_gb:.2f} GB")

    _reachability(cfg, manifest, report)

    if not report.ready:
        return  # no point timing a machine that cannot join
    tps = _train_steps(cfg, manifest, device, cfg.check_steps)
    report.ok("training", f"{cfg.check_steps} steps on {hw.device}: {tps:,.0f} tokens/s")
    try:
        swarm_tps = float(json.loads(coordinator_get(cfg.coordinator, "/api/v1/state", accept="application/json"))["swarm"]["tokens_per_s"] or 0.0)
    except (JoinError, ValueError, KeyError, TypeError):
        swarm_tps = 0.0
    share = tps / (swarm_tps + tps)
    round_s = manifest.round_tokens / (swarm_tps + tps)
    report.info("contribution", f"{tps * 3600:,.0f} tokens/h; {share:.0%} of a round ({manifest.round_tokens:,} tokens, "
                                f"~{round_s:,.0f} s at the swarm's {swarm_tps:,.0f} + our {tps:,.0f} tokens/s)")
    _cost(cfg, hw, tps, report)


def _cost(cfg: NodeConfig, hw: Hardware, tps: float, report: Preflight) -> None:
    """$ per 1M tokens at the price the coordinator would bill, from its own price table (``/api/v1/price``)."""
    query = urllib.parse.urlencode({"device": hw.device, "count": hw.count, "declared": cfg.price_per_hour})
    try:
        quote = json.loads(coordinator_get(cfg.coordinator, f"/api/v1/price?{query}", accept="application/json"))
        usd, source, cap = float(quote["usd_per_hour"]), str(quote["source"]), float(quote["max_usd_per_hour"])
    except (JoinError, ValueError, KeyError, TypeError) as e:
        report.info("cost", f"the coordinator gave no price quote ({e}); declared ${cfg.price_per_hour:g}/h")
        return
    per_mtok = usd / (tps * 3600) * 1e6
    rule = {"declared": "declared", "table": "the price table's market price", "electricity": "electricity, by the price table",
            "cpu_default": "the price table's CPU rate"}.get(source, source)
    if not quote.get("accepted", True):
        report.fail("cost", f"declared ${cfg.price_per_hour:g}/h is over this coordinator's limit of ${cap:g}/h for "
                            f"{hw.count} x {hw.device}: its reports would be refused")
        return
    line = f"${per_mtok:,.4f} per 1M tokens at ${usd:g}/h ({rule})"
    if cfg.price_per_hour > 0 and quote.get("table_usd_per_hour") is not None:
        line += f"; the table's market price is ${float(quote['table_usd_per_hour']):g}/h"
    report.info("cost", line + (f"; {quote['note']}, so the planner may keep it on standby" if quote.get("note") else ""))
