"""The modes section's bank tables: each mode's compact subnetwork against its dense hard-gated model
(units kept, parameters, multiply-adds, latency, digits predicted otherwise) and the subnetwork forced to a
unit budget (`study.pipeline.mode_banks.FORCED_KEEP` of each hidden layer, the units firing most often),
with what reaching that budget costs. A bank built before the forced entry existed reads "-" there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.report.sections.blocks import Table

FORCED_KEEP = 0.5  # the unit budget named when no compact report records its own (`mode_banks.FORCED_KEEP`)


def compact_reports(banks: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [mode["compact"] for bank in banks for mode in bank["modes"] if mode.get("compact")]


def mean_range(values: Sequence[float], digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """ "mean (min-max)" of finite values, "-" without any."""
    finite = [float(v) * scale for v in values if v is not None and np.isfinite(float(v))]
    if not finite:
        return "-"
    return f"{np.mean(finite):.{digits}f}{unit} ({min(finite):.{digits}f}-{max(finite):.{digits}f}{unit})"


def median_latency(reports: Sequence[Mapping[str, Any]], batch: int) -> str:
    key = f"batch_{batch}"
    readings = [r["latency"][key] for r in reports if isinstance(r.get("latency"), Mapping) and key in r["latency"]]
    if not readings:
        return "-"
    median = {k: float(np.median([r[k] for r in readings])) for k in ("dense_seconds", "compact_seconds", "ratio")}
    return (f"x{median['ratio']:.2f} ({median['dense_seconds'] * 1e6:.0f} → {median['compact_seconds'] * 1e6:.0f} µs, "
            f"median of {len(readings)} modes)")  # fmt: skip


def compact_cells(reports: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """One budget's compact subnetworks (every bank's modes) as the comparison table's cells, by row name."""
    layers = range(len(reports[0]["kept"]))
    kept = [[r["kept"][i] / r["units"][i] for r in reports] for i in layers]
    return {
        "compact: hidden units kept per layer: mean (min-max) over modes and seeds":
            "; ".join(mean_range(share, 0, 100, "%") for share in kept),
        "compact: parameters / dense: mean (min-max)": mean_range([r["parameter_ratio"] for r in reports], 3),
        "compact: multiply-adds / dense: mean (min-max)": mean_range([r["mac_ratio"] for r in reports], 3),
        "compact: test digits predicted otherwise than the dense hard-gated model (same adapter)":
            f"{sum(r['differ'] for r in reports)} of {sum(r['digits'] for r in reports):,} "
            f"({sum(r['differ_dropped_fired'] for r in reports)} where a dropped unit fired)",
        "compact: test accuracy dense / compact, mean over modes":
            f"{np.mean([r['accuracy_dense'] for r in reports]):.3f} / "
            f"{np.mean([r['accuracy_compact'] for r in reports]):.3f}",
        "compact: latency compact / dense at batch 1": median_latency(reports, 1),
        "compact: latency compact / dense at batch 256": median_latency(reports, 256),
    } | forced_cells(reports)  # fmt: skip


