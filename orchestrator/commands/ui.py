"""`resnetctl ui`: the MLflow UI (and REST API) on the configured store, in the foreground.

It is the same locked-down server `cluster up` starts: bound to 127.0.0.1 unless `--host`
says otherwise (another address only with `--auth`), Host headers limited to the names it is
reached by, and with `--auth` MLflow's basic-auth app in front, so an unauthenticated request gets
401. The store URI reaches the server through its environment, never its command line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import webbrowser
from pathlib import Path

import click

from resnetctl import redaction
from resnetctl.errors import UserError
from resnetctl.redaction import redact_uri

DEFAULT_STORE = "sqlite:///mlflow.db"


@click.command("ui")
@click.option("--store", "backend_store_uri", envvar="MLFLOW_TRACKING_URI", default=DEFAULT_STORE,
              show_default=True, help="SQL store to serve (SQLite or PostgreSQL URI); env MLFLOW_TRACKING_URI.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--allowed-host", "allowed_hosts", multiple=True,
              help="Extra Host header the server may be reached by (repeatable), e.g. head.example.org:5000.")
@click.option("--artifacts-destination", default=None,
              help="Where proxied artifacts are stored (a folder or s3://, gs:// URI); default ./mlartifacts.")
@click.option("--auth", is_flag=True,
              help="Require HTTP basic auth; the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD.")
@click.option("--grid", default=None, help="The grid whose runs to link to (default: the store's only or newest grid).")
@click.option("--open", "open_browser", is_flag=True, help="Open the grid's runs in the default web browser.")
def ui_command(backend_store_uri: str, host: str, port: int, allowed_hosts: tuple[str, ...],
               artifacts_destination: str | None, auth: bool, grid: str | None, open_browser: bool) -> None:
    """Serve the MLflow UI on the experiment store until interrupted."""
    from cluster.mlflow_server import (
        ADMIN_PASSWORD_ENV,
        allowed_hosts_for,
        server_command,
        server_env,
        write_auth_config,
    )

    _check_options(backend_store_uri, host, auth)
    with tempfile.TemporaryDirectory(prefix="resnetctl-ui-") as state:
        auth_config = None
        if auth:  # users live in ./basic_auth.db beside the store; the ini (no secrets) is temporary
            auth_config = write_auth_config(Path(state) / "basic_auth.ini",
                                            database_uri=f"sqlite:///{Path.cwd() / 'basic_auth.db'}")
        env = server_env(backend_store_uri, auth_config=auth_config, admin_password=os.environ.get(ADMIN_PASSWORD_ENV))
        cmd = server_command(host=host, port=port, artifacts_destination=artifacts_destination,
                             allowed_hosts=allowed_hosts_for(host, allowed_hosts), auth=auth)

        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        link = _grid_link(backend_store_uri, grid, f"http://{shown}:{port}")
        click.echo(f"MLflow UI on http://{shown}:{port} (store {redact_uri(backend_store_uri)}); Ctrl-C stops it",
                   err=True)
        if link:
            click.echo(link)
            if open_browser:
                webbrowser.open(link)
        code = _serve(cmd, env)
    sys.exit(code)


def _check_options(backend_store_uri: str, host: str, auth: bool) -> None:
    """UserError for a store the UI cannot serve (a server, not a database; one that does not answer) or a
    server that would be open to the network without a login."""
    from cluster.mlflow_server import ADMIN_PASSWORD_ENV, refuse_open_without_auth
    from orchestrator.stores import check_store

    if backend_store_uri.startswith(("http://", "https://")):
        raise UserError(f"--store {backend_store_uri} is already a tracking server; open it in a browser instead")
    if "://" not in backend_store_uri:
        raise UserError(f"--store {backend_store_uri!r} is not a database URI (e.g. sqlite:///mlflow.db)")
    refuse_open_without_auth(host, auth)
    if auth and not os.environ.get(ADMIN_PASSWORD_ENV):
        raise UserError(f"--auth needs the admin password in the environment variable {ADMIN_PASSWORD_ENV}")
    check_store(backend_store_uri)  # one line naming the store, before a server starts on it


def _serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server in the foreground; Ctrl-C or SIGTERM stops it (then the caller's temp dir goes)."""
    signal.signal(signal.SIGTERM, _interrupt)
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


def _grid_link(store_uri: str, grid: str | None, base_url: str) -> str | None:
    """The link to the grid's runs; None (with a note) while the store holds no grid, unless one was named."""
    from orchestrator.report.records import ReportError
    from orchestrator.report.source import grid_experiment, open_reader, runs_page

    try:
        _, experiment_id = grid_experiment(open_reader(store_uri), grid)
    except ReportError as exc:
        if grid is not None:
            raise
        click.echo(f"note: {redaction.shown(str(exc))}", err=True)
        return None
    return runs_page(base_url, experiment_id)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
