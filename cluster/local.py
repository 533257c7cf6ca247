"""A multi-node Ray cluster on this machine, with the MLflow server beside it: for development and tests.

`ray start --head --block` and one `ray start --address ... --block` per worker node, each in its own
session so that stopping its process group stops the raylet, GCS, dashboard and workers it started
(and never anyone else's Ray). Each worker node gets its own `--num-cpus`, so a 2-core machine can
still be a head plus two 1-CPU workers. Ray token auth is on, with a token of this cluster's own.
The tracking server runs on a throw-away PostgreSQL (or a SQLite file). What was started is written
to `<state_dir>/cluster.json` (mode 0600: it holds the database password), which `down` reads.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from cluster.net import LOOPBACK, free_port
from cluster.processes import is_alive, start_time, stop_process_group
from resnetctl.errors import UserError

STATE_FILE = "cluster.json"
TOKEN_FILE = "ray_auth_token"
RAY_STOP_TIMEOUT_S = 5.0
_SAVE_LOCK = threading.Lock()
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's minimum is 75 MiB; cells pass tiny objects only
PREEMPTION_MARGIN_S = 1.0  # `preempt` stops a node this long after its drain deadline (clock skew, GCS ticks)


def default_state_dir() -> Path:
    """Where `cluster up --local` keeps its state: $RESNETCTL_LOCAL_CLUSTER or ~/.resnetctl/local-cluster."""
    return Path(os.environ.get("RESNETCTL_LOCAL_CLUSTER", Path.home() / ".resnetctl" / "local-cluster"))


class LocalClusterError(UserError, RuntimeError):
    """The local cluster cannot be started, found or stopped; the message says why."""

    multiline = True  # may end with the tail of a process's log


@dataclass
class Proc:
    """A process group we started: leader pid plus start time (so a recycled pid is never signalled)."""

    pid: int
    started: float
    log_file: str
    drain_deadline: float | None = None  # a Ray node told it will be taken then (UNIX time, `LocalCluster.drain`)

    def alive(self) -> bool:
        return is_alive(self.pid, self.started)

    def stop(self, timeout: float = 20.0) -> None:
        stop_process_group(self.pid, self.started, timeout=timeout)


@dataclass
class LocalCluster:
    state_dir: str
    gcs_address: str
    dashboard_url: str
    tracking_uri: str
    token_file: str
    temp_dir: str
    head: Proc
    workers: list[Proc] = field(default_factory=list)
    mlflow: Proc | None = None
    postgres: dict | None = None  # PostgresServer.to_dict()
    backend_store_uri: str = ""

    # --- persistence --------------------------------------------------------------
    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        with _SAVE_LOCK:  # `up` saves from two threads (Ray, tracking)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self), indent=2))
            tmp.chmod(0o600)
            tmp.replace(path)

    @classmethod
    def load(cls, state_dir: str | Path) -> LocalCluster:
        path = Path(state_dir) / STATE_FILE
        if not path.is_file():
            raise LocalClusterError(f"no local cluster recorded in {state_dir} (start one with `resnetctl cluster up --local`)")
        data = json.loads(path.read_text())
        data["head"] = Proc(**data["head"])
        data["workers"] = [Proc(**w) for w in data["workers"]]
        data["mlflow"] = Proc(**data["mlflow"]) if data.get("mlflow") else None
        return cls(**data)

    # --- queries --------------------------------------------------------------------
    @property
    def token(self) -> str:
        return Path(self.token_file).read_text().strip()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def alive_nodes(self) -> int:
        """Ray nodes the dashboard reports ALIVE (0 when it does not answer)."""
        return count_alive_nodes(self.dashboard_url, self.auth_headers())

    def node_id(self, node: Proc) -> str | None:
        """The Ray node id (hex) of a node we started: its raylet's `--node_id`; None once the node is gone."""
        try:
            tree = psutil.Process(node.pid).children(recursive=True)
        except psutil.Error:
            return None
        for proc in tree:
            try:
                flags = [arg for arg in proc.cmdline() if arg.startswith("--node_id=")]
            except psutil.Error:
                continue
            if flags:
                return flags[0].split("=", 1)[1]
        return None

    # --- growing ---------------------------------------------------------------------
    def add_worker(self, cpus: float = 1, timeout: float = 120.0) -> Proc:
        """Start one more worker node (say, in place of a stopped one) and wait until the GCS counts it."""
        index = len(self.workers)
        alive_before = self.alive_nodes()
        node = _start([_ray_cli(), "start", f"--address={self.gcs_address}",
                       f"--num-cpus={cpus:g}", "--num-gpus=0", *_node_args()],
                      _ray_env(Path(self.token_file)), Path(self.state_dir) / f"ray-worker-{index}.log")
        self.workers.append(node)
        self.save()
        _wait(lambda: self.alive_nodes() > alive_before, timeout, f"Ray worker node {index}", [self.head, node])
        return node

    # --- stopping --------------------------------------------------------------------
    def drain(self, node: Proc, *, notice_s: int = 1, message: str = "preempted (local cluster)") -> float:
        """Tell the GCS that a worker node will be taken for preemption in `notice_s` s; return that deadline.

        This is the notice a cloud gives before it reclaims a spot/preemptible node (`ray drain-node --reason
        DRAIN_NODE_REASON_PREEMPTION`, as Ray's autoscaler sends it): no new work is placed on the node from
        then on, what runs there keeps running. Ray does not stop the node at the deadline; `preempt` does.
        """
        node_id = self.node_id(node)
        if node_id is None:
            raise LocalClusterError(f"no running Ray node under process {node.pid}")
        drain = subprocess.run(
            [_ray_cli(), "drain-node", f"--address={self.gcs_address}",
             f"--node-id={node_id}", "--reason=DRAIN_NODE_REASON_PREEMPTION", f"--reason-message={message}",
             f"--deadline-remaining-seconds={notice_s}"],
            env=_ray_env(Path(self.token_file)), capture_output=True, text=True, timeout=120)
        if drain.returncode != 0:
            raise LocalClusterError(f"ray drain-node refused node {node_id}:\n{drain.stdout}{drain.stderr}")
        # the command counts the deadline from its own start; counting from its end errs late, the safe side
        node.drain_deadline = time.time() + notice_s
        self.save()
        return node.drain_deadline

    def preempt(self, node: Proc, *, notice_s: int = 1) -> None:
        """What a cloud does to a spot node: a drain notice (`drain`, unless one was given already), then, once
        its deadline has passed, the node goes (its process group stopped). Ray records the death of a node
        drained for preemption that dies after its deadline as AUTOSCALER_DRAIN_PREEMPTED, and the actors that
        died with it raise errors with `preempted` set; a node that goes earlier, or unannounced, died unexpectedly.
        """
        deadline = node.drain_deadline or self.drain(node, notice_s=notice_s)
        time.sleep(max(0.0, deadline + PREEMPTION_MARGIN_S - time.time()))
        node.stop(timeout=RAY_STOP_TIMEOUT_S)

    def down(self) -> None:
        """Stop MLflow, the workers, the head and PostgreSQL; remove temp dirs and the state file."""
        if self.mlflow is not None:  # its runs are committed already; uvicorn's graceful stop just waits
            self.mlflow.stop(timeout=RAY_STOP_TIMEOUT_S)
        for node in [*self.workers, self.head]:  # a local dev cluster has nothing to flush: 5 s, then SIGKILL
            node.stop(timeout=RAY_STOP_TIMEOUT_S)
        if self.postgres:
            from cluster.postgres import PostgresServer

            PostgresServer(**self.postgres).remove()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        (Path(self.state_dir) / STATE_FILE).unlink(missing_ok=True)


