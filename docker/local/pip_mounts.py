"""Print `podman build` options that give the build's RUN steps this host's pip configuration, read-only.

For hosts that install Python packages from a local mirror (find-links, file:// indexes, constraints):
the merged configuration (`pip config list`, the environment's PIP_* included) goes to a pip.conf in
the folder given as the first argument, mounted at /etc/pip.conf, and every local path it names is
mounted at the same path. Nothing of it stays in the image: RUN mounts are not committed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PATH_KEYS = {"find-links", "index-url", "extra-index-url", "constraint", "cert", "requirement"}


def main(folder: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        match = re.fullmatch(r"[^.]*\.([a-z-]+)='(.*)'", line.strip())
        if match:
            settings[match[1]] = match[2]
    mounts: set[Path] = set()
    for key, value in settings.items():
        if key not in PATH_KEYS:
            continue
        for item in value.split():
            path = Path(item.removeprefix("file://"))
            if not path.is_absolute() or not path.exists():
                continue
            # a file's folder; an index's root (its pages link to ../../files/...)
            mounts.add(path.parent if path.is_file() or path.name == "simple" else path)
    conf = folder / "pip.conf"
    conf.write_text("[global]\n" + "".join(f"{key} = {value}\n" for key, value in sorted(settings.items())))
    options = [f"--volume={conf}:/etc/pip.conf:ro"]
    options += [
        f"--volume={m}:{m}:ro" for m in sorted(mounts) if not any(m.is_relative_to(o) and m != o for o in mounts)
    ]
    print(" ".join(options))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
