"""docker/docker-compose.yml's services as podman containers, with `podman run` (no compose tool).

Each container is made from its service's own definition (image, command, environment, secrets,
volumes, published ports, shm size, init, dropped capabilities, security options, restart policy),
on a network of its own where services find each other by name, as under compose. What differs is
said where it is done: the host port of each published port is a free one (its host address stays
the compose file's), a service can have flags of its command replaced, and one container per Ray
worker replica. Every object carries the project's label, so `down()` removes all of them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.raycluster import free_ports

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "docker-compose.yml"
CONTAINERS_CONF = ROOT / "docker" / "local" / "containers.conf"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    executable = shutil.which("podman")
    assert executable, "podman is not installed: `make images` installs it (apt-get) and builds the images"
    env = os.environ | {"CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}
    result = subprocess.run([executable, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr[-2000:]}"
    return result


class Project:
    """The compose project `name`: its network, volumes and containers."""

    def __init__(self, name: str, folder: Path, variables: dict[str, str] | None = None):
        self.name, self.folder, self.variables = name, folder, variables or {}
        self.spec = yaml.safe_load(COMPOSE.read_text())
        self.label = f"taugate.test-project={name}"
        self.published: dict[str, dict[int, tuple[str, int]]] = {}  # container -> {container port: (ip, port)}
        self.secrets = self._make_secrets()

    def interpolate(self, text: Any) -> str:
        """Compose's ${VAR:-default}: this project's variables, else the default."""
        return re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: self.variables.get(m[1], m[2]), str(text))

    def _make_secrets(self) -> dict[str, Path]:
        """Fresh values for the compose file's secrets, as docker/README.md's one-liners make them."""
        folder = self.folder / "secrets"
        folder.mkdir(mode=0o700)
        files = {}
        for secret in self.spec["secrets"]:
            files[secret] = folder / secret
            files[secret].write_text(secrets.token_hex(32) + "\n")
            files[secret].chmod(0o644)
        return files

    def full(self, container: str) -> str:
        """A container's podman name: the project's name first, so that other containers here never clash."""
        return container if container.startswith(f"{self.name}-") else f"{self.name}-{container}"

    def up_network(self) -> None:
        podman("network", "create", "--label", self.label, self.name)

    def run(self, service: str, container: str, replace: dict[str, str] | None = None,
            drop_env: tuple[str, ...] = (), extra_volumes: tuple[str, ...] = ()) -> str:  # fmt: skip
        """Start `service` as the container `container`; `replace` swaps values of its command's flags."""
        svc = self.spec["services"][service]
        argv = ["run", "--detach", "--name", self.full(container), "--hostname", container, "--label", self.label,
                "--network", self.name, "--network-alias", service]  # fmt: skip
        for key, value in (svc.get("environment") or {}).items():
            if key not in drop_env:
                argv += ["--env", f"{key}={self.interpolate(value)}"]
        for secret in svc.get("secrets", []):  # compose bind-mounts a file secret read-only
            argv += ["--volume", f"{self.secrets[secret]}:/run/secrets/{secret}:ro"]
        for volume in [*svc.get("volumes", []), *extra_volumes]:
            source, target = volume.split(":", 1)
            argv += ["--volume", f"{self.name}_{source}:{target}"]
        self.published[container] = {}
        ports = svc.get("ports", [])
        for port, host_port in zip(ports, free_ports(len(ports)), strict=True):  # distinct: chosen together
            host_ip, _, target = self.interpolate(port).rsplit(":", 2)
            self.published[container][int(target)] = (host_ip, host_port)
            argv += ["--publish", f"{host_ip}:{host_port}:{target}"]
        if "shm_size" in svc:
            argv += ["--shm-size", self.interpolate(svc["shm_size"])]
        if svc.get("init"):
            argv += ["--init"]
        argv += [f"--cap-drop={cap}" for cap in svc.get("cap_drop", [])]
        argv += [f"--security-opt={opt.replace(':true', '')}" for opt in svc.get("security_opt", [])]
        if "restart" in svc:
            argv += ["--restart", svc["restart"]]
        command = []
        for argument in (self.interpolate(a) for a in svc["command"]):
            flag = argument.split("=", 1)[0]
            command.append(f"{flag}={replace[flag]}" if replace and flag in replace else argument)
        podman(*argv, self.interpolate(svc["image"]), *command)
        return self.full(container)

    def wait_healthy(self, service: str, container: str, timeout: float = 300) -> None:
        """Until the service's own healthcheck command succeeds in the container."""
        test, container = self.spec["services"][service]["healthcheck"]["test"], self.full(container)
        assert test[0] == "CMD", test
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if podman("exec", container, *test[1:], check=False, timeout=30).returncode == 0:
                return
            state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
            assert state == "running", f"{container} is {state}:\n{self.logs(container)}"
            time.sleep(2)
        raise AssertionError(f"{container} did not become healthy:\n{self.logs(container)}")

    def logs(self, container: str) -> str:
        result = podman("logs", "--tail", "60", self.full(container), check=False)
        return (result.stdout + result.stderr)[-4000:]

    def containers(self) -> list[str]:
        listed = podman("ps", "--all", "--filter", f"label={self.label}", "--format", "{{.Names}}")
        return listed.stdout.split()

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(podman("inspect", self.full(container)).stdout)[0]

    def volume_path(self, volume: str) -> Path:
        return Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{self.name}_{volume}").stdout.strip())

    def down(self) -> list[str]:
        """Remove every container, volume and the network of the project; returns what is left of it."""
        for container in self.containers():
            podman("rm", "--force", "--time", "0", container, check=False, timeout=120)
        for volume in podman("volume", "ls", "--filter", f"label={self.label}", "-q", check=False).stdout.split():
            podman("volume", "rm", "--force", volume, check=False)
        for volume in podman("volume", "ls", "-q", check=False).stdout.split():
            if volume.startswith(f"{self.name}_"):  # `run -v name:` creates volumes without our label
                podman("volume", "rm", "--force", volume, check=False)
        podman("network", "rm", "--force", self.name, check=False)
        left = self.containers()
        left += [v for v in podman("volume", "ls", "-q").stdout.split() if v.startswith(f"{self.name}_")]
        left += [n for n in podman("network", "ls", "--format", "{{.Name}}").stdout.split() if n == self.name]
        return left
