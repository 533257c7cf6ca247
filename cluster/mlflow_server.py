"""Start the MLflow tracking server (UI + REST API) on a SQL store, locked down by default.

Defaults that matter for safety: bound to 127.0.0.1; `--allowed-hosts` limited to the names the
server is really reached by (MLflow's own default also admits every private IP); optional HTTP
basic auth through MLflow's `basic-auth` app, whose admin password comes from the environment
and is never written to disk. The store URI, which may hold the database password, reaches the
server through its environment (MLFLOW_BACKEND_STORE_URI, readable by its owner only), never its
command line (which every local user can read in `ps`).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.net import LOOPBACK, wait_for_http
from resnetctl.errors import UserError
from resnetctl.redaction import redact

AUTH_CONFIG_NAME = "basic_auth.ini"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
STORE_ENV = "MLFLOW_BACKEND_STORE_URI"  # `mlflow server --backend-store-uri`'s environment variable
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class MlflowServerError(UserError, RuntimeError):
    """The server cannot be configured or did not come up; the message says why."""

    multiline = True  # may end with the tail of a process's log


def allowed_hosts_for(host: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Host headers to accept: the loopback names (any port), the bind address if it is a real one, `extra`."""
    names = list(LOOPBACK_NAMES)
    if host not in ("0.0.0.0", "::", *LOOPBACK_NAMES):
        names.append(host)
    patterns = [pattern for name in names for pattern in (name, f"{name.replace('[', '[[]', 1)}:*")]
    return patterns + [h for h in extra if h]


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def refuse_open_without_auth(host: str, auth: bool) -> None:
    """MlflowServerError for a server bound beyond loopback without a login: whoever reaches it could read,
    change and delete every run."""
    if not auth and not is_loopback(host):
        raise MlflowServerError(f"--host {host} would serve the store to the network without a login: add --auth "
                                f"(the admin password from {ADMIN_PASSWORD_ENV}), or keep the default 127.0.0.1")


def write_auth_config(path: Path, *, database_uri: str, admin_username: str = "admin",
                      default_permission: str = "NO_PERMISSIONS") -> Path:
    """The basic-auth app's ini (`MLFLOW_AUTH_CONFIG_PATH`): its user DB and who is admin; no password in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return path


def mlflow_executable() -> str:
    """The `mlflow` script beside this interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("mlflow")
    if beside.is_file():
        return str(beside)
    found = shutil.which("mlflow")
    if found is None:
        raise MlflowServerError("the `mlflow` command is not installed in this environment")
    return found


def server_command(*, host: str = LOOPBACK, port: int = 5000, artifacts_destination: str | None = None,
                   allowed_hosts: list[str] | None = None, cors_allowed_origins: str | None = None,
                   auth: bool = False, workers: int = 1) -> list[str]:
    """The `mlflow server` argument list, without the store (see `server_env`); artifacts are proxied by the
    server (`--serve-artifacts`)."""
    cmd = [mlflow_executable(), "server", "--host", host,
           "--port", str(port), "--workers", str(workers), "--serve-artifacts",
           "--allowed-hosts", ",".join(allowed_hosts or allowed_hosts_for(host))]
    if artifacts_destination:
        cmd += ["--artifacts-destination", artifacts_destination]
    if cors_allowed_origins:
        cmd += ["--cors-allowed-origins", cors_allowed_origins]
    if auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def server_env(backend_store_uri: str, *, auth_config: Path | None = None, admin_password: str | None = None,
               admin_username: str | None = None) -> dict[str, str]:
    """The server's environment: its store, no telemetry; with auth, where its ini is and the admin's
    bootstrap password."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
    env[STORE_ENV] = backend_store_uri
    if auth_config is not None:
        if not admin_password:
            raise MlflowServerError(
                f"--auth needs the admin password in {ADMIN_PASSWORD_ENV} (MLflow ships no default password)"
            )
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
        # CSRF key shared by the server's workers (they inherit this env); random unless the operator set one
        env.setdefault(SECRET_KEY_ENV, secrets.token_urlsafe(32))
        env[ADMIN_PASSWORD_ENV] = admin_password
        if admin_username:
            env[ADMIN_USERNAME_ENV] = admin_username
    return env


@dataclass
class MlflowServer:
    """A running `mlflow server` child: its pid (a process-group leader), URL and log file."""

    pid: int
    url: str
    log_file: str

    def to_dict(self) -> dict:
        return asdict(self)


def start_mlflow_server(backend_store_uri: str, *, state_dir: Path, host: str = LOOPBACK, port: int,
                        artifacts_destination: str | None = None, auth: bool = False,
                        admin_password: str | None = None, admin_username: str = "admin",
                        workers: int = 1, timeout: float = 90.0) -> MlflowServer:
    """Start the server in the background (own session, so it can be stopped as a group) and wait for /health."""
    state_dir.mkdir(parents=True, exist_ok=True)
    auth_config = None
    if auth:
        auth_config = write_auth_config(state_dir / AUTH_CONFIG_NAME,
                                        database_uri=f"sqlite:///{state_dir / 'basic_auth.db'}",
                                        admin_username=admin_username)
    env = server_env(backend_store_uri, auth_config=auth_config, admin_password=admin_password,
                     admin_username=admin_username)
    artifacts_destination = artifacts_destination or str(state_dir / "mlartifacts")
    cmd = server_command(host=host, port=port, artifacts_destination=artifacts_destination, auth=auth,
                         workers=workers)
    log_file = state_dir / f"mlflow-{port}.log"
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=state_dir, start_new_session=True)
    url = f"http://{LOOPBACK if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        wait_for_http(f"{url}/health", timeout, alive=lambda: proc.poll() is None, what="mlflow server")
    except (RuntimeError, TimeoutError) as exc:
        _stop_group(proc.pid)
        tail = redact(log_file.read_text(errors="replace")[-2000:])
        raise MlflowServerError(f"{exc}; last lines of {log_file}:\n{tail}") from exc
    return MlflowServer(pid=proc.pid, url=url, log_file=str(log_file))


def _stop_group(pid: int) -> None:
    from cluster.processes import stop_process_group

    stop_process_group(pid)
