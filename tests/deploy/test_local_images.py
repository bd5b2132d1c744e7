"""`make images`' own shell (docker/local/): what it reads from the machine it builds on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

HELPER = Path(__file__).resolve().parents[2] / "docker" / "local" / "debian_mirror.sh"

DEB822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
ONE_LINE = (
    "deb http://one-line.example/debian bookworm main\ndeb http://one-line.example/debian bookworm-updates main\n"
)


def mirror(apt_dir: Path) -> subprocess.CompletedProcess[str]:
    """The helper as images.sh runs it: sourced under `set -euo pipefail`, then echoed by the caller."""
    script = f'set -euo pipefail; source "{HELPER}"; found="$(debian_mirror "{apt_dir}")"; echo "found=$found"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # Debian bookworm's images: deb822 sources only, no sources.list (this failed `make images`)
        ({"sources.list.d/debian.sources": DEB822 + "\n" + DEB822}, "http://mirror.example/debian"),
        ({"sources.list": ONE_LINE}, "http://one-line.example/debian"),
        ({"sources.list": ONE_LINE, "sources.list.d/debian.sources": DEB822}, "http://one-line.example/debian"),
        ({"sources.list.d/other.list": "deb http://elsewhere.example/ubuntu jammy main\n"}, ""),
        ({}, ""),
    ],
    ids=["deb822-only", "sources-list-only", "both", "no-debian-mirror", "nothing"],
)
def test_the_debian_mirror_is_found_or_left_empty_without_failing(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = mirror(tmp_path)
    assert result.returncode == 0, f"debian_mirror failed under set -euo pipefail:\n{result.stderr}"
    assert result.stdout.strip() == f"found={expected}"


def test_images_script_uses_the_helper_for_its_default_mirror() -> None:
    script = (HELPER.parent / "images.sh").read_text()
    assert "source docker/local/debian_mirror.sh" in script
    assert '"${DEBIAN_MIRROR:-$(debian_mirror)}"' in script
