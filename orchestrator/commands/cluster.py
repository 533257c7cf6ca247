"""`resnetctl cluster up/down/status --local`: a multi-node Ray cluster on loopback with MLflow beside it.

Cloud clusters are Ray's own business: `ray up cluster/configs/aws-gpu.yaml` (or gcp-gpu.yaml,
or the KubeRay manifest); these commands only manage the local one used for development and tests.
"""

from __future__ import annotations

from pathlib import Path

import click

from resnetctl.errors import UserError

CLOUD_HINT = ("only --local clusters are managed here; for a cloud cluster run "
              "`ray up cluster/configs/aws-gpu.yaml` (or gcp-gpu.yaml) or apply cluster/configs/kuberay-raycluster.yaml")

local_option = click.option("--local", "is_local", is_flag=True, help="The cluster on this machine (loopback).")
state_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where the local cluster's state lives (default $RESNETCTL_LOCAL_CLUSTER or ~/.resnetctl/local-cluster).",
)


def _require_local(is_local: bool) -> None:
    if not is_local:
        raise UserError(CLOUD_HINT)


def _describe(cluster) -> str:
    return (f"Ray dashboard  {cluster.dashboard_url}   (RAY_ADDRESS)\n"
            f"Ray GCS        {cluster.gcs_address}\n"
            f"MLflow server  {cluster.tracking_uri}   (MLFLOW_TRACKING_URI)\n"
            f"state          {cluster.state_dir}")


@click.group("cluster")
def cluster_group() -> None:
    """Start, stop and inspect the local multi-node cluster."""


@cluster_group.command("up")
@local_option
@state_option
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 64), help="Worker nodes.")
@click.option("--cpus-per-worker", default=1.0, show_default=True, type=click.FloatRange(0.5, 1024),
              help="CPUs each worker node offers to Ray.")
@click.option("--head-cpus", default=0, show_default=True, type=click.IntRange(0, 1024),
              help="CPUs the head offers (0: the head runs only the job drivers).")
@click.option("--backend", type=click.Choice(["postgres", "sqlite"]), default="postgres", show_default=True,
              help="MLflow's backend store: a throw-away PostgreSQL on loopback, or a SQLite file.")
def up_command(is_local: bool, state_dir: Path | None, workers: int, cpus_per_worker: float, head_cpus: int,
               backend: str) -> None:
    """Start a head, worker nodes and the MLflow server; print the addresses to use."""
    _require_local(is_local)
    from cluster import local

    cluster = local.up(state_dir, workers=workers, cpus_per_worker=cpus_per_worker, head_cpus=head_cpus,
                       backend=backend)
    click.echo(_describe(cluster))


@cluster_group.command("down")
@local_option
@state_option
def down_command(is_local: bool, state_dir: Path | None) -> None:
    """Stop everything `cluster up --local` started."""
    _require_local(is_local)
    from cluster import local

    cluster = local.down(state_dir)
    click.echo(f"stopped the local cluster at {cluster.dashboard_url}")


@cluster_group.command("status")
@local_option
@state_option
def status_command(is_local: bool, state_dir: Path | None) -> None:
    """Which parts of the local cluster are running."""
    _require_local(is_local)
    from cluster import local

    cluster = local.LocalCluster.load(state_dir if state_dir is not None else local.default_state_dir())
    click.echo(_describe(cluster))
    click.echo(f"nodes alive    {cluster.alive_nodes()} of {1 + len(cluster.workers)}")
    processes = {"head": cluster.head, **{f"worker {i}": w for i, w in enumerate(cluster.workers)}}
    if cluster.mlflow is not None:
        processes["mlflow"] = cluster.mlflow
    for name, proc in processes.items():
        click.echo(f"  {name:10} pid {proc.pid:<7} {'running' if proc.alive() else 'DOWN'}")
