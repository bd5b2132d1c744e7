"""`taugate trial` and `taugate paper`: single trials in this process, without Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from study.cli.common import console, fail, load_yaml
from trainables.config import ConfigError


def trial(
    method: Annotated[
        str | None, typer.Option(help="frozen|bitfit|taugate|gain_only|threshold_only|lora|full (default taugate)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="default 0")] = None,
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
    """Run one trial (training its own foundation); the metrics dict is the last line of stdout.
    Options given on the command line override the fields of `--config`."""
    from trainables.engine.trial import run_trial

    raw = load_yaml(config) if config else {}
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


def paper(
    seeds: Annotated[int, typer.Option(min=1, help="seeds per method")] = 5,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda|mps|directml")] = "auto",
    output: Annotated[Path | None, typer.Option(help="write every trial's metrics as JSON")] = None,
) -> None:
    """The paper's five methods over the seeds, in this process, beside the paper's table."""
    from analysis.paper.paper_table import PAPER_METHODS
    from trainables.config import parse_config
    from trainables.data import load_modes
    from trainables.device import resolve_device
    from trainables.engine.fit import train_foundation
    from trainables.engine.trial import run_trial, shared

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
    from analysis.paper.paper_table import COMPARISON_COLUMNS, comparison_rows

    table = Table(title="TauGate mode specialisation: ours (mnist5k) vs paper")
    for column in COMPARISON_COLUMNS:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in comparison_rows(results):
        table.add_row(*row)
    return table
