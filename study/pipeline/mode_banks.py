"""Mode banks from a finished study folder: per foundation (and budget), its gated adapters in one bank.

A study with several seeds has several foundations, and a bank holds the modes of one foundation
(its tensors are only meaningful on that base). So `build_banks` writes one bank per foundation, each
in `<out>/<foundation id>/`, and `build_bank` writes a single bank into `<out>` itself, which needs a
study with one foundation or the `foundation` chosen (its id).

A study that trains the modes at several budgets (`analysis.table.load.BUDGET_FIELDS`: TauGate dense and
at a sparsity target) gets one bank per foundation and budget, `<out>/<foundation id>-<budget label>/`
(labels such as "dense" and "target0.4-taulr25", `analysis.table.load.budget_labels`); `budget` (a label)
builds only that budget's. A study with one budget keeps `<out>/<foundation id>/`.

Per foundation, method and target angle the bank holds one trial: the finished one (`status: ok`) with
the best hard-gated validation accuracy on its target, `val_<acc>_hard` (`val_acc_<angle>` for gain_only,
which has no gate, so its hard network is its soft one): validation only, never test. Ties go to the
first trial key. The choice (metric, value, every candidate's value) is recorded in the mode's
`selection` and in the bank's notes.

With `compact=True` each mode also gets its compact subnetwork (`trainables.bank.compact.compact`): units are
dropped on the mode's training digits and the compact net is checked on its test digits; its report also
holds a short latency reading against the trial's own hard-gated model at batch 1 and 256 (`latency`), and
`forced`: the same check for the subnetwork forced to `FORCED_KEEP` of each hidden layer's units (the ones
firing on the most training digits, `compact(..., keep=FORCED_KEEP)`), a measurement only (its weights are not
saved): what reaching that unit budget costs in test digits predicted otherwise and in accuracy.
Everything is read and computed before anything is written: a refused study leaves no folder behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from analysis.table.load import (
    Budget,
    LedgerTrial,
    budget_labels,
    budget_of,
    choose_per_mode,
    describe_budget,
    ledger_trials,
    ordered_budgets,
)
from trainables import registry
from trainables.bank.compact import CompactMLP, check_compact, measure_latency
from trainables.bank.compact import compact as compact_at
from trainables.bank.disk import save_bank
from trainables.bank.layout import COMPACT_INDEX, BankError
from trainables.bank.store import BankMode, assemble, mode_name, read_foundation, read_mode
from trainables.config import parse_config
from trainables.data import load_modes
from trainables.formats.checkpoints import load_adapter
from trainables.methods.taugate.gate import set_hard

TRIALS_DIR, CONFIG_FILE, METRICS_FILE, FOUNDATIONS_DIR, ADAPTER_DIR = (
    "trials", "config.json", "metrics.json", "foundations", "adapter",
)  # fmt: skip
BANK_DIR = "bank"  # `taugate bank STUDY` writes STUDY/bank/<foundation id>/ (several budgets: <id>-<label>/)
FORCED_KEEP = 0.5  # the unit budget each mode's compact report also measures (`forced`: a fraction of each layer)
FORCED_RULE = (
    "per hidden layer the ceil({keep:g} x width) units whose hard-gated activation is non-zero on the most of the "
    "mode's training digits (ties: the lower unit index); the others are dropped even where they fire"
)


def bank_folder_name(foundation_id: str, label: str = "") -> str:
    """A bank's folder under the banks folder: the foundation's id, then its budget's label when the study
    has several budgets."""
    return f"{foundation_id}-{label}" if label else foundation_id


@dataclass
class BuiltBank:
    """What `build_banks` wrote for one foundation."""

    folder: Path
    foundation_id: str
    seed: int
    modes: list[str]
    trials: dict[str, str]  # mode name -> trial key
    selections: dict[str, dict[str, Any]]  # mode name -> {metric, value, candidates}: how its trial was chosen
    compact: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode name -> CompactReport.to_dict()
    notes: list[str] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)  # the banked trials' `BUDGET_FIELDS` values
    label: str = ""  # the budget's label ("" when the study has one budget)


def _finished_trials(study_dir: Path, methods: tuple[str, ...], notes: list[str]) -> list[LedgerTrial]:
    trials_dir = study_dir / TRIALS_DIR
    if not study_dir.is_dir():
        raise BankError(f"{study_dir}: no such study folder")
    if not trials_dir.is_dir():
        raise BankError(f"{study_dir}: not a study folder (no {TRIALS_DIR}/ folder)")
    found, unreadable = ledger_trials(study_dir)
    notes.extend(unreadable)
    kept = []
    for trial in found:
        if trial.config.method not in methods:
            continue
        if trial.metrics.get("status") != "ok":
            where = f"foundation {trial.config.foundation_id()} (seed {trial.config.seed})"
            notes.append(f"{where}: trial {trial.key} skipped, status {trial.metrics.get('status')!r}")
            continue
        kept.append(trial)
    return kept


def _choose(
    trials: list[LedgerTrial], where: str, notes: list[str], labels: dict[Budget, str]
) -> list[tuple[LedgerTrial, dict[str, Any]]]:
    """Per (budget, method, target angle), the trial chosen on validation (`analysis.table.load.choose_per_mode`)
    and the record of the choice."""
    chosen = []
    for choice in choose_per_mode(trials):
        name = mode_name(choice.method, choice.angle)
        where_budget = where + (f", budget {labels[choice.budget]}" if labels.get(choice.budget) else "")
        for key in choice.skipped:
            notes.append(f"{where_budget}: trial {key} skipped for {name}, no {choice.metric}")
        if choice.trial is None:
            continue
        selection = {"metric": choice.metric, "value": choice.value, "candidates": choice.candidates}
        notes.append(f"{where_budget}: {name} is trial {choice.trial.key} ({choice.metric} = {choice.value:.4f}, "
                     f"best of {len(choice.candidates)})")  # fmt: skip
        chosen.append((choice.trial, selection))
    return chosen


@dataclass
class _Plan:
    """One bank to build: a foundation's chosen trials at one budget."""

    foundation_id: str
    budget: Budget
    label: str
    description: str
    chosen: list  # [(trial, selection)] in bank order (the methods as given, then angle)

    @property
    def where(self) -> str:
        return self.foundation_id + (f" at budget {self.label}" if self.label else "")


