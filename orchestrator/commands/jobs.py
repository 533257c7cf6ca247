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


def _when(ms: int | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


@click.command("status")
@click.argument("job_id", required=False)
@address_option
@click.option("--tracking-uri", default=None,
              help="Where to count cells (default: the URI the job was given; env MLFLOW_TRACKING_URI wins if set).")
def status_command(job_id: str | None, address: str | None, tracking_uri: str | None) -> None:
    """Show a job's state and its cells done/running/pending; without JOB_ID, list resnetctl jobs."""
    from orchestrator import remote

    client = _client(address)
    if job_id is None:
        jobs = remote.grid_jobs(client)
        if not jobs:
            click.echo("no resnetctl jobs on this cluster")
        for job in jobs:
            click.echo(f"{job.submission_id}  {str(job.status.value):9}  {job.metadata[remote.META_GRID]:24}  "
                       f"started {_when(job.start_time)}")
        return

    info = remote.job_info(client, job_id)
    click.echo(f"job {job_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))
    click.echo(f"  started {_when(info.start_time)}, ended {_when(info.end_time)}")
    grid = (info.metadata or {}).get(remote.META_GRID)
    if not grid:
        return
    uri = remote.job_tracking_uri(info, tracking_uri)
    if not uri:
        click.echo(f"  grid {grid}: tracking URI unknown (pass --tracking-uri)")
        return
    click.echo(f"  grid {grid}: {remote.job_cell_progress(info, uri).line()}")


@click.command("logs")
@click.argument("job_id")
@address_option
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends; exit with its status.")
def logs_command(job_id: str, address: str | None, follow: bool) -> None:
    """Print a job's driver logs."""
    from orchestrator.remote import follow_job, job_info

    client = _client(address)
    job_info(client, job_id)
    if follow:
        sys.exit(follow_job(client, job_id))
    click.echo(client.get_job_logs(job_id), nl=False)


@click.command("cancel")
@click.argument("job_id")
@address_option
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the job has stopped.")
def cancel_command(job_id: str, address: str | None, wait: bool) -> None:
    """Stop a running job; finished cells stay finished and a later submit runs the rest."""
    from orchestrator.remote import job_info, stop_job

    client = _client(address)
    info = job_info(client, job_id)
    if info.status.is_terminal():
        click.echo(f"job {job_id} already {info.status.value}")
        return
    status = stop_job(client, job_id, timeout_s=60 if wait else None)
    click.echo(f"job {job_id}: {status.value}")