def count_alive_nodes(dashboard_url: str, headers: dict[str, str]) -> int:
    """ALIVE nodes according to the state API (the GCS's view), 0 when the dashboard does not answer."""
    request = urllib.request.Request(f"{dashboard_url}/api/v0/nodes?limit=1000", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            nodes = json.load(response)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(1 for node in nodes if node.get("state") == "ALIVE")


def _ray_env(token_file: Path) -> dict[str, str]:
    """Environment of every Ray process (and so of every job): our venv first on PATH, token auth on."""
    bin_dir = str(Path(sys.executable).parent)
    return dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        RAY_USAGE_STATS_ENABLED="0",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
    )


def _ray_cli() -> str:
    """The `ray` command of this venv (never another Ray on PATH)."""
    return str(Path(sys.executable).with_name("ray"))


def _node_args() -> list[str]:
    """`ray start` arguments of every node: in the foreground (its process group is the node), a small
    object store, and a dashboard agent port of its own (Ray's default, 52365, is one per machine)."""
    return ["--block", "--disable-usage-stats", f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--dashboard-agent-listen-port={free_port()}"]


def _start(cmd: list[str], env: dict[str, str], log_file: Path) -> Proc:
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    return Proc(pid=proc.pid, started=start_time(proc.pid) or 0.0, log_file=str(log_file))


def _wait(predicate, timeout: float, what: str, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = [p for p in procs if not p.alive()]
        if dead:
            tail = Path(dead[0].log_file).read_text(errors="replace")[-1500:]
            raise LocalClusterError(f"{what}: a process exited early; end of {dead[0].log_file}:\n{tail}")
        time.sleep(0.5)
    raise LocalClusterError(f"{what}: not ready within {timeout:.0f} s")


def up(state_dir: str | Path | None = None, *, workers: int = 2, cpus_per_worker: float = 1, head_cpus: int = 0,
       backend: str = "postgres", timeout: float = 120.0) -> LocalCluster:
    """Start head, `workers` worker nodes and the MLflow server; return the recorded cluster."""
    state = Path(state_dir) if state_dir is not None else default_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    if (state / STATE_FILE).is_file():
        existing = LocalCluster.load(state)
        if existing.head.alive():
            raise LocalClusterError(f"a local cluster is already up ({existing.dashboard_url}); `resnetctl cluster down --local` first")
        existing.down()  # a stale record from a crashed session: clean what is left of it
    if backend not in ("postgres", "sqlite"):
        raise LocalClusterError(f"backend must be postgres or sqlite, not {backend!r}")

    token_file = state / TOKEN_FILE
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    env = _ray_env(token_file)
    temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    gcs_port, dashboard_port = free_port(), free_port()
    head = _start([_ray_cli(), "start", "--head", f"--port={gcs_port}",
                   f"--num-cpus={head_cpus}", "--num-gpus=0", "--include-dashboard=true", f"--dashboard-host={LOOPBACK}",
                   f"--dashboard-port={dashboard_port}", f"--temp-dir={temp_dir}", *_node_args()],
                  env, state / "ray-head.log")
    cluster = LocalCluster(state_dir=str(state), gcs_address="", dashboard_url=f"http://{LOOPBACK}:{dashboard_port}",
                           tracking_uri="", token_file=str(token_file), temp_dir=temp_dir, head=head)
    tracking_error: list[BaseException] = []

    def start_tracking() -> None:  # PostgreSQL + MLflow come up while Ray does
        try:
            _start_tracking(cluster, state, backend, timeout)
        except BaseException as exc:  # re-raised in the main thread below
            tracking_error.append(exc)

    tracking = threading.Thread(target=start_tracking, name="start-tracking")
    try:
        cluster.save()
        tracking.start()
        _wait(lambda: cluster.alive_nodes() >= 1, timeout, "Ray head", [head])
        cluster.gcs_address = _gcs_address(gcs_port)
        for _ in range(workers):  # one at a time: concurrent raylet start-ups time out on 2 cores
            cluster.add_worker(cpus_per_worker, timeout)
        tracking.join()
        if tracking_error:
            raise tracking_error[0]
        cluster.save()
    except BaseException:
        if tracking.is_alive():
            tracking.join()
        cluster.down()
        raise
    return cluster


def _gcs_address(port: int) -> str:
    """host:port of the GCS as Ray recorded it (Ray binds the node's own IP, not loopback)."""
    from ray._private.services import get_node_ip_address

    return f"{get_node_ip_address()}:{port}"


def _start_tracking(cluster: LocalCluster, state: Path, backend: str, timeout: float) -> None:
    from cluster.mlflow_server import start_mlflow_server

    if backend == "postgres":
        from cluster.postgres import PostgresServer

        pg = PostgresServer.create(state)
        cluster.postgres = pg.to_dict()
        cluster.save()
        pg.start()
        cluster.backend_store_uri = pg.uri
    else:
        cluster.backend_store_uri = f"sqlite:///{state / 'mlflow.db'}"
    server = start_mlflow_server(cluster.backend_store_uri, state_dir=state / "mlflow", port=free_port(),
                                 timeout=timeout)
    cluster.mlflow = Proc(pid=server.pid, started=start_time(server.pid) or 0.0, log_file=server.log_file)
    cluster.tracking_uri = server.url


def down(state_dir: str | Path | None = None) -> LocalCluster:
    cluster = LocalCluster.load(state_dir if state_dir is not None else default_state_dir())
    cluster.down()
    return cluster


def find(state_dir: str | Path | None = None) -> LocalCluster | None:
    """The recorded local cluster, or None."""
    try:
        return LocalCluster.load(state_dir if state_dir is not None else default_state_dir())
    except LocalClusterError:
        return None