def _plan(
    study_dir: Path, methods: tuple[str, ...], foundation: str | None, notes: list[str], budget: str | None = None
) -> list[_Plan]:
    """The banks to build, by seed, then budget (dense first)."""
    if not methods:
        raise BankError("methods: name at least one of " + ", ".join(registry.bank_methods()))
    if bad := [m for m in methods if m not in registry.bank_methods()]:
        raise BankError(f"method {bad[0]!r} has no gate to bank; a bank holds {', '.join(registry.bank_methods())}")
    trials = _finished_trials(study_dir, methods, notes)
    if not trials:
        raise BankError(
            f"{study_dir}: no finished trials of {', '.join(methods)} (a bank gathers gated adapters: "
            f"{', '.join(registry.bank_methods())})"
        )
    by_foundation: dict[str, list[LedgerTrial]] = {}
    for trial in trials:
        by_foundation.setdefault(trial.config.foundation_id(), []).append(trial)
    if foundation is not None and foundation not in by_foundation:
        raise BankError(f"foundation {foundation!r} has no finished trials of {', '.join(methods)}; foundations: "
                        + _describe(by_foundation))  # fmt: skip
    budgets = ordered_budgets(budget_of(t.config) for t in trials)
    labels = budget_labels(budgets)
    if budget is not None and budget not in labels.values():
        raise BankError(f"budget {budget!r} is not one of the study's: " + describe_budgets(budgets))
    plans = []
    for foundation_id, group in sorted(by_foundation.items(), key=lambda item: (item[1][0].config.seed, item[0])):
        if foundation is not None and foundation_id != foundation:
            continue
        where = f"foundation {foundation_id} (seed {group[0].config.seed})"
        by_budget: dict[Budget, list] = {}
        for trial, selection in _choose(group, where, notes, labels):
            by_budget.setdefault(budget_of(trial.config), []).append((trial, selection))
        for key in budgets:
            chosen = by_budget.get(key, [])
            if not chosen or (budget is not None and labels[key] != budget):
                continue
            chosen.sort(key=lambda c: (methods.index(c[0].config.method), c[0].config.target_angle))
            plans.append(_Plan(foundation_id, key, labels[key], describe_budget(key, budgets), chosen))
    if not plans:
        raise BankError(f"{study_dir}: no trial of {', '.join(methods)} has its selection metric; nothing to bank")
    return plans


