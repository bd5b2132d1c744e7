"""`taugate bank`: each foundation's gated adapters gathered into a mode bank, logged to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from study.cli.common import console, fail


def bank(
    study_dir: Annotated[Path, typer.Argument(help="a study folder with finished gated trials")],
    output: Annotated[Path | None, typer.Option(help="banks folder (default: STUDY_DIR/bank)")] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(help="one of taugate, gain_only, threshold_only; repeat it for several (default taugate)"),
    ] = None,
    foundation: Annotated[str | None, typer.Option(help="build only this foundation's bank (its id)")] = None,
    budget: Annotated[
        str | None, typer.Option(help="build only this TauGate budget's banks (its label, e.g. dense)")
    ] = None,
    compact: Annotated[bool, typer.Option(help="write each mode's compact subnetwork beside the bank")] = True,
    log: Annotated[bool, typer.Option(help="log each bank to the study's MLflow parent run as a pyfunc model")] = True,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default: the study's own)")] = None,
) -> None:
    """Gather each foundation's gated adapters into a mode bank (one folder per foundation: bank.json,
    bank.safetensors, a copy of the foundation, compact subnetworks); per mode, the best trial on validation."""
    from study.pipeline.mode_banks import build_banks
    from trainables.bank.layout import BankError

    try:
        built = build_banks(study_dir, output, tuple(method or ("taugate",)), foundation, compact, budget)
    except BankError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{output or study_dir / 'bank'}: cannot write the bank ({err})")
    for result in built:
        budget_text = f", budget {result.label}" if result.label else ""
        print(f"bank {result.folder}: foundation {result.foundation_id} (seed {result.seed}{budget_text}), "
              f"{len(result.modes)} modes")  # fmt: skip
        for name in result.modes:
            chosen = result.selections[name]
            line = (f"  {name:<20} trial {result.trials[name]} ({chosen['metric']} {chosen['value']:.4f}, "
                    f"best of {len(chosen['candidates'])})")  # fmt: skip
            if found := result.compact.get(name):
                kept = ", ".join(f"{k}/{n}" for k, n in zip(found["kept"], found["units"], strict=True))
                line += (
                    f"; compact: units kept {kept}, parameters x{found['parameter_ratio']:.3f}, "
                    f"multiply-adds x{found['mac_ratio']:.3f}; {found['differ']}/{found['digits']} test digits "
                    f"predicted otherwise than the dense net ({found['differ_dropped_fired']} of them where a "
                    f"dropped unit fired; dropped units fired on {found['dropped_fired']} digits)"
                )
                if forced := found.get("forced"):
                    line += (f"; forced to {forced['keep']:.0%} of units: {forced['differ']}/{forced['digits']} "
                             f"digits predicted otherwise, accuracy {forced['accuracy_dense']:.3f} -> "
                             f"{forced['accuracy_compact']:.3f}")  # fmt: skip
            print(line)
        for note in result.notes:
            if "skipped" in note:
                print(f"  note: {note}")
    if log:
        from study.pipeline.service import log_banks

        log_banks(built, study_dir, tracking_uri, console)
