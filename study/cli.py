"""The `taugate` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from trainables.config import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="TauGate ablation study service.")
console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        fail(f"{path}: file not found")
    except yaml.YAMLError as err:
        fail(f"{path}: YAML syntax error: {err}")
    if not isinstance(data, dict):
        fail(f"{path}: expected a mapping of config fields")
    return data


@app.command()
def trial(
    method: Annotated[str, typer.Option(help="frozen|bitfit|taugate|gain_only|threshold_only|lora|full")] = "taugate",
    seed: Annotated[int, typer.Option()] = 0,
    gate_sharpness: Annotated[float | None, typer.Option(help="TauGate sharpness s")] = None,
    sparsity_weight: Annotated[float | None, typer.Option(help="TauGate sparsity weight lambda")] = None,
    lora_rank: Annotated[int | None, typer.Option()] = None,
    dataset: Annotated[str | None, typer.Option(help="mnist5k (bundled) or mnist (torchvision)")] = None,
    data_root: Annotated[str | None, typer.Option()] = None,
    download: Annotated[bool, typer.Option(help="let torchvision download MNIST")] = False,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda|mps|directml")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML or JSON file of trial config fields")] = None,
    artifacts: Annotated[Path | None, typer.Option(help="folder for the adapter and gate statistics")] = None,
) -> None:
    """Run one trial (training its own foundation); the metrics dict is the last line of stdout."""
    from trainables.trial import run_trial

    raw = _load_yaml(config) if config else {}
    options = {
        "method": method, "seed": seed, "gate_sharpness": gate_sharpness, "sparsity_weight": sparsity_weight,
        "lora_rank": lora_rank, "dataset": dataset, "data_root": data_root, "device": device,
    }  # fmt: skip
    raw |= {k: v for k, v in options.items() if v is not None}
    if download:
        raw["download"] = True
    try:
        metrics = run_trial(raw, artifact_dir=artifacts)
    except ConfigError as err:
        fail(str(err))
    print(json.dumps(metrics))


@app.command()
def paper(
    seeds: Annotated[int, typer.Option(min=1, help="seeds per method")] = 5,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda|mps|directml")] = "auto",
    output: Annotated[Path | None, typer.Option(help="write every trial's metrics as JSON")] = None,
) -> None:
    """The paper's five methods over the seeds, in this process, beside the paper's table."""
    from analysis.paper import PAPER_METHODS
    from trainables.config import parse_config
    from trainables.data import load_modes
    from trainables.device import resolve_device
    from trainables.train import train_foundation
    from trainables.trial import run_trial, shared

    results = []
    try:
        for seed in range(seeds):
            config = parse_config({"seed": seed, "device": device})
            modes = load_modes(config, resolve_device(device))
            foundation = train_foundation(config, modes)  # one foundation per seed, shared by the methods
            for method in PAPER_METHODS:
                metrics = run_trial({"seed": seed, "method": method, "device": device}, shared(foundation))
                results.append(metrics)
                console.print(f"seed {seed} {method:<8} acc_45={metrics.get('acc_45', float('nan')):.3f}")
    except ConfigError as err:
        fail(str(err))
    if output:
        output.write_text(json.dumps(results, indent=2))
    Console().print(paper_comparison(results))


def paper_comparison(results: list[dict[str, Any]]) -> Table:
    from analysis.paper import COMPARISON_COLUMNS, comparison_rows

    table = Table(title="TauGate mode specialisation: ours (mnist5k) vs paper")
    for column in COMPARISON_COLUMNS:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in comparison_rows(results):
        table.add_row(*row)
    return table


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