def describe_budgets(budgets: list[Budget]) -> str:
    """ "label (fields), ..." for the study's budgets ("one budget" when there is one: it has no label)."""
    labels = budget_labels(budgets)
    if len(budgets) <= 1:
        return "the study has one budget (no label to choose)"
    return ", ".join(f"{labels[b]} ({describe_budget(b, budgets)})" for b in budgets)


def _describe(groups: dict[str, list]) -> str:
    """ "id (seed n), ..." for foundation id -> trials, or -> (trial, selection) pairs."""

    def seed(item: LedgerTrial | tuple) -> int:
        return (item[0] if isinstance(item, tuple) else item).config.seed

    return ", ".join(f"{fid} (seed {seed(items[0])})" for fid, items in sorted(groups.items()))


def _notes_of(plan: _Plan, notes: list[str]) -> list[str]:
    """The notes about this bank: the study's own, its foundation's, and of those naming a budget, its budget's."""

    def mine(note: str) -> bool:
        if not note.startswith("foundation "):
            return True
        head = note.split(": ", 1)[0]
        return plan.foundation_id in head and (", budget " not in head or head.endswith(f", budget {plan.label}"))

    return [note for note in notes if mine(note)]


def _prepare(study_dir: Path, plan: _Plan, compact: bool, notes: list[str]):
    """Read the adapters and compute the compact nets in memory: (bank, compacts, seed)."""
    foundation_id, chosen = plan.foundation_id, plan.chosen
    base = chosen[0][0].config
    foundation_file = study_dir / FOUNDATIONS_DIR / f"{foundation_id}.safetensors"
    if not foundation_file.is_file():
        raise BankError(f"{foundation_file}: file not found (the foundation of {len(chosen)} banked trials)")
    foundation = read_foundation(foundation_file, base.hidden)
    modes: list[BankMode] = []
    adapters: dict[str, Path] = {}
    for trial, selection in chosen:
        adapter = trial.folder / ADAPTER_DIR
        if not adapter.is_dir():
            raise BankError(f"{adapter}: adapter folder not found (trial {trial.key})")
        modes.append(
            read_mode(
                foundation,
                adapter,
                angle=trial.config.target_angle,
                foundation_id=trial.config.foundation_id(),
                trial=trial.key,
                metrics=trial.metrics,
                selection=selection,
            )  # fmt: skip
        )
        adapters[modes[-1].name] = adapter
    source = {"study": str(study_dir.resolve()), "seed": base.seed, "dataset": base.dataset,
              "notes": _notes_of(plan, notes)}  # fmt: skip
    if plan.label:  # several budgets: say which one this bank holds
        source |= {"budget_label": plan.label, "budget": dict(plan.budget), "budget_description": plan.description}
    bank = assemble(foundation_file, foundation_id, base.hidden, modes, source=source)
    compacts: dict[str, tuple[CompactMLP, dict[str, Any]]] = {}
    if compact:
        angles = sorted({m.angle for m in modes})
        data_config = parse_config(
            base.model_dump() | {"eval_angles": angles, "target_angle": angles[0], "device": "cpu", "download": False}
        )
        data = load_modes(data_config, torch.device("cpu"))
        for mode in modes:
            digits = data[mode.angle]
            model = bank.model(mode.name)
            net = bank.compact(mode.name, digits.train_x)
            report = check_compact(model, net, digits.test_x, digits.test_y).to_dict()
            # the trial's own hard-gated network, as inference runs one mode (the bank's gather is not timed)
            own = load_adapter(foundation, adapters[mode.name]).eval()
            set_hard(own, True)
            report["latency"] = measure_latency(own, net, digits.test_x)
            report["forced"] = forced_report(model, digits.train_x, digits.test_x, digits.test_y)
            compacts[mode.name] = (net, report)
    return bank, compacts, base.seed


def forced_report(
    model: Any, train_x: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, keep: float = FORCED_KEEP
) -> dict[str, Any]:
    """The check of the mode's subnetwork forced to `keep` of each hidden layer's units (`FORCED_RULE`):
    `CompactReport.to_dict()` plus `keep` and `rule`. Not saved as a network."""
    net = compact_at(model, train_x, keep=keep)
    return check_compact(model, net, test_x, test_y).to_dict() | {"keep": keep, "rule": FORCED_RULE.format(keep=keep)}


