"""A local development cluster: one coordinator and N storage nodes as background processes.

State lives in one directory:

    cluster.json            addresses, pids and settings of every daemon (rewritten atomically)
    coordinator/            the coordinator's data dir, daemon.log and ready.json
    nodes/<node-id>/        each node's data dir (shards), daemon.log and ready.json
    tls/                    with `clusterctl up --tls`: the CA and certificates (certs.py)
    s3/                     with `clusterctl up --s3`: the S3 gateway's credentials.toml (a
                            generated user), daemon.log and ready.json

Daemons bind port 0 and report the port they got in their ready file (no pick-then-bind
race); a restarted node binds the port it had before, so addresses stay stable. `clusterctl
up/down/node` and the test harness both use this class.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import string
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from shoal.common.errors import InvalidArgument, NotFound, ShoalError

STATE_FILE = "cluster.json"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
S3_CREDENTIALS = "credentials.toml"


class ClusterError(ShoalError):
    """The local cluster could not be started, stopped or found."""


@dataclass
class DaemonState:
    """One daemon of the local cluster."""

    name: str
    role: str
    data_dir: str
    address: str = ""
    pid: int = 0
    zone: str = ""
    args: list[str] = field(default_factory=list)
    # Where it serves Prometheus metrics, from its ready file ("" = metrics off).
    metrics_address: str = ""


@dataclass
class ClusterSettings:
    """How the cluster's daemons are configured."""

    k: int = 4
    n: int = 6
    heartbeat_timeout_s: float = 3.0
    heartbeat_interval_s: float = 0.5
    stripe_bytes: int = 4 * 1024 * 1024
    delete_grace_s: float = 5.0
    # A dev cluster reacts faster than a production default (30 s down, 15 min repair).
    down_after_s: float = 6.0
    repair_after_s: float = 120.0
    reconcile_interval_s: float = 60.0
    orphan_grace_s: float = 60.0
    upload_timeout_s: float = 3600.0
    scrub_interval_s: float = 86400.0
    scrub_rate: int = 64 * 1024 * 1024
    repair_bandwidth: int = 256 * 1024 * 1024
    lease_timeout_s: float = 10.0
    # Every daemon serves Prometheus metrics on a free port (--metrics-listen 127.0.0.1:0).
    metrics: bool = False
    # File with the cluster token every daemon and client must present ("" = no token).
    token_file: str = ""
    # Directory with the cluster CA and certificates (clusterctl certs layout); when set every
    # daemon and client uses mutual TLS, and missing certificates are issued at start.
    tls_dir: str = ""
    # Workers read the shards of the cluster's nodes from their files (short-circuit reads):
    # every node of a local cluster is on this machine.
    short_circuit_reads: bool = True
    # Nodes drop the page cache of shards written past their written_cache window (the node
    # default; False passes --no-drop-written-pages, for comparing the two).
    drop_written_pages: bool = True


