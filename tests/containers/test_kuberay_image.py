"""The KubeRay manifests start the image the compose container test runs, the way KubeRay starts it.

KubeRay gives a Ray pod's container no entry point of its own: it runs `/bin/bash -lc -- "ulimit -n
65536; ray start ..."` as the pod's user. A login shell rereads /etc/profile, which on Debian resets
PATH, so an image whose Python is found only through ENV PATH would have no `ray` there. The RayJob's
entrypoint runs a spec shipped in the image, from the shared study claim.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.containers.compose import COMPOSE, podman

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [ROOT / "docker" / "k8s" / name for name in ("raycluster.yaml", "rayjob.yaml")]
pytestmark = pytest.mark.containers


def ray_containers() -> list[tuple[dict, dict]]:
    """(pod spec, container) of every Ray head, worker and job submitter in the manifests."""
    found = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            spec = doc["spec"].get("rayClusterSpec", doc["spec"])
            pods = [spec["headGroupSpec"]["template"]["spec"]]
            pods += [group["template"]["spec"] for group in spec["workerGroupSpecs"]]
            if "submitterPodTemplate" in doc["spec"]:
                pods.append(doc["spec"]["submitterPodTemplate"]["spec"])
            found += [(pod, container) for pod in pods for container in pod["containers"]]
    return found


def test_kuberay_pods_start_the_compose_tested_image_with_kuberays_command():
    compose_image = re.sub(
        r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", yaml.safe_load(COMPOSE.read_text())["services"]["ray-head"]["image"]
    )
    containers = ray_containers()
    assert len(containers) == 5  # RayCluster head + workers, RayJob head + workers + submitter
    assert {c["image"] for _, c in containers} == {compose_image}
    image = f"localhost/{compose_image}"
    assert podman("image", "exists", image, check=False).returncode == 0, f"{image} is missing: `make images`"
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert not config.get("Entrypoint"), "KubeRay replaces the command; an entry point would wrap it"
    spec = yaml.safe_load(MANIFESTS[1].read_text())["spec"]["entrypoint"].split()[2]  # taugate run SPEC ...
    for pod, _ in containers:
        user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
        assert config["User"] == user, f"the image runs as {config['User']}, the pods as {user}"
    result = podman(
        "run", "--rm", "--user", config["User"], "--cap-drop=ALL", "--security-opt=no-new-privileges",
        image, "/bin/bash", "-lc", "--",
        f"ulimit -n 65536 2>/dev/null; ray --version && taugate --help >/dev/null && test -f {spec} "
        "&& test -w /shared/studies && id -u",
        timeout=300,
    )  # fmt: skip
    assert "ray, version 2.60.0" in result.stdout, result.stdout + result.stderr
    assert result.stdout.split()[-1] == "1000"
