"""Mode bank benchmark, run on demand (never a test): `python -m benchmarks.bank_switching [STUDY_DIR]`.

Without a study folder it trains one quickly (784-128-128-10 foundation on the paper's 0/45 mixture with
the default protocol; TauGate adapters for 0, 45, 90 and 135 degrees, gain_only for 45, threshold_only
for 90: six modes), builds its bank with `study.pipeline.mode_banks.build_bank`, then measures:

- switching: `BankedMLP.set_mode` against copying a mode's tau/gamma into one dense GatedReLU model, and
  against loading the mode's adapter folder from disk (`load_adapter`);
- mixed batches: a batch of 256 whose samples name their mode (one gather) against the same batch in
  one mode, and against looping over the modes (one forward per mode's samples, then a scatter);
- compact subnetworks: parameters, multiply-adds and latency against the dense hard-gated model (the
  mode's adapter on the foundation, `set_hard(True)`) at batch 1 and 256.

Each figure is the best of `--repeats` interleaved rounds of a loop of calls, per call. Writes
benchmarks/bank_results.json and prints a table; benchmarks/README.md ("Mode bank") has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "bank_results.json"
sys.path.insert(0, str(ROOT))

from study.pipeline.mode_banks import build_bank  # noqa: E402
from trainables.bank.compact import check_compact  # noqa: E402
from trainables.bank.disk import load_bank  # noqa: E402
from trainables.bank.store import ModeBank  # noqa: E402
from trainables.config import parse_config  # noqa: E402
from trainables.data import load_modes  # noqa: E402
from trainables.engine.fit import train_foundation  # noqa: E402
from trainables.engine.trial import run_trial  # noqa: E402
from trainables.formats.checkpoints import load_adapter, save_foundation  # noqa: E402
from trainables.methods.taugate.gate import GatedReLU, set_hard  # noqa: E402

MODES = (("taugate", 0), ("taugate", 45), ("taugate", 90), ("taugate", 135), ("gain_only", 45),
         ("threshold_only", 90))  # fmt: skip


def train_study(folder: Path, quick: bool) -> Path:
    """A study folder with one foundation and the six adapters of MODES (no Ray, no MLflow)."""
    base = {"angles": [0, 45], "eval_angles": [90, 135], "device": "cpu", "seed": 0}
    if quick:
        base |= {"hidden": [16, 16], "foundation_epochs": 1, "epochs": 1}
    config = parse_config(base)
    data = load_modes(config, torch.device("cpu"))
    foundation = train_foundation(config, data)
    save_foundation(foundation, folder / "foundations" / f"{config.foundation_id()}.safetensors")
    for method, angle in MODES:
        trial = base | {"method": method, "target_angle": angle}
        key = f"{method}-{angle}"
        metrics = run_trial(trial, foundation=lambda c, m: foundation, artifact_dir=folder / "trials" / key)
        record = {"variant": {}, "run_name": key, "config": parse_config(trial).model_dump(), "columns": {}}
        (folder / "trials" / key / "config.json").write_text(json.dumps(record))
        (folder / "trials" / key / "metrics.json").write_text(json.dumps(metrics))
    return folder


def per_call(actions: dict[str, Callable[[], object]], loops: int, repeats: int, device: torch.device) -> dict:
    """Seconds per call of each action: the best of `repeats` rounds (the actions take turns) of `loops` calls."""
    timings: dict[str, list[float]] = {name: [] for name in actions}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for action in actions.values():  # warm-up
        action()
    for _ in range(repeats):
        for name, action in actions.items():
            sync()
            started = time.perf_counter()
            for _ in range(loops):
                action()
            sync()
            timings[name].append((time.perf_counter() - started) / loops)
    return {name: min(values) for name, values in timings.items()}


def bench_switch(bank: ModeBank, adapters: dict[str, Path], repeats: int, device: torch.device) -> dict:
    model = bank.model().to(device)
    names = bank.names
    dense = load_adapter(bank.foundation, adapters[names[0]]).to(device)
    gates = [m for m in dense.activations if isinstance(m, GatedReLU)]
    counter = iter(range(10**12))

    def switch() -> None:
        model.set_mode(names[next(counter) % len(names)])

    def copy_in() -> None:  # one dense model, a mode's tau and gamma copied into its gates
        row = next(counter) % len(names)
        for layer, gate in enumerate(gates):
            gate.tau.data.copy_(model.gates[layer].tau[row])
            gate.gamma.data.copy_(model.gates[layer].gamma[row])

    def reload() -> None:  # an adapter folder read from disk onto the foundation, as PEFT's load_adapter
        load_adapter(bank.foundation, adapters[names[next(counter) % len(names)]])

    fast = per_call({"switch_seconds": switch, "switch_copy_seconds": copy_in}, 20_000, repeats, device)
    slow = per_call({"switch_reload_seconds": reload}, 20, repeats, device)
    return fast | slow


@torch.inference_mode()
def bench_mixed(bank: ModeBank, x: torch.Tensor, repeats: int, device: torch.device, batch: int = 256) -> dict:
    model = bank.model().to(device)
    x = x[:batch].to(device)
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(len(bank), (len(x),), generator=generator).to(device)
    names = [bank.names[i] for i in index.tolist()]
    groups = [(torch.nonzero(index == row).flatten(), row) for row in range(len(bank))]

    def looped() -> torch.Tensor:  # one forward per mode on its samples, scattered back
        out = torch.empty(len(x), 10, device=device)
        for rows, row in groups:
            model.active = row
            out[rows] = model(x[rows])
        return out

    times = per_call(
        {
            "single_mode_batch_seconds": lambda: model(x),
            "mixed_batch_seconds": lambda: model(x, index),
            "mixed_batch_names_seconds": lambda: model(x, names),
            "looped_batch_seconds": looped,
        },
        loops=500, repeats=repeats, device=device,
    )  # fmt: skip
    return times | {
        "mixed_batch": batch,
        "mixed_modes": len(bank),
        "mixed_vs_single": times["mixed_batch_seconds"] / times["single_mode_batch_seconds"],
        "mixed_names_vs_single": times["mixed_batch_names_seconds"] / times["single_mode_batch_seconds"],
        "looped_vs_mixed": times["looped_batch_seconds"] / times["mixed_batch_seconds"],
    }


@torch.inference_mode()
def bench_compact(bank: ModeBank, data: dict, adapters: dict[str, Path], repeats: int, device: torch.device) -> dict:
    per_mode = {}
    for name in bank.names:
        mode = data[bank.mode(name).angle]
        net = (bank.load_compact(name) if bank.mode(name).compact else bank.compact(name, mode.train_x)).to(device)
        dense = load_adapter(bank.foundation, adapters[name]).to(device).eval()
        set_hard(dense, True)
        report = check_compact(bank.model(name).to(device), net, mode.test_x.to(device), mode.test_y.to(device))
        figures = report.to_dict()
        for batch in (1, 256):
            x = mode.test_x[:batch].to(device)
            actions = {"dense": lambda x=x, m=dense: m(x), "compact": lambda x=x, m=net: m(x)}
            times = per_call(actions, 1000, repeats, device)
            figures[f"dense_seconds_b{batch}"] = times["dense"]
            figures[f"compact_seconds_b{batch}"] = times["compact"]
            figures[f"latency_ratio_b{batch}"] = times["compact"] / times["dense"]
        per_mode[name] = figures
    mean = {
        key: statistics.fmean(f[key] for f in per_mode.values())
        for key in ("parameter_ratio", "mac_ratio", "latency_ratio_b1", "latency_ratio_b256")
    }
    return {"compact_per_mode": per_mode} | {f"compact_mean_{k}": v for k, v in mean.items()}


def machine(device: torch.device) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    return (f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
            f"torch {torch.__version__}, {device.type} ({where})")  # fmt: skip


def show(value: object) -> str:
    if isinstance(value, float):
        return f"{value * 1e6:.1f} us" if value < 0.1 else f"{value:.3f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", type=Path, help="a study folder (default: train one here)")
    parser.add_argument("--foundation", help="the study's foundation to bank (its id), when it has several")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tiny 16-16 network, 1 epoch (figures not meaningful)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep-study", type=Path, help="train the study into this folder and keep it (no STUDY given)")
    args = parser.parse_args()
    device = torch.device(args.device)
    command = "python -m benchmarks.bank_switching " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        study = args.study or train_study(args.keep_study or Path(scratch) / "study", args.quick)
        folder = build_bank(study, Path(scratch) / "bank", foundation=args.foundation)
        setup_seconds = time.perf_counter() - started
        bank = load_bank(folder)
        adapters = {name: bank.export_adapter(name, Path(scratch) / "adapters" / name) for name in bank.names}
        config = parse_config(
            json.loads(next(Path(study, "trials").glob("*/config.json")).read_text())["config"]
            | {"eval_angles": sorted({m.angle for m in bank.modes}), "target_angle": bank.modes[0].angle}
        )
        data = load_modes(config, torch.device("cpu"))
        results: dict[str, object] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(device),
            "command": command.strip(),
            "hidden": bank.hidden,
            "modes": bank.names,
            "setup_seconds": setup_seconds,
        }
        results |= bench_switch(bank, adapters, args.repeats, device)
        results |= bench_mixed(bank, data[bank.modes[0].angle].test_x, args.repeats, device)
        results |= bench_compact(bank, data, adapters, args.repeats, device)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mode bank ({device.type}) -> {args.output}")
    for column in ("measure", "value"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for name, value in results.items():
        if name != "compact_per_mode":
            table.add_row(name, show(value))
    for name, figures in results["compact_per_mode"].items():
        kept = "-".join(str(k) for k in figures["kept"])
        table.add_row(
            f"compact {name}",
            f"kept {kept}, params x{figures['parameter_ratio']:.3f}, MACs x{figures['mac_ratio']:.3f}, latency "
            f"x{figures['latency_ratio_b1']:.2f} (b1) x{figures['latency_ratio_b256']:.2f} (b256), "
            f"{figures['differ']}/{figures['digits']} differ ({figures['dropped_fired']} with a dropped unit firing)",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
