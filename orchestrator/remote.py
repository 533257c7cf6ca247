"""Running a grid on a Ray cluster through the Ray Jobs API, and looking at it afterwards.

The job runs `resnetctl run grid.yaml`, the very code path of a local submit; only *where* it
runs changes. Before anything is submitted the dashboard and the tracking server must answer
within seconds, so a wrong address costs a clear message, not a queued job that fails later.
Progress ("cells done / running / pending") is read from MLflow, the store the cells write to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import shlex
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator import conventions as cv
from orchestrator.stores import StoreError, check_store, http_get
from resnetctl.errors import UserError
from resnetctl.redaction import redact, redact_uri

AGENT_PATIENCE_S = 60.0  # a head that just started may need this long before its job agent accepts jobs
JOB_GRID_FILE = "grid.yaml"
GRID_ENV = "RESNETCTL_GRID_YAML"
META_GRID = "resnetctl.grid"
META_EXPERIMENT = "resnetctl.experiment"
META_CELLS = "resnetctl.cells"
META_TRACKING = "resnetctl.tracking_uri"
STORAGE_ENV = "RESNETCTL_STORAGE"  # `resnetctl run --storage`'s environment variable
# never put in a job's environment, which anyone who can list the cluster's jobs reads: the nodes read
# MLflow's credentials from ~/.mlflow/credentials (or their own environment, from a Kubernetes Secret)
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# The folder every node of cluster/configs/*.yaml mounts from one shared file system (EFS, Filestore, a
# ReadWriteMany volume); $RESNETCTL_SHARED_MOUNTS (os.pathsep-separated) names another cluster's.
CLUSTER_SHARED_MOUNT = "/mnt/shared"
SHARED_MOUNTS_ENV = "RESNETCTL_SHARED_MOUNTS"


class RemoteError(UserError):
    """The cluster, a job on it or the tracking server cannot be used; printed as one line, exit status 2."""


# --- addresses and credentials -------------------------------------------------------------
def dashboard_url(address: str) -> str:
    """`HEAD:8265` or `http://HEAD:8265` -> `http://HEAD:8265` (the Jobs API lives on the dashboard)."""
    address = address.strip()
    if not address:
        raise RemoteError("--address is empty (expected http://HEAD:8265)")
    if address.startswith("ray://"):
        raise RemoteError(f"--address {address}: give the dashboard's http://HEAD:8265, not a Ray Client ray:// address")
    if "://" not in address:
        address = f"http://{address}"
    parsed = urllib.parse.urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise RemoteError(f"--address {address!r} is not a dashboard URL like http://HEAD:8265")
    return address.rstrip("/")


def ray_auth_headers(address: str) -> dict[str, str]:
    """Bearer token for Ray's token auth: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, the local cluster's, ~/.ray/auth_token."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    candidates = [os.environ.get("RAY_AUTH_TOKEN_PATH")]
    from cluster import local

    recorded = local.find()
    if recorded is not None and recorded.dashboard_url == address:
        candidates.append(recorded.token_file)
    candidates.append(str(Path.home() / ".ray" / "auth_token"))
    for path in candidates:
        if token:
            break
        if path and Path(path).is_file():
            token = Path(path).read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def check_dashboard(address: str, headers: dict[str, str]) -> str:
    """The cluster's Ray version, or RemoteError when nothing answers at `address` within seconds."""
    try:
        status, body = http_get(f"{address}/api/version", headers)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(f"no Ray dashboard answers at {address} ({reason}); check --address / RAY_ADDRESS") from exc
    if status in (401, 403):
        raise RemoteError(f"the Ray dashboard at {address} refused us ({status}): set RAY_AUTH_TOKEN to the cluster's token")
    try:
        return json.loads(body)["ray_version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(f"{address} answered, but not as a Ray dashboard (HTTP {status})") from exc


def check_tracking(uri: str, *, cluster_is_local: bool) -> None:
    """RemoteError unless the cluster's jobs can write to `uri` (checked from here, within seconds).

    A URI that carries a password is refused: the job's environment, where the URI travels, is shown
    to anyone who can list the cluster's jobs. The nodes read the password from their own files.
    """
    scheme = urllib.parse.urlparse(uri).scheme
    if redact_uri(uri) != uri:
        raise RemoteError(f"tracking URI {redact_uri(uri)} carries a password, which a Ray job would show to anyone "
                          "who can list the cluster's jobs: give the URI without it and the password to the nodes "
                          "(~/.pgpass or PGPASSFILE for PostgreSQL, ~/.mlflow/credentials for an MLflow server)")
    if scheme.startswith("sqlite") and not cluster_is_local:
        raise RemoteError(f"tracking store {uri} is a file on this machine, which the cluster cannot reach: "
                          "use the cluster's MLflow server (MLFLOW_TRACKING_URI=http://HEAD:5000)")
    if not scheme.startswith(("http", "sqlite", "postgresql", "mysql", "mssql")):
        raise RemoteError(f"tracking URI {uri!r}: expected http(s)://, postgresql://, mysql:// or sqlite://")
    try:
        check_store(uri)
    except StoreError as exc:
        raise RemoteError(str(exc)) from None


def shared_mounts() -> tuple[str, ...]:
    """The folders a remote cluster's nodes share: the configs' mount and those $RESNETCTL_SHARED_MOUNTS adds."""
    extra = [p.rstrip("/") for p in os.environ.get(SHARED_MOUNTS_ENV, "").split(os.pathsep) if p.strip()]
    return (CLUSTER_SHARED_MOUNT, *extra)


def checkpoint_storage(storage_path: str | None, *, cluster_is_local: bool) -> str:
    """Where the job keeps checkpoints: RemoteError unless every node of the cluster reaches the same place.

    A cluster on this machine (loopback) defaults to ./results here, so a resubmit resumes as a local one
    does. A remote one needs a URI (s3://, gs://, ...) or a folder under a mount its nodes share: without
    it Ray Train fails when rank 0 first persists a checkpoint (after a whole epoch, on every retry), and
    each resubmit would start over in a fresh temporary folder on the head.
    """
    value = (storage_path or "").strip()
    scheme = urllib.parse.urlparse(value).scheme if "://" in value else ""
    if cluster_is_local:
        return value if scheme else str(Path(value or "results").expanduser().resolve())
    if scheme and scheme != "file":
        return value
    path = posixpath.normpath(urllib.parse.urlparse(value).path if scheme else value) if value else ""
    mounts = shared_mounts()
    if path.startswith("/") and any(path == m or path.startswith(m + "/") for m in mounts):
        return path
    given = f"--storage {value}" if value else "no --storage (nor $RESNETCTL_STORAGE)"
    raise RemoteError(f"{given}: a remote cluster's checkpoints need storage every node shares, or no run can "
                      f"persist a checkpoint or resume: give a folder under the cluster's shared mount "
                      f"({', '.join(mounts)}; e.g. --storage {CLUSTER_SHARED_MOUNT}/ray_results) or a URI "
                      f"(s3://BUCKET/ray_results, gs://...); ${SHARED_MOUNTS_ENV} names another cluster's mount")


def _is_loopback(address: str) -> bool:
    return urllib.parse.urlparse(address).hostname in LOOPBACK_HOSTS


def _is_this_machines_cluster(url: str) -> bool:
    """The loopback dashboard of the cluster `cluster up --local` recorded: its nodes share this machine's files.
    Any other loopback address may be a tunnel to a remote head (`ray dashboard`, `kubectl port-forward`)."""
    if not _is_loopback(url):
        return False
    from cluster import local

    recorded = local.find()
    return recorded is not None and recorded.dashboard_url == url


def job_client(address: str):
    """A JobSubmissionClient for a dashboard that was just seen answering (so its constructor cannot hang)."""
    from ray.job_submission import JobSubmissionClient

    url = dashboard_url(address)
    headers = ray_auth_headers(url)
    check_dashboard(url, headers)
    return JobSubmissionClient(url, headers=headers)


# --- what the job runs -----------------------------------------------------------------------
def effective_tracking_uri(spec: Any) -> str:
    """The store the job will write to, resolved as `resnetctl run` resolves it (grid > env > ./mlflow.db)."""
    from orchestrator.tracking import resolve_tracking_uri

    return resolve_tracking_uri(spec.tracking.uri)


@dataclass
class JobRequest:
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    grid_yaml: str


def job_entrypoint(restart: bool) -> str:
    """`resnetctl run grid.yaml` in a fresh folder, the grid written there from $RESNETCTL_GRID_YAML.

    The grid travels as an environment variable rather than a `working_dir` upload: with a
    working_dir, the driver's `ray.init(runtime_env=...)` re-creates the job's environment
    under it, and the first job on a fresh cluster then intermittently died importing torch
    ("Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so").
    """
    run = shlex.join(["resnetctl", "run", JOB_GRID_FILE, *(["--restart"] if restart else [])])
    return f'cd "$(mktemp -d)" && printf \'%s\' "${GRID_ENV}" > {JOB_GRID_FILE} && exec {run}'


def build_job(grid_path: Path, spec: Any, cells: list, *, tracking_uri: str, restart: bool,
              storage_path: str | None = None) -> JobRequest:
    """A self-contained grid (absolute dataset paths, explicit tracking URI) and the job's environment.

    The job runs in a folder of its own on the cluster, so every path the grid names relative
    to the submitter's folder is written out absolute (for a real cluster it must name shared
    storage, e.g. /mnt/shared/data/cifar10). No credential is put in the job's environment (see
    CREDENTIAL_ENV); `check_tracking` refuses a URI with a password before this is built.
    """
    raw = yaml.safe_load(Path(grid_path).read_text())
    dataset = raw.setdefault("dataset", {})
    if spec.dataset.path is not None:
        dataset["path"] = str(spec.dataset.path)
    if spec.dataset.paths:
        dataset["paths"] = {name: str(path) for name, path in spec.dataset.paths.items()}
    raw["tracking"] = {**(raw.get("tracking") or {}), "uri": tracking_uri}
    grid_yaml = yaml.safe_dump(raw, sort_keys=False)

    # only keys of our own: Ray refuses a driver whose ray.init(runtime_env=...) repeats a job's env key
    env_vars = {"MLFLOW_TRACKING_URI": tracking_uri, GRID_ENV: grid_yaml}
    data_paths = sorted({str(cell.dataset_path) for cell in cells})
    if data_paths:
        env_vars["RESNETCTL_DATASET_PATHS"] = os.pathsep.join(data_paths)
    if storage_path:  # checkpoints: must outlive the job and be shared by the nodes (e.g. /mnt/shared/...)
        env_vars[STORAGE_ENV] = storage_path
    return JobRequest(
        entrypoint=job_entrypoint(restart),
        runtime_env={"env_vars": env_vars},
        metadata={META_GRID: spec.name, META_EXPERIMENT: spec.experiment_name, META_CELLS: str(len(cells)),
                  META_TRACKING: redact_uri(tracking_uri)},
        grid_yaml=grid_yaml,
    )


def submit_to_cluster(grid_path: Path, spec: Any, cells: list, *, address: str, detach: bool, restart: bool,
                      storage_path: str | None = None) -> int:
    """Check the cluster and the tracking server, submit `resnetctl run` as a Ray Job; return the exit code.

    Checkpoints go to `storage_path` (or $RESNETCTL_STORAGE), checked before anything else
    (`checkpoint_storage`): on a cluster on this machine they default to ./results here, so a resubmit
    resumes from them as a local submit would; a remote cluster needs shared storage.
    """
    url = dashboard_url(address)
    cluster_is_local = _is_loopback(url)
    storage_path = checkpoint_storage(storage_path or os.environ.get(STORAGE_ENV),
                                      cluster_is_local=_is_this_machines_cluster(url))
    headers = ray_auth_headers(url)
    check_dashboard(url, headers)
    tracking_uri = effective_tracking_uri(spec)
    check_tracking(tracking_uri, cluster_is_local=cluster_is_local)
    for warning in cluster_warnings(url, headers, cells):
        print(f"Warning: {warning}", file=sys.stderr, flush=True)

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(url, headers=headers)
    request = build_job(Path(grid_path), spec, cells, tracking_uri=tracking_uri, restart=restart,
                        storage_path=storage_path)
    job_id = _submit_with_retry(client, request)
    if detach:
        print(job_id, flush=True)
        return 0
    print(f"submitted {job_id} ({len(cells)} cells) to {url}; tracking {redact_uri(tracking_uri)}",
          file=sys.stderr, flush=True)
    return follow_job(client, job_id)


def cluster_warnings(url: str, headers: dict[str, str], cells: list) -> list[str]:
    """Cells that can never be scheduled on the cluster's nodes, and credentials the job will not carry."""
    from orchestrator.capacity import dashboard_nodes, fit_warnings

    try:
        warnings = fit_warnings(cells, dashboard_nodes(url, headers), url)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings = [f"cannot read the nodes of {url} ({redact(str(exc))[:200]}); whether the cells fit is unchecked"]
    held = [name for name in CREDENTIAL_ENV if os.environ.get(name)]
    if held:
        warnings.append(f"{', '.join(held)} stay here, out of the job's environment: the cluster's nodes need "
                        "their own (~/.mlflow/credentials, or a Kubernetes Secret)")
    return warnings


def _submit_with_retry(client, request: JobRequest, patience_s: float = AGENT_PATIENCE_S) -> str:
    """submit_job, retried while a freshly started head has no job agent yet (Ray says: try again later)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return client.submit_job(entrypoint=request.entrypoint, runtime_env=request.runtime_env,
                                     metadata=request.metadata)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


# --- following and inspecting jobs -------------------------------------------------------------
def follow_job(client, job_id: str, out=None) -> int:
    """Stream the job's logs until it ends; its exit status (Ctrl-C detaches and leaves the job running)."""
    out = out or sys.stdout

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            out.write(lines)
            out.flush()

    try:
        with contextlib.suppress(RuntimeError):  # the log socket closed early: poll the status instead
            asyncio.run(tail())
        return wait_for_exit(client, job_id)
    except KeyboardInterrupt:
        print(f"\ndetached; {job_id} keeps running (`resnetctl cancel {job_id}` stops it)", file=sys.stderr, flush=True)
        return 130


def wait_for_exit(client, job_id: str, timeout: float | None = None, poll_s: float = 1.0) -> int:
    """Poll until the job has ended; its exit status (TimeoutError after `timeout` seconds, if given)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = client.get_job_info(job_id)
        if info.status.is_terminal():
            return exit_code(info)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} still {info.status} after {timeout:.0f} s")
        time.sleep(poll_s)


def job_info(client, job_id: str):
    """The Jobs API's JobDetails of `job_id`; RemoteError when the cluster has no such job."""
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        raise RemoteError(f"no job {job_id!r} on this cluster ({str(exc).splitlines()[0]})") from exc


def stop_job(client, job_id: str, timeout_s: float | None = 60.0):
    """Ask Ray to stop the job and wait up to `timeout_s` (None: do not wait) until it has; its status then.

    RemoteError when it is still not stopped after `timeout_s`. Finished cells stay finished:
    a later submit runs the rest.
    """
    client.stop_job(job_id)
    if timeout_s is not None:
        try:
            wait_for_exit(client, job_id, timeout=timeout_s, poll_s=0.5)
        except TimeoutError:
            status = client.get_job_info(job_id).status.value
            raise RemoteError(f"job {job_id} is still {status} {timeout_s:g} s after the stop request") from None
    return client.get_job_info(job_id).status


def exit_code(info) -> int:
    """SUCCEEDED -> 0; otherwise the driver's exit code when known, else 1."""
    if str(info.status) in ("SUCCEEDED", "JobStatus.SUCCEEDED"):
        return 0
    code = getattr(info, "driver_exit_code", None)
    return code if code not in (None, 0) else 1


@dataclass
class CellProgress:
    done: int
    running: int
    failed: int
    pending: int | None  # None when the number of cells is unknown

    def line(self) -> str:
        pending = "?" if self.pending is None else str(self.pending)
        return f"cells: {self.done} done, {self.running} running, {pending} pending ({self.failed} failed, to rerun)"


def cell_progress(tracking_uri: str, grid: str, total: int | None, experiment: str | None = None) -> CellProgress:
    """Count the grid's cells by their MLflow runs: one cell may have several runs (reruns); the best counts."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment or grid)
    best: dict[str, str] = {}
    if experiment is not None:
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{cv.TAG_GRID}` = '{grid}'",
                                  max_results=5000)
        rank = {"done": 3, "running": 2, "failed": 1}
        for run in runs:
            cell = run.data.tags.get(cv.TAG_CELL_ID, run.info.run_id)
            tag = run.data.tags.get(cv.TAG_STATUS)
            if tag == "finished":
                state = "done"
            elif run.info.status == "RUNNING":
                state = "running"
            elif run.info.status == "FAILED" or tag == "failed":
                state = "failed"
            else:
                state = "failed"  # killed or stopped before it finished: it reruns on the next submit
            if rank[state] > rank.get(best.get(cell, ""), 0):
                best[cell] = state
    counts = {state: sum(1 for v in best.values() if v == state) for state in ("done", "running", "failed")}
    pending = None if total is None else max(total - counts["done"] - counts["running"], 0)
    return CellProgress(done=counts["done"], running=counts["running"], failed=counts["failed"], pending=pending)


def grid_jobs(client) -> list:
    """The cluster's resnetctl jobs (those whose metadata names a grid), oldest first."""
    jobs = [job for job in client.list_jobs() if (job.metadata or {}).get(META_GRID)]
    return sorted(jobs, key=lambda job: job.start_time or 0)


def job_tracking_uri(info, override: str | None = None) -> str | None:
    """Where the job's cells are tracked: `override`, else $MLFLOW_TRACKING_URI, else the URI the job was given."""
    env_vars = (info.runtime_env or {}).get("env_vars", {})
    return override or os.environ.get("MLFLOW_TRACKING_URI") or env_vars.get("MLFLOW_TRACKING_URI")


def job_cell_progress(info, tracking_uri: str) -> CellProgress:
    """The job's cells done/running/pending, counted in `tracking_uri`; RemoteError when it cannot be read."""
    meta = info.metadata or {}
    grid = meta[META_GRID]
    total = int(meta[META_CELLS]) if meta.get(META_CELLS, "").isdigit() else None
    try:
        return cell_progress(tracking_uri, grid, total, meta.get(META_EXPERIMENT))
    except Exception as exc:  # any failure of the store (unreachable, refused, not MLflow's): one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RemoteError(f"grid {grid}: cannot read {redact_uri(tracking_uri)} ({reason})") from exc


def resolve_address(address: str | None) -> str:
    """--address / RAY_ADDRESS, else the dashboard of the local cluster `cluster up --local` recorded."""
    if address:
        return dashboard_url(address)
    from cluster import local

    recorded = local.find()
    if recorded is not None:
        return recorded.dashboard_url
    raise RemoteError("no cluster given: pass --address http://HEAD:8265 or set RAY_ADDRESS")
