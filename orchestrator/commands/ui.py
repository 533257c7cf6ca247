"""`resnetctl ui`: the MLflow UI (and REST API) on the configured store, in the foreground.

It is the same locked-down server `cluster up` starts: bound to 127.0.0.1 unless `--host`
says otherwise, Host headers limited to the names it is reached by, and with `--auth` MLflow's
basic-auth app in front, so an unauthenticated request gets 401.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import click

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
def ui_command(backend_store_uri: str, host: str, port: int, allowed_hosts: tuple[str, ...],
               artifacts_destination: str | None, auth: bool) -> None:
    """Serve the MLflow UI on the experiment store until interrupted."""
    from cluster.mlflow_server import (
        ADMIN_PASSWORD_ENV,
        allowed_hosts_for,
        server_command,
        server_env,
        write_auth_config,
    )

    if backend_store_uri.startswith(("http://", "https://")):
        raise UserError(f"--store {backend_store_uri} is already a tracking server; open it in a browser instead")
    if "://" not in backend_store_uri:
        raise UserError(f"--store {backend_store_uri!r} is not a database URI (e.g. sqlite:///mlflow.db)")
    if auth and not os.environ.get(ADMIN_PASSWORD_ENV):
        raise UserError(f"--auth needs the admin password in the environment variable {ADMIN_PASSWORD_ENV}")

    with tempfile.TemporaryDirectory(prefix="resnetctl-ui-") as state:
        auth_config = None
        if auth:  # users live in ./basic_auth.db beside the store; the ini (no secrets) is temporary
            auth_config = write_auth_config(Path(state) / "basic_auth.ini",
                                            database_uri=f"sqlite:///{Path.cwd() / 'basic_auth.db'}")
        env = server_env(auth_config=auth_config, admin_password=os.environ.get(ADMIN_PASSWORD_ENV))
        cmd = server_command(backend_store_uri, host=host, port=port, artifacts_destination=artifacts_destination,
                             allowed_hosts=allowed_hosts_for(host, allowed_hosts), auth=auth)

        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        click.echo(f"MLflow UI on http://{shown}:{port} (store {redact_uri(backend_store_uri)}); Ctrl-C stops it",
                   err=True)
        signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: the server first, then our temp dir
        proc = subprocess.Popen(cmd, env=env)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            code = proc.wait()
    sys.exit(code)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
