"""A grid study's pure compute: its fused groups run in one process on one thread, nothing else.
`python -m benchmarks.compute SPEC` prints a JSON object; benchmarks/scale.py (`--only compute`) divides
the seconds by the machine's cores for `study_400_vs_compute`, the 400-trial study's whole process
against the compute it does.

Each seed's foundation is trained once first (the study trains it once too, in the foundation store);
its seconds are reported beside the groups' but are not part of the figure. Then every Tune trial of the
study, the fused groups exactly as `taugate run` cuts them (`study.spec.plan.fused_groups`, `fuse` of the
spec), is trained by `trainables.engine.fused.run_fused` with each member's artifacts written to a
scratch folder, as a worker does, and timed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(spec_path: Path) -> None:
    import torch
    import yaml

    from study.spec.loader import parse_spec
    from study.spec.plan import fused_groups, member_config, variants
    from trainables.data import load_modes
    from trainables.device import resolve_device
    from trainables.engine.fit import train_foundation
    from trainables.engine.fused import run_fused

    torch.set_num_threads(1)
    spec = parse_spec(yaml.safe_load(spec_path.read_text()), source=str(spec_path))
    base = spec.base_config()
    groups = fused_groups(spec, variants(spec))
    foundations, started = {}, time.perf_counter()
    for group in groups:
        for member in group:
            config = member_config(base, member)
            if (key := config.foundation_id()) not in foundations:
                foundations[key] = train_foundation(config, load_modes(config, resolve_device(config.device)))
    foundation_seconds = time.perf_counter() - started

    def provided(config, modes):
        return foundations[config.foundation_id()]

    seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="taugate-compute-") as tmp:
        for index, group in enumerate(groups):
            configs = [member_config(base, member) for member in group]
            folders = [Path(tmp, f"{index}-{position}") for position in range(len(configs))]
            started = time.perf_counter()
            run_fused(configs, foundation=provided, artifact_dirs=folders)
            seconds += time.perf_counter() - started
    trials = sum(len(group) for group in groups)
    print(json.dumps({"groups": len(groups), "trials": trials, "groups_seconds": seconds,
                      "foundations": len(foundations), "foundation_seconds": foundation_seconds}))  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
