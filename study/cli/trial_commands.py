"""`taugate trial` and `taugate paper`: single trials in this process, without Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from study.cli.common import console, fail, load_yaml
from trainables import registry
from trainables.config import DEVICES, ConfigError, trial_fields


def trial(
    method: Annotated[str | None, typer.Option(help=f"one of {', '.join(registry.names())} (default taugate)")] = None,
    seed: Annotated[int | None, typer.Option(help="default 0")] = None,
    gate_sharpness: Annotated[float | None, typer.Option(help="TauGate sharpness s")] = None,
    sparsity_weight: Annotated[float | None, typer.Option(help="TauGate sparsity weight lambda")] = None,
    lora_rank: Annotated[int | None, typer.Option()] = None,
    dataset: Annotated[str | None, typer.Option(help="mnist5k (bundled) or mnist (torchvision)")] = None,
    data_root: Annotated[str | None, typer.Option()] = None,
    download: Annotated[bool, typer.Option(help="let torchvision download MNIST")] = False,
    device: Annotated[str | None, typer.Option(help=f"one of {', '.join(DEVICES)} (default auto)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML or JSON file of trial config fields")] = None,
    artifacts: Annotated[
        Path | None,
        typer.Option(help="folder for the adapter, its foundation (foundation.safetensors) and gate statistics"),
    ] = None,
) -> None:
    """Run one trial (training its own foundation); the metrics dict is the last line of stdout.
    Options given on the command line override the fields of `--config`."""
    from trainables.engine.trial import run_trial

    try:  # a study's trials/<key>/config.json too: the config it wraps (trainables.config.trial_fields)
        raw = dict(trial_fields(load_yaml(config))) if config else {}
    except ConfigError as err:
        fail(f"{config}: {err}")
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
    device: Annotated[str, typer.Option(help=f"one of {', '.join(DEVICES)}")] = "auto",
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
    out = Console()
    out.print(paper_comparison(results, out.width))


def paper_comparison(results: list[dict[str, Any]], width: int | None = None) -> Table:
    """Our seed means beside the paper's; within `width` columns (a terminal's) every word stays whole."""
    from analysis.paper.paper_table import COMPARISON_COLUMNS, comparison_rows
    from trainables.config import parse_config

    rows = comparison_rows(results)
    gated = parse_config({"method": "taugate"})  # `taugate paper` trains every method at the trial defaults
    table = Table(
        title="TauGate mode specialisation: ours (mnist5k) vs paper",
        caption=f"TauGate at the trial defaults: s = {gated.gate_sharpness:g}, λ = {gated.sparsity_weight:g}, tau's lr "
        f"x {gated.tau_lr_multiplier:g}; a study's report chooses λ on validation instead",
    )
    widths = fitted_widths([COMPARISON_COLUMNS, *rows], width) if width else None
    for index, column in enumerate(COMPARISON_COLUMNS):
        table.add_column(column, justify="left" if column == "method" else "right", overflow="fold",
                         width=widths[index] if widths else None)  # fmt: skip
    for row in rows:
        table.add_row(*row)
    return table


def fitted_widths(lines: list[tuple[str, ...]], width: int) -> list[int] | None:
    """Column widths for a boxed table of `lines` (header first) within `width` terminal columns, or None
    when it fits as it is. Rich alone shrinks every column evenly and cuts a long word (`(bias-…`); here
    each column keeps at least its longest word and the room left goes to the columns that wrap most."""
    natural = [max(cell_len(cell) for cell in column) for column in zip(*lines, strict=True)]
    room = width - 1 - 3 * len(natural)  # a border and two spaces of padding per column, and the last border
    if sum(natural) <= room:
        return None
    columns = list(zip(*lines, strict=True))
    widths = [max(cell_len(word) for cell in column for word in cell.split() or [""]) for column in columns]
    while sum(widths) < room and any(w < n for w, n in zip(widths, natural, strict=True)):
        short = max(range(len(widths)), key=lambda i: natural[i] - widths[i])
        widths[short] += 1
    return widths