def client_tls_files(tls_dir: str) -> tuple[str, str, str]:
    """(CA, certificate, key) paths a client of a local cluster with TLS uses."""
    root = Path(tls_dir)
    return str(root / "ca.pem"), str(root / "client.pem"), str(root / "client-key.pem")


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def log_tail(path: Path, lines: int = 50) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class LocalCluster:
    """Start, stop and inspect a local cluster rooted at `root`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.settings = ClusterSettings()
        self.coordinator: DaemonState | None = None
        self.nodes: dict[str, DaemonState] = {}
        self.workers: dict[str, DaemonState] = {}
        self.gateway: DaemonState | None = None
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        state = self.root / STATE_FILE
        if state.exists():
            self._load(json.loads(state.read_text()))

    # State ---------------------------------------------------------------------------------

    def _load(self, data: dict[str, Any]) -> None:
        known = {f.name for f in fields(ClusterSettings)}
        saved = {k: v for k, v in data.get("settings", {}).items() if k in known}
        self.settings = ClusterSettings(**saved)
        if data.get("coordinator"):
            self.coordinator = DaemonState(**data["coordinator"])
        self.nodes = {name: DaemonState(**d) for name, d in data.get("nodes", {}).items()}
        self.workers = {name: DaemonState(**d) for name, d in data.get("workers", {}).items()}
        if data.get("s3"):
            self.gateway = DaemonState(**data["s3"])

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {
            "settings": asdict(self.settings),
            "coordinator": asdict(self.coordinator) if self.coordinator else None,
            "nodes": {name: asdict(d) for name, d in self.nodes.items()},
            "workers": {name: asdict(d) for name, d in self.workers.items()},
            "s3": asdict(self.gateway) if self.gateway else None,
        }
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.root / STATE_FILE)

    @property
    def address(self) -> str:
        """The coordinator's address."""
        if self.coordinator is None or not self.coordinator.address:
            raise ClusterError(f"no local cluster in {self.root} (start one with 'clusterctl up')")
        return self.coordinator.address

    def running(self, daemon: DaemonState) -> bool:
        child = self._children.get(daemon.pid)
        if child is not None:
            return child.poll() is None
        return pid_alive(daemon.pid)

    def node(self, name: str) -> DaemonState:
        if name not in self.nodes:
            known = ", ".join(sorted(self.nodes)) or "none"
            raise NotFound(f"no node {name!r} in the local cluster at {self.root} (nodes: {known})")
        return self.nodes[name]

    # Processes -----------------------------------------------------------------------------

    def _spawn(self, daemon: DaemonState, module: str, args: list[str]) -> subprocess.Popen[bytes]:
        data_dir = Path(daemon.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        ready = data_dir / "ready.json"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        token = (
            ["--cluster-token-file", self.settings.token_file] if self.settings.token_file else []
        )
        command = [
            sys.executable,
            "-m",
            module,
            "--ready-file",
            str(ready),
            *args,
            *token,
            *self._tls_flags(daemon),
            *self._metrics_flags(daemon),
            *daemon.args,
        ]
        log = (data_dir / "daemon.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
        log.close()
        self._children[process.pid] = process
        daemon.pid = process.pid
        return process

    def _ensure_certs(self, daemons: list[tuple[str, bool]]) -> None:
        """With TLS, issue the certificates (name, is a server) that do not exist yet."""
        if self.settings.tls_dir:
            from shoal.client.cli.certs import CLIENT, ensure_cluster_certs

            ensure_cluster_certs(self.settings.tls_dir, [*daemons, (CLIENT, False)])

    def _tls_flags(self, daemon: DaemonState) -> list[str]:
        if not self.settings.tls_dir:
            return []
        self._ensure_certs([(daemon.name, daemon.role not in ("worker", "s3"))])
        root = Path(self.settings.tls_dir)
        return [
            "--tls-cert", str(root / f"{daemon.name}.pem"),
            "--tls-key", str(root / f"{daemon.name}-key.pem"),
            "--tls-ca", str(root / "ca.pem"),
        ]  # fmt: skip

    def _serving(
        self, daemon: DaemonState, module: str, listen: str, extra: list[str]
    ) -> subprocess.Popen[bytes]:
        """Spawn a daemon that listens and keeps data (coordinator, node)."""
        args = ["--listen", listen, "--data-dir", daemon.data_dir, *extra]
        return self._spawn(daemon, module, args)

    def _metrics_flags(self, daemon: DaemonState) -> list[str]:
        """--metrics-listen when the cluster serves metrics: a restarted daemon gets the port
        it had (stable scrape targets), a new one a free port."""
        if not self.settings.metrics:
            return []
        return ["--metrics-listen", daemon.metrics_address or "127.0.0.1:0"]

    def _wait_ready(self, daemon: DaemonState, process: subprocess.Popen[bytes]) -> None:
        ready = Path(daemon.data_dir) / "ready.json"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if ready.exists():
                info = json.loads(ready.read_text())
                daemon.address = info.get("address", "")
                daemon.metrics_address = info.get("metrics_address", "")
                return
            if process.poll() is not None:
                raise ClusterError(
                    f"{daemon.name} exited with status {process.returncode} during start; "
                    "last log lines:\n" + log_tail(Path(daemon.data_dir) / "daemon.log")
                )
            time.sleep(0.02)
        raise ClusterError(
            f"{daemon.name} not ready after {READY_TIMEOUT_S:.0f}s; last log lines:\n"
            + log_tail(Path(daemon.data_dir) / "daemon.log")
        )

    def _coordinator_flags(self) -> list[str]:
        s = self.settings
        flags = {
            "--heartbeat-timeout": s.heartbeat_timeout_s,
            "--down-after": max(s.down_after_s, s.heartbeat_timeout_s),
            "--repair-after": s.repair_after_s,
            "--reconcile-interval": s.reconcile_interval_s,
            "--orphan-grace": s.orphan_grace_s,
            "--upload-timeout": s.upload_timeout_s,
            "--repair-bandwidth": s.repair_bandwidth,
            "--lease-timeout": s.lease_timeout_s,
            "--default-k": s.k,
            "--default-n": s.n,
            "--stripe-bytes": s.stripe_bytes,
            "--delete-grace": s.delete_grace_s,
        }
        return [part for flag, value in flags.items() for part in (flag, str(value))]

    def _node_flags(self, daemon: DaemonState) -> list[str]:
        flags = [
            "--coordinator", self.address,
            "--node-id", daemon.name,
            "--heartbeat-interval", str(self.settings.heartbeat_interval_s),
            "--scrub-interval", str(self.settings.scrub_interval_s),
            "--scrub-rate", str(self.settings.scrub_rate),
        ]  # fmt: skip
        if daemon.zone:
            flags += ["--zone", daemon.zone]
        if not self.settings.drop_written_pages:
            flags.append("--no-drop-written-pages")
        return flags

    def up(
        self,
        nodes: int,
        *,
        settings: ClusterSettings | None = None,
        zones: list[str] | None = None,
        workers: int = 0,
        worker_slots: int = 0,
    ) -> None:
        """Start a coordinator, `nodes` storage nodes and `workers` workers (worker i shares a
        host id and zone with node i, so map tasks can run next to their data)."""
        if not 1 <= nodes <= 64:
            raise InvalidArgument(f"--nodes must be between 1 and 64, got {nodes}")
        if self.coordinator is not None and self.running(self.coordinator):
            raise ClusterError(
                f"a local cluster is already running in {self.root} at {self.coordinator.address} "
                "(stop it with 'clusterctl down')"
            )
        if settings is not None:
            self.settings = settings
        self._ensure_certs(
            [
                ("coordinator", True),
                *((f"node-{i}", True) for i in range(1, nodes + 1)),
                *((f"worker-{i}", False) for i in range(1, workers + 1)),
            ]
        )
        self.coordinator = DaemonState("coordinator", "coordinator", str(self.root / "coordinator"))
        process = self._serving(
            self.coordinator, "shoal.coordinator", "127.0.0.1:0", self._coordinator_flags()
        )
        try:
            self._wait_ready(self.coordinator, process)
            self.save()
            self.nodes = {}
            for i in range(1, nodes + 1):
                zone = zones[(i - 1) % len(zones)] if zones else ""
                name = f"node-{i}"
                self.nodes[name] = DaemonState(
                    name, "node", str(self.root / "nodes" / name), zone=zone
                )
            self._start_nodes(list(self.nodes.values()), fresh=True)
            self.workers = {}
            for _ in range(workers):
                self.add_worker(slots=worker_slots, start=False)
            self._start_workers(list(self.workers.values()))
        except BaseException:
            self.down()
            raise
        self.save()

    def add_worker(self, *, slots: int = 0, start: bool = True) -> DaemonState:
        """Define (and by default start) one more worker beside the next node."""
        index = len(self.workers) + 1
        name = f"worker-{index}"
        beside = self.nodes.get(f"node-{index}")
        daemon = DaemonState(
            name, "worker", str(self.root / "workers" / name), zone=beside.zone if beside else ""
        )
        daemon.args = ["--host-id", beside.name if beside else name]
        if slots:
            daemon.args += ["--slots", str(slots)]
        self.workers[name] = daemon
        if start:
            self._start_workers([daemon])
        return daemon

    def _start_workers(self, daemons: list[DaemonState]) -> None:
        started = []
        for daemon in daemons:
            args = ["--coordinator", self.address, "--worker-id", daemon.name]
            if daemon.zone:
                args += ["--zone", daemon.zone]
            if self.settings.short_circuit_reads and self.nodes:
                dirs = ",".join(node.data_dir for node in self.nodes.values())
                args += ["--local-node-dirs", dirs]
            started.append((daemon, self._spawn(daemon, "shoal.worker", args)))
        for daemon, process in started:
            self._wait_ready(daemon, process)
        self.save()

    def worker(self, name: str) -> DaemonState:
        if name not in self.workers:
            known = ", ".join(sorted(self.workers)) or "none"
            raise NotFound(
                f"no worker {name!r} in the local cluster at {self.root} (workers: {known})"
            )
        return self.workers[name]

    def start_workers(self, names: list[str]) -> None:
        """Restart stopped workers."""
        daemons = [self.worker(name) for name in names]
        for daemon in daemons:
            if self.running(daemon):
                raise ClusterError(f"{daemon.name} is already running (pid {daemon.pid})")
        self._start_workers(daemons)

    def stop_workers(self, names: list[str], sig: int = signal.SIGTERM) -> None:
        """Stop workers (SIGKILL: a crash; their tasks are leased again elsewhere)."""
        daemons = [self.worker(name) for name in names]
        self._stop_all(daemons, sig)
        self.save()

    # S3 gateway -----------------------------------------------------------------------------

    def s3_credentials(self) -> tuple[str, str, str]:
        """(credentials file, access key, secret key) of the gateway's generated user; the
        file is created with a random key pair on first use."""
        path = self.root / "s3" / S3_CREDENTIALS
        if not path.exists():
            alphabet = string.ascii_uppercase + string.digits
            access = "SH" + "".join(secrets.choice(alphabet) for _ in range(18))
            letters = string.ascii_letters + string.digits
            secret = "".join(secrets.choice(letters) for _ in range(40))
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(
                    f'[[users]]\naccess_key = "{access}"\nsecret_key = "{secret}"\n'
                    'display_name = "admin"\n'
                )
        text = path.read_text()
        access = text.split('access_key = "', 1)[1].split('"', 1)[0]
        secret = text.split('secret_key = "', 1)[1].split('"', 1)[0]
        return str(path), access, secret

    def start_s3(self, listen: str = "", credentials: str = "") -> DaemonState:
        """Start the S3 gateway (shoal-s3) against this cluster; `credentials` defaults to the
        generated file in s3/. A restarted gateway keeps its address."""
        if self.gateway is not None and self.running(self.gateway):
            raise ClusterError(f"the S3 gateway is already running at {self.gateway.address}")
        previous = self.gateway.address if self.gateway else ""
        daemon = DaemonState("s3", "s3", str(self.root / "s3"))
        args = [
            "--listen", listen or previous or "127.0.0.1:0",
            "--coordinator", self.address,
            "--credentials", credentials or self.s3_credentials()[0],
            "--stripe-bytes", str(self.settings.stripe_bytes),
        ]  # fmt: skip
        self.gateway = daemon
        self._wait_ready(daemon, self._spawn(daemon, "shoal.s3", args))
        self.save()
        return daemon

    def stop_s3(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the S3 gateway; its exit code when this process started it."""
        if self.gateway is None or not self.running(self.gateway):
            return None
        code = self._stop(self.gateway, sig)
        self.save()
        return code

    def _start_nodes(self, daemons: list[DaemonState], *, fresh: bool = False) -> None:
        started = []
        for daemon in daemons:
            listen = "127.0.0.1:0" if fresh or not daemon.address else daemon.address
            started.append(
                (
                    daemon,
                    self._serving(daemon, "shoal.storage_node", listen, self._node_flags(daemon)),
                )
            )
        for daemon, process in started:
            self._wait_ready(daemon, process)
        self.save()

    def add_node(self, zone: str = "") -> DaemonState:
        """Start one more node."""
        name = f"node-{len(self.nodes) + 1}"
        daemon = DaemonState(name, "node", str(self.root / "nodes" / name), zone=zone)
        self.nodes[name] = daemon
        self._start_nodes([daemon], fresh=True)
        return daemon

    def start_node(self, name: str) -> DaemonState:
        """Restart a stopped node on its previous address."""
        daemon = self.node(name)
        if self.running(daemon):
            raise ClusterError(f"{name} is already running (pid {daemon.pid})")
        self._start_nodes([daemon])
        return daemon

    def start_nodes(self, names: list[str]) -> None:
        """Restart several stopped nodes in parallel."""
        daemons = [self.node(name) for name in names]
        for daemon in daemons:
            if self.running(daemon):
                raise ClusterError(f"{daemon.name} is already running (pid {daemon.pid})")
        self._start_nodes(daemons)

    def stop_nodes(self, names: list[str], sig: int = signal.SIGTERM) -> None:
        """Stop several nodes: signal all first, then wait for each."""
        daemons = [self.node(name) for name in names]
        self._stop_all(daemons, sig)
        self.save()

    def stop_node(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop a node (SIGTERM: graceful; SIGKILL: a crash)."""
        daemon = self.node(name)
        if not self.running(daemon):
            raise ClusterError(f"{name} is not running")
        self._stop(daemon, sig)
        self.save()

    def stop_coordinator(self, sig: int = signal.SIGTERM) -> None:
        if self.coordinator is None or not self.running(self.coordinator):
            raise ClusterError("the coordinator is not running")
        self._stop(self.coordinator, sig)

    def start_coordinator(self) -> None:
        """Restart the coordinator on its previous address."""
        if self.coordinator is None:
            raise ClusterError(f"no local cluster in {self.root}")
        if self.running(self.coordinator):
            raise ClusterError("the coordinator is already running")
        process = self._serving(
            self.coordinator,
            "shoal.coordinator",
            self.coordinator.address,
            self._coordinator_flags(),
        )
        self._wait_ready(self.coordinator, process)
        self.save()

    def _stop_all(self, daemons: list[DaemonState], sig: int) -> dict[str, int | None]:
        """Signal every running daemon first, then wait for each (they stop in parallel);
        returns the exit codes of the ones this process started."""
        running = [d for d in daemons if self.running(d)]
        for daemon in running:
            self._signal(daemon, sig)
        return {d.name: self._stop(d, sig, signalled=True) for d in running}

    @staticmethod
    def _signal(daemon: DaemonState, sig: int) -> None:
        """Signal a daemon. Never pid 0 or below: os.kill(0, ...) signals our own group."""
        if daemon.pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon.pid, sig)

    def _stop(self, daemon: DaemonState, sig: int, *, signalled: bool = False) -> int | None:
        """Signal a daemon (unless already `signalled`) and wait for it; escalate to SIGKILL
        after STOP_TIMEOUT_S. Signalling twice could kill a daemon in its own clean exit."""
        if daemon.pid <= 0:
            return None
        if not signalled:
            self._signal(daemon, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.running(daemon) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.running(daemon):
            self._signal(daemon, signal.SIGKILL)
            while self.running(daemon):
                time.sleep(0.02)
        child = self._children.pop(daemon.pid, None)
        code = child.wait() if child is not None else None
        daemon.pid = 0
        return code

    def down(self) -> dict[str, int | None]:
        """Stop every daemon (workers and nodes first, together, then the coordinator);
        returns exit codes of the ones this process started."""
        gateway = [self.gateway] if self.gateway is not None else []
        codes = self._stop_all(
            [*gateway, *self.workers.values(), *self.nodes.values()], signal.SIGTERM
        )
        if self.coordinator is not None and self.coordinator.pid and self.running(self.coordinator):
            codes["coordinator"] = self._stop(self.coordinator, signal.SIGTERM)
        if self.root.exists():
            self.save()
        return codes

    def shard_path(self, node: str, shard: str) -> Path:
        """Where a node keeps a shard file (for fault-injection tests)."""
        return Path(self.node(node).data_dir) / "shards" / shard[:2] / shard
