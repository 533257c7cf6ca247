"""The cloud cluster configs: valid for Ray's own launcher schema, and saying what the project needs."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
LAUNCHER_CONFIGS = {"aws": CLUSTER / "configs" / "aws-gpu.yaml", "gcp": CLUSTER / "configs" / "gcp-gpu.yaml"}
KUBERAY = CLUSTER / "configs" / "kuberay-raycluster.yaml"
HEAD_SERVICES = CLUSTER / "scripts" / "head_services.sh"


def _apt_packages_from_makefile() -> set[str]:
    """FFCV's system packages as the project's own set-up installs them (postgresql and chromium are for tests)."""
    text = (CLUSTER.parent / "Makefile").read_text()
    packages = re.search(r"^APT_PACKAGES := (.*)$", text, re.M).group(1).split()
    return set(packages) - {"postgresql", "chromium"}


def _load(provider: str) -> dict:
    return yaml.safe_load(LAUNCHER_CONFIGS[provider].read_text())


@pytest.mark.parametrize("provider", sorted(LAUNCHER_CONFIGS))
def test_launcher_config_passes_rays_schema_as_written_and_after_defaults(provider):
    config = _load(provider)
    assert config["provider"]["type"] == provider
    validate_config(config)
    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("provider", sorted(LAUNCHER_CONFIGS))
def test_schema_check_rejects_a_misspelt_field(provider):
    config = _load(provider)
    config["setup_comands"] = config.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        validate_config(config)


@pytest.mark.parametrize("provider", sorted(LAUNCHER_CONFIGS))
def test_head_is_on_demand_and_workers_carry_gpus(provider):
    config = _load(provider)
    node_types = config["available_node_types"]
    head = node_types[config["head_node_type"]]
    workers = {name: spec for name, spec in node_types.items() if name != config["head_node_type"]}
    assert workers
    if provider == "aws":
        assert "InstanceMarketOptions" not in head["node_config"]
    else:
        assert not head["node_config"].get("scheduling", {}).get("preemptible", False)
        assert "guestAccelerators" not in head["node_config"]
    assert head["resources"].get("GPU", 0) == 0
    for spec in workers.values():
        gpus = spec["resources"]["GPU"]
        assert gpus >= 1 and spec["max_workers"] >= 1
        if provider == "aws":
            assert spec["node_config"]["InstanceType"].startswith(("g4", "g5", "g6", "p3", "p4", "p5"))
        else:
            assert sum(a["acceleratorCount"] for a in spec["node_config"]["guestAccelerators"]) == gpus
            assert spec["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"


@pytest.mark.parametrize("provider", sorted(LAUNCHER_CONFIGS))
def test_setup_installs_ffcv_packages_resnetctl_and_mounts_shared_storage(provider):
    config = prepare_config(_load(provider))
    for commands in (config["head_setup_commands"], config["worker_setup_commands"]):
        text = "\n".join(commands)
        assert all(package in text.split() for package in _apt_packages_from_makefile()), text
        assert "pip install -q -e ~/resnetctl" in text
        assert "/mnt/shared" in text and "mount -t nfs" in text
    assert config["file_mounts"]["/home/ubuntu/resnetctl"] == "."
    assert "postgresql" in "\n".join(config["head_setup_commands"]).split()


@pytest.mark.parametrize(("provider", "scheme"), [("aws", "s3://"), ("gcp", "gs://")])
def test_head_starts_mlflow_on_postgresql_with_object_storage_artifacts(provider, scheme):
    config = _load(provider)
    head_start = "\n".join(config["head_start_ray_commands"])
    assert "--head" in head_start and "--dashboard-host=127.0.0.1" in head_start
    services = [c for c in config["head_start_ray_commands"] if "head_services.sh" in c]
    assert len(services) == 1 and f" {scheme}" in services[0]
    assert "ray start" not in "\n".join(config["worker_setup_commands"])
    assert all("--address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"] if "ray start" in c)


def test_head_services_script_is_valid_bash_and_uses_postgresql_and_auth():
    subprocess.run(["bash", "-n", str(HEAD_SERVICES)], check=True)
    text = HEAD_SERVICES.read_text()
    assert "MLFLOW_BACKEND_STORE_URI=\"postgresql+psycopg2://" in text
    assert "--backend-store-uri" not in text  # a command line is public to every user of the node
    assert "--app-name basic-auth" in text and "--allowed-hosts" in text
    assert "--artifacts-destination \"$ARTIFACTS_URI\"" in text


def test_kuberay_manifest_has_the_required_fields():
    docs = list(yaml.safe_load_all(KUBERAY.read_text()))
    by_kind = {doc["kind"]: doc for doc in docs}
    assert set(by_kind) == {"PersistentVolumeClaim", "RayCluster"}
    pvc = by_kind["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    cluster = by_kind["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["metadata"]["name"]
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__  # the image's Ray must match the client's
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    head_containers = {c["name"]: c for c in head["template"]["spec"]["containers"]}
    assert "ray-head" in head_containers and all(c["image"] for c in head_containers.values())
    mlflow = head_containers["mlflow"]
    server = " ".join(mlflow["args"])
    assert "--backend-store-uri" not in server and "s3://" in server
    assert "--app-name basic-auth" in server
    secrets = {e["name"] for e in mlflow["env"] if "valueFrom" in e}
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= secrets

    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (worker,) = group["template"]["spec"]["containers"]
        assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        claims = {v["persistentVolumeClaim"]["claimName"] for v in group["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        assert claims == {pvc["metadata"]["name"]}


def test_configs_and_scripts_ship_with_the_package():
    import tomllib

    package_data = tomllib.loads((CLUSTER.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = package_data["package-data"]["cluster"]
    for path in (*LAUNCHER_CONFIGS.values(), KUBERAY, HEAD_SERVICES):
        relative = path.relative_to(CLUSTER)
        assert any(relative.match(p) for p in patterns), relative


# --- day one on a GPU cluster (issue 18): an interpreter pyproject accepts, storage every node shares
def _requires_python():
    import tomllib

    from packaging.specifiers import SpecifierSet

    return SpecifierSet(tomllib.loads((CLUSTER.parent / "pyproject.toml").read_text())["project"]["requires-python"])


@pytest.mark.parametrize("provider", sorted(LAUNCHER_CONFIGS))
def test_launcher_configs_build_the_venv_with_a_python_pyproject_accepts(provider):
    setup = "\n".join(_load(provider)["setup_commands"])
    interpreters = re.findall(r"\b(python3(?:\.\d+)?) -m venv\b", setup)
    assert interpreters, setup
    for interpreter in interpreters:  # Ubuntu 22.04's `python3` is 3.10: the version must be explicit
        assert re.fullmatch(r"python3\.\d+", interpreter), interpreter
        assert _requires_python().contains(interpreter.removeprefix("python") + ".0"), interpreter
        assert f"{interpreter}-venv" in setup.split()  # the apt package that gives it `-m venv`


def test_the_image_the_kuberay_manifest_runs_has_a_python_pyproject_accepts():
    base = re.search(r"^FROM rayproject/ray:[\w.]+-py(\d)(\d+)\b", (CLUSTER / "Dockerfile").read_text(), re.M)
    assert base, "cluster/Dockerfile must build on a rayproject/ray image that names its Python (-py311)"
    assert _requires_python().contains(f"{base.group(1)}.{base.group(2)}.0")
    cluster = next(d for d in yaml.safe_load_all(KUBERAY.read_text()) if d["kind"] == "RayCluster")
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1 and next(iter(images)).split("/")[-1].startswith("resnetctl:")  # the Dockerfile's


@pytest.mark.parametrize("path", sorted((CLUSTER / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_cluster_config_declares_the_shared_storage_remote_submits_need(path):
    from orchestrator.remote import CLUSTER_SHARED_MOUNT

    text = path.read_text()
    assert f"--storage {CLUSTER_SHARED_MOUNT}/" in text  # the recipe at the top submits with it
    if path == KUBERAY:
        docs = {d["kind"]: d for d in yaml.safe_load_all(text)}
        pvc = docs["PersistentVolumeClaim"]
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["storageClassName"]
        spec = docs["RayCluster"]["spec"]
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for container in (c for g in groups for c in g["template"]["spec"]["containers"]):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get(CLUSTER_SHARED_MOUNT) == "shared", container["name"]
    else:
        setup = "\n".join(yaml.safe_load(text)["setup_commands"])
        assert re.search(rf"mount -t nfs\S*\s.*\s{re.escape(CLUSTER_SHARED_MOUNT)}\)", setup, re.S), setup


# --- locked down (issue 13): token auth, a loopback dashboard, no secret on a command line or in a job's env
def _ray_starts(config: dict) -> list[str]:
    return [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config[key]
            if "ray start" in c]


@pytest.mark.parametrize("provider", sorted(LAUNCHER_CONFIGS))
def test_launcher_configs_turn_on_ray_token_auth_and_keep_the_dashboard_on_loopback(provider):
    config = _load(provider)
    starts = _ray_starts(config)
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts), starts
    assert "--dashboard-host=127.0.0.1" in starts[0] and "0.0.0.0" not in "\n".join(starts)
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    setup = "\n".join(config["setup_commands"])
    assert "chmod 600 ~/.ray/auth_token" in setup and "export RAY_AUTH_MODE=token" in setup
    assert "~/.mlflow/credentials" in setup  # MLflow's credentials from a 0600 file, not a job's env


def test_kuberay_turns_on_token_auth_and_gives_mlflow_credentials_from_a_secret():
    cluster = next(d for d in yaml.safe_load_all(KUBERAY.read_text()) if d["kind"] == "RayCluster")
    spec = cluster["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    ray_containers = [c for c in spec["headGroupSpec"]["template"]["spec"]["containers"] if c["name"] == "ray-head"]
    ray_containers += [c for g in spec["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    for container in ray_containers:
        env = {e["name"]: e for e in container["env"]}
        assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "admin-password"


@pytest.mark.parametrize("path", sorted((CLUSTER / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_cluster_config_enables_ray_token_auth(path):
    text = path.read_text()
    assert "RAY_AUTH_MODE=token" in text or re.search(r"authOptions:\s*\{mode:\s*token\}", text)
    assert "dashboard-host=0.0.0.0" not in text and 'dashboard-host: "0.0.0.0"' not in text


def test_head_services_keep_passwords_off_command_lines():
    text = HEAD_SERVICES.read_text()
    assert "PASSWORD '$DB_PASSWORD'\"" not in text  # psql -c "CREATE ROLE ... PASSWORD '...'" is in `ps`
    assert "| sudo -u postgres psql" in text
    assert "umask 077" in text and "mlflow_credentials" in text


def test_the_image_context_leaves_out_environments_data_stores_and_history():
    """cluster/Dockerfile COPYs the repository root: .dockerignore keeps the rest out of the image."""
    patterns = {line.strip() for line in (CLUSTER.parent / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "data", "results", "mlruns", "mlartifacts", "**/*.db", "**/*.beton"} <= patterns
    assert "COPY --chown=ray:users . /home/ray/resnetctl" in (CLUSTER / "Dockerfile").read_text()
