"""`resnetctl status | logs | cancel`: the grid jobs on a Ray cluster, seen through the Jobs API and MLflow."""

from __future__ import annotations

import datetime as dt
import sys

import click

address_option = click.option(
    "--address", envvar="RAY_ADDRESS", default=None,
    help="Ray dashboard, http://HEAD:8265 (env RAY_ADDRESS; default: the local cluster from `cluster up --local`).",
)


def _client(address: str | None):
    from orchestrator.remote import job_client, resolve_address

    return job_client(resolve_address(address))


def _job_info(client, job_id: str):
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        raise click.UsageError(f"no job {job_id!r} on this cluster ({str(exc).splitlines()[0]})") from exc


def _when(ms: int | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


@click.command("status")
@click.argument("job_id", required=False)
@address_option
@click.option("--tracking-uri", default=None,
              help="Where to count cells (default: the URI the job was given; env MLFLOW_TRACKING_URI wins if set).")
def status_command(job_id: str | None, address: str | None, tracking_uri: str | None) -> None:
    """Show a job's state and its cells done/running/pending; without JOB_ID, list resnetctl jobs."""
    import os

    from orchestrator import remote

    client = _client(address)
    if job_id is None:
        jobs = [j for j in client.list_jobs() if (j.metadata or {}).get(remote.META_GRID)]
        if not jobs:
            click.echo("no resnetctl jobs on this cluster")
            return
        for job in sorted(jobs, key=lambda j: j.start_time or 0):
            click.echo(f"{job.submission_id}  {str(job.status.value):9}  {job.metadata[remote.META_GRID]:24}  "
                       f"started {_when(job.start_time)}")
        return

    info = _job_info(client, job_id)
    meta = info.metadata or {}
    click.echo(f"job {job_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))
    click.echo(f"  started {_when(info.start_time)}, ended {_when(info.end_time)}")
    grid = meta.get(remote.META_GRID)
    if not grid:
        return
    env_vars = (info.runtime_env or {}).get("env_vars", {})
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or env_vars.get("MLFLOW_TRACKING_URI")
    total = int(meta[remote.META_CELLS]) if meta.get(remote.META_CELLS, "").isdigit() else None
    if not uri:
        click.echo(f"  grid {grid}: tracking URI unknown (pass --tracking-uri)")
        return
    try:
        progress = remote.cell_progress(uri, grid, total, meta.get(remote.META_EXPERIMENT))
    except Exception as exc:  # the store may be unreachable from here: the job state is still worth showing
        click.echo(f"  grid {grid}: cannot read {remote._redact_uri(uri)} ({str(exc).splitlines()[0]})", err=True)
        sys.exit(1)
    click.echo(f"  grid {grid}: {progress.line()}")


@click.command("logs")
@click.argument("job_id")
@address_option
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends; exit with its status.")
def logs_command(job_id: str, address: str | None, follow: bool) -> None:
    """Print a job's driver logs."""
    from orchestrator.remote import follow_job

    client = _client(address)
    _job_info(client, job_id)
    if follow:
        sys.exit(follow_job(client, job_id))
    click.echo(client.get_job_logs(job_id), nl=False)


@click.command("cancel")
@click.argument("job_id")
@address_option
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the job has stopped.")
def cancel_command(job_id: str, address: str | None, wait: bool) -> None:
    """Stop a running job; finished cells stay finished and a later submit runs the rest."""
    import time

    client = _client(address)
    info = _job_info(client, job_id)
    if info.status.is_terminal():
        click.echo(f"job {job_id} already {info.status.value}")
        return
    client.stop_job(job_id)
    if wait:
        deadline = time.monotonic() + 60
        while not (info := client.get_job_info(job_id)).status.is_terminal():
            if time.monotonic() > deadline:
                raise click.ClickException(f"job {job_id} is still {info.status.value} 60 s after the stop request")
            time.sleep(0.5)
    click.echo(f"job {job_id}: {client.get_job_info(job_id).status.value}")