def build_banks(
    study_dir: Path, out_dir: Path | None = None, methods: tuple[str, ...] = ("taugate",),
    foundation: str | None = None, compact: bool = True, budget: str | None = None,
) -> list[BuiltBank]:  # fmt: skip
    """One bank per foundation of the study's gated trials, each in `<out_dir>/<foundation id>/`
    (default `out_dir`: `<study>/bank`); with several budgets one per foundation and budget, in
    `<out_dir>/<foundation id>-<budget label>/`. `foundation` (an id) builds only that foundation's,
    `budget` (a label) only that budget's. `BankError` for a missing or bad folder, no finished trials of
    `methods`, a non-gate method, an unknown foundation or budget (naming the study's), a missing foundation
    file or a damaged adapter; nothing is written then."""
    study_dir = Path(study_dir)
    out_dir = Path(out_dir) if out_dir is not None else study_dir / BANK_DIR
    notes: list[str] = []
    plans = _plan(study_dir, tuple(methods), foundation, notes, budget)
    prepared = [(plan, _prepare(study_dir, plan, compact, notes)) for plan in plans]
    built = []
    for plan, (bank, compacts, seed) in prepared:
        folder = save_bank(bank, out_dir / bank_folder_name(plan.foundation_id, plan.label), compacts)
        selections = {m.name: m.selection for m in bank.modes}
        reports = {name: report for name, (_, report) in compacts.items()}
        trials = {m.name: m.trial for m in bank.modes}
        notes_here = bank.source["notes"]
        built.append(BuiltBank(folder, plan.foundation_id, seed, bank.names, trials, selections, reports, notes_here,
                               dict(plan.budget), plan.label))  # fmt: skip
    return built


def build_bank(
    study_dir: Path, out_dir: Path, methods: tuple[str, ...] = ("taugate",), foundation: str | None = None,
    compact: bool = True, budget: str | None = None,
) -> Path:  # fmt: skip
    """A single bank written into `out_dir` itself: the study's one foundation, or the `foundation`
    chosen (its id), at the study's one budget or the `budget` chosen (its label). Gated trials on several
    foundations or at several budgets and no choice is a `BankError` listing them (`build_banks` builds one
    bank per foundation and budget)."""
    study_dir, out_dir = Path(study_dir), Path(out_dir)
    notes: list[str] = []
    plans = _plan(study_dir, tuple(methods), foundation, notes, budget)
    foundations = {plan.foundation_id: plan.chosen for plan in plans}
    if len(foundations) > 1:
        raise BankError(
            f"{study_dir}: trials of {', '.join(methods)} on {len(foundations)} foundations "
            f"({_describe(foundations)}); a bank holds one foundation's modes: choose one (foundation=ID, "
            "`taugate bank --foundation ID`) or build one bank per foundation (build_banks)"
        )
    if len(plans) > 1:
        budgets = [plan.budget for plan in plans]
        raise BankError(
            f"{study_dir}: trials of {', '.join(methods)} at {len(plans)} budgets ({describe_budgets(budgets)}); a "
            "bank holds one budget's modes: choose one (budget=LABEL, `taugate bank --budget LABEL`) or build one "
            "bank per budget (build_banks)"
        )
    (plan,) = plans
    bank, compacts, _ = _prepare(study_dir, plan, compact, notes)
    return save_bank(bank, out_dir, compacts)


def bank_summaries(study_dir: Path) -> list[dict[str, Any]]:
    """What the study report shows of the banks under `<study>/bank/`: per bank its foundation, seed,
    folder, budget (label "" when the study has one) and modes, each with its compact subnetwork's report
    (None when it was not compacted).
    Read from the bank's own JSON files only; a bank that cannot be read is left out with a note."""
    banks = []
    for index in sorted(Path(study_dir, BANK_DIR).glob("*/bank.json")):
        try:
            bank = json.loads(index.read_text())
            modes = []
            for mode in bank["modes"]:
                report = None
                if mode.get("compact"):
                    report = json.loads((index.parent / mode["compact"] / COMPACT_INDEX).read_text())["report"]
                modes.append({"name": mode["name"], "angle": mode["angle"], "method": mode["method"],
                              "compact": report})  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            continue  # the report describes what it can read; `taugate bank` rebuilds a damaged bank
        source = bank.get("source") or {}
        banks.append({"folder": str(index.parent), "foundation_id": bank["foundation"]["id"],
                      "seed": source.get("seed"), "modes": modes, "budget_label": source.get("budget_label", ""),
                      "budget": source.get("budget"),
                      "budget_description": source.get("budget_description", "")})  # fmt: skip
    return banks