def _forced(reports: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The compact reports' `forced` entries (the subnetworks forced to a unit budget), where recorded."""
    return [r["forced"] for r in reports if isinstance(r.get("forced"), Mapping)]


def _keep(forced: Sequence[Mapping[str, Any]]) -> float:
    return float(forced[0].get("keep", FORCED_KEEP)) if forced else FORCED_KEEP


def forced_rule(banks: Sequence[Mapping[str, Any]]) -> str:
    """Which units the forced subnetwork keeps, as the banks recorded it (the default rule otherwise)."""
    return _rule(_forced(compact_reports(banks)))


def _rule(forced: Sequence[Mapping[str, Any]]) -> str:
    if forced and forced[0].get("rule"):
        return str(forced[0]["rule"])
    return (f"per hidden layer the ceil({_keep(forced):g} x width) units whose hard-gated activation is non-zero on "
            "the most of the mode's training digits (ties: the lower unit index); the others are dropped even where "
            "they fire")  # fmt: skip


def _forced_accuracy(forced: Sequence[Mapping[str, Any]]) -> str:
    pairs = [(f["accuracy_dense"], f["accuracy_compact"]) for f in forced
             if f.get("accuracy_dense") is not None and f.get("accuracy_compact") is not None]  # fmt: skip
    if not pairs:
        return "-"
    dense, small = (float(np.mean(values)) for values in zip(*pairs, strict=True))
    return f"{dense:.3f} / {small:.3f} ({small - dense:+.3f}), mean over {len(pairs)} (mode, seed) pairs"


def forced_cells(reports: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The subnetworks forced to the unit budget (`forced`) as the comparison table's cells, by row name: "-"
    where no report records one (a bank built before the forced check)."""
    forced = _forced(reports)
    head = f"forced to {_keep(forced):.0%} of units"
    if not forced:
        names = ("parameters / multiply-adds vs dense", "test digits predicted otherwise than the dense hard-gated "
                 "model", "test accuracy dense / compact (difference)")  # fmt: skip
        return {f"{head}: {name}": "-" for name in names}
    missing = f" ({len(reports) - len(forced)} modes not measured)" if len(forced) < len(reports) else ""
    return {
        f"{head}: parameters / multiply-adds vs dense":
            f"{np.mean([f['parameter_ratio'] for f in forced]):.3f} / {np.mean([f['mac_ratio'] for f in forced]):.3f}",
        f"{head}: test digits predicted otherwise than the dense hard-gated model":
            f"{sum(f['differ'] for f in forced):,} of {sum(f['digits'] for f in forced):,}{missing}",
        f"{head}: test accuracy dense / compact (difference)": _forced_accuracy(forced),
    }  # fmt: skip


def forced_summary(reports: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: what forcing every mode's subnetwork to the unit budget costs (or that no bank measured it)."""
    forced = _forced(reports)
    head = f"Forced to {_keep(forced):.0%} of units"
    if not forced:
        return f"{head}: - (not measured when the bank was built; `taugate bank STUDY` rebuilds it and measures it)."
    widths = {(tuple(f["kept"]), tuple(f["units"])) for f in forced}
    if len(widths) == 1:  # the same widths everywhere (one architecture): say them
        ((kept_widths, units),) = widths
        kept = ", ".join(f"{k}/{n}" for k, n in zip(kept_widths, units, strict=True))
    else:
        kept = "; ".join(mean_range([f["kept"][i] / f["units"][i] for f in forced], 0, 100, "%")
                         for i in range(len(forced[0]["kept"])))  # fmt: skip
    return (
        f"{head} (units kept per layer {kept}; {_rule(forced)}): "
        f"{sum(f['differ'] for f in forced):,} of {sum(f['digits'] for f in forced):,} test digits predicted otherwise "
        f"than the dense hard-gated model; test accuracy dense / compact {_forced_accuracy(forced)}; parameters / "
        f"multiply-adds vs dense {np.mean([f['parameter_ratio'] for f in forced]):.3f} / "
        f"{np.mean([f['mac_ratio'] for f in forced]):.3f}."
    )


def bank_table(banks: Sequence[Mapping[str, Any]], label: str = "", latency: bool = False) -> Table | None:
    """Each bank's compact per-mode subnetworks beside the dense hard-gated model (None: no bank); `latency`
    adds the compact / dense latency ratios at batch 1 and 256 the bank recorded."""
    if not banks:
        return None
    table = Table(
        "modes-bank-table" + id_suffix(label),
        ["foundation (seed)", "mode", "units kept per layer", "parameters compact / dense",
         "multiply-adds ratio", "test digits predicted otherwise", "test acc dense / compact"]
        + (["latency ratio, batch 1 / 256"] if latency else [])
        + [f"forced to {_keep(_forced(compact_reports(banks))):.0%} of units: test digits predicted otherwise",
           "forced: test acc dense / compact"],
    )  # fmt: skip
    for bank in banks:
        for mode in bank["modes"]:
            report = mode.get("compact")
            if not report:
                where = f"{bank['foundation_id']} ({bank['seed']})"
                table.add([where, mode["name"], "not compacted", "-", "-", "-", "-"] + (["-"] if latency else [])
                          + ["-", "-"])  # fmt: skip
                continue
            kept = ", ".join(f"{k}/{n}" for k, n in zip(report["kept"], report["units"], strict=True))
            table.add([
                f"{bank['foundation_id']} ({bank['seed']})", mode["name"], kept,
                f"{report['compact']['parameters']:,} / {report['dense']['parameters']:,}",
                f"{report['mac_ratio']:.3f}",
                f"{report['differ']} of {report['digits']} "
                f"({report['differ_dropped_fired']} where a dropped unit fired)",
                f"{report['accuracy_dense']:.3f} / {report['accuracy_compact']:.3f}",
            ] + ([_latency_cell(report)] if latency else []) + _forced_row(report))  # fmt: skip
    return table


def _forced_row(report: Mapping[str, Any]) -> list[str]:
    """The bank table's forced cells of one mode ("-" without a `forced` entry)."""
    forced = report.get("forced")
    if not isinstance(forced, Mapping):
        return ["-", "-"]
    accuracy = "-"
    if forced.get("accuracy_dense") is not None and forced.get("accuracy_compact") is not None:
        accuracy = f"{forced['accuracy_dense']:.3f} / {forced['accuracy_compact']:.3f}"
    return [f"{forced['differ']} of {forced['digits']}", accuracy]


def _latency_cell(report: Mapping[str, Any]) -> str:
    reading = report.get("latency")
    if not isinstance(reading, Mapping) or not {"batch_1", "batch_256"} <= set(reading):
        return "-"
    return f"x{reading['batch_1']['ratio']:.2f} / x{reading['batch_256']['ratio']:.2f}"


def id_suffix(label: str) -> str:
    return f"-{label}" if label else ""
