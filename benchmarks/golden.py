"""Golden hashes of what a refactoring must not change: seven single trials' metrics dicts (one per
method), four fused groups, a mode bank's mixed and single-mode outputs, a compact subnetwork and a
batched intervention, on the bundled data with one thread.

    python -m benchmarks.golden record FILE     # before a change
    python -m benchmarks.golden compare FILE    # after it: exit 1 naming every hash that moved

Hashes are of exact bits, so compare on the machine that recorded them (another CPU may round batched
products differently). `golden_results.json` holds the hashes recorded before the one-house redesign.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from trainables.bank.compact import check_compact, compact
from trainables.bank.store import assemble, read_mode
from trainables.config import parse_config
from trainables.data import load_modes
from trainables.engine.fit import train_foundation
from trainables.engine.fused import run_fused
from trainables.engine.silence import silenced_accuracies
from trainables.engine.trial import run_trial, shared
from trainables.formats.checkpoints import load_adapter, save_foundation


def h(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return hashlib.sha256(obj.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# metrics added after the hashes were recorded (TauGate's budget); left out, so that an equal hash still
# says every metric the record holds is bit for bit what it was
LATER_METRICS = ("tau_displacement", "tau_step_budget", "sparsity_weight_final")


def _recorded(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("train_seconds", *LATER_METRICS)}


def record() -> dict[str, str]:
    out = {}
    base = {"foundation_epochs": 1, "epochs": 2, "seed": 3}
    cfg0 = parse_config(dict(base))
    modes = load_modes(cfg0, torch.device("cpu"))
    foundation = train_foundation(cfg0, modes)
    provider = shared(foundation)
    runs = {
        "taugate": {"method": "taugate", "sparsity_weight": 0.5, "gate_sharpness": 5.0},
        "lora": {"method": "lora", "lora_rank": 4, "lora_alpha": 8.0},
        "bitfit": {"method": "bitfit"},
        "full": {"method": "full"},
        "gain_only": {"method": "gain_only"},
        "threshold_only": {"method": "threshold_only", "sparsity_weight": 0.1},
        "frozen": {"method": "frozen"},
    }
    tmp = Path(tempfile.mkdtemp())
    for name, extra in runs.items():
        m = run_trial(base | extra, provider, artifact_dir=tmp / name)
        out[f"trial/{name}"] = h(_recorded(m))
    for method in ("taugate", "lora", "bitfit", "full"):
        cfgs = [base | runs[method] | {"seed": s} for s in (3, 3, 3)]
        cfgs[1]["lr"] = 0.005
        out[f"fused/{method}"] = h([_recorded(m) for m in run_fused(cfgs, provider)])
    save_foundation(foundation, tmp / "foundation.safetensors")
    bm = [
        read_mode(foundation, tmp / n / "adapter", angle=a, foundation_id="f0")
        for n, a in (("taugate", 45.0), ("gain_only", 45.0), ("threshold_only", 0.0))
    ]
    bank = assemble(tmp / "foundation.safetensors", "f0", foundation.hidden, bm)
    model = bank.model()
    target = modes[45.0]
    x = target.test_x
    names = [bank.names[i % 3] for i in range(len(x))]
    out["bank/mixed_hard"] = h(model(x, names))
    model.set_hard(False)
    out["bank/mixed_soft"] = h(model(x, names))
    model.set_hard(True)
    for n in bank.names:
        model.set_mode(n)
        out[f"bank/{n}"] = h(model(x))
    model.set_mode(bank.names[0])
    net = compact(model, target.train_x)
    out["compact/logits"] = h(net(x))
    out["compact/report"] = h(check_compact(model, net, x, target.test_y).to_dict())
    adapted = load_adapter(foundation, tmp / "taugate" / "adapter")
    out["intervene"] = h(silenced_accuracies(adapted, x, target.test_y, [{0: [1, 2, 3]}, {1: list(range(40))}, {}]))
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "compare"):
        print(__doc__)
        return 2
    torch.set_num_threads(1)
    hashes, path = record(), Path(argv[1])
    if argv[0] == "record":
        path.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
        return 0
    before = json.loads(path.read_text())
    moved = sorted(k for k in before.keys() | hashes.keys() if before.get(k) != hashes.get(k))
    for name in moved:
        print(f"moved: {name} {before.get(name)} -> {hashes.get(name)}")
    print(f"{len(hashes) - len(moved)} of {len(hashes)} hashes equal")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
