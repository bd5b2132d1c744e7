"""The paper's TauGate claims decided where TauGate is as sparse as the paper says (ratio 0.28),
and at the knee of its sparsity front.

The paper reports TauGate at a high-activation ratio of 0.28. Our TauGate representative elsewhere
is chosen on validation accuracy, which prefers open gates; so here TauGate is pinned to the
configuration whose *validation* ratio (seed mean) is closest to 0.28, within ±0.05
(`analysis.reproduction.fidelity.choose_by_ratio`, on a view of the statistics without any column
derived from a test metric: neither accuracy nor test metrics can sway it), and, separately, to the
knee (`analysis.aggregate.sparsity_front`, chosen on validation). At each, the claims that compare
TauGate with another method are judged by the strict rules of `analysis.reproduction.verdicts`
(the other methods keep their representatives, chosen on validation accuracy). A claim *holds*
at a point when its verdict there is "reproduced"; "direction only" does not hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.paper.reference import Reference
from analysis.reproduction.fidelity import RATIO_TOLERANCE, RatioChoice, as_reference, choose_by_ratio
from analysis.reproduction.verdicts import REPRODUCED, Verdict, check_claims, claims
from analysis.table.protocols import validation_view
from analysis.table.study_modes import StudyModes, study_modes

METHOD = "taugate"
PAPER_RATIO = 0.28
HOLDS_RULE = 'a claim holds at a point when its strict verdict there is "reproduced" ("direction only" does not)'


def choose_paper_sparsity(
    stats: pd.DataFrame,
    protocol: Mapping[str, Any] | None = None,
    target: float = PAPER_RATIO,
    tolerance: float = RATIO_TOLERANCE,
) -> RatioChoice:
    """The TauGate configuration whose validation ratio is closest to `target` (ties: the smaller
    lambda), within the study's `protocol`; TauGate's own budget axes are configuration, not
    protocol, so every budget competes. It is shown only config columns and validation metrics."""
    return choose_by_ratio(validation_view(stats), METHOD, target=target, protocol=protocol, tolerance=tolerance)


def taugate_claims(baseline: str, target: float, original: float) -> list[str]:
    """The paper's claims that compare TauGate with another method (the ones a sparser TauGate can change)."""
    return [claim for claim, methods, _ in claims(baseline, target, original) if METHOD in methods and len(methods) > 1]


def verdicts_at(
    stats: pd.DataFrame,
    config_id: int,
    reference: Reference | str | Path = "paper",
    held_out: Sequence[str] = (),
    protocol: Mapping[str, Any] | None = None,
    modes: StudyModes | None = None,
) -> dict[str, Verdict]:
    """`taugate_claims`' verdicts with TauGate represented by configuration `config_id`, by claim."""
    reference = as_reference(reference)
    modes = modes or study_modes(stats)
    pinned = stats[(stats["method"] != METHOD) | (stats["config_id"] == config_id)]
    wanted = taugate_claims(reference.baseline, modes.target, modes.retention)
    verdicts = check_claims(pinned, reference, held_out, protocol=protocol, target=modes.target,
                            original=modes.retention)  # fmt: skip
    return {v.claim: v for v in verdicts if v.claim in wanted}


@dataclass(frozen=True)
class SparseClaim:
    """One claim's verdict at the paper's sparsity and at the knee (None: that point does not exist)."""

    claim: str
    at_paper: Verdict | None
    at_knee: Verdict | None

    @property
    def sentence(self) -> str:
        """ "holds at the paper's sparsity and at the knee" ... "holds at neither", naming a missing point."""
        paper, knee = (v is not None and v.verdict == REPRODUCED for v in (self.at_paper, self.at_knee))
        where = {(True, True): "at the paper's sparsity and at the knee", (True, False): "at the paper's sparsity",
                 (False, True): "at the knee", (False, False): "at neither"}[(paper, knee)]  # fmt: skip
        points = (("the paper's sparsity", self.at_paper), ("the knee", self.at_knee))
        missing = " or ".join(name for name, v in points if v is None)
        return f"holds {where}" + (f" (not judged at {missing}: no such configuration)" if missing else "")


@dataclass(frozen=True)
class SparseClaims:
    """The configuration chosen at the paper's ratio, the knee's row, and each claim decided at both."""

    choice: RatioChoice
    knee: pd.Series | None
    claims: list[SparseClaim]

    @property
    def choice_text(self) -> str:
        """Which configuration stands at the paper's sparsity, by which rule, or that none does."""
        c = self.choice
        rule = f"validation ratio (seed mean) closest to {c.target:g}, within ±{c.tolerance:g}, read alone"
        if c.configuration is None:
            return f"no TauGate configuration has a validation ratio ({rule})"
        found = f"{c.configuration['label']}: validation ratio {c.ratio:.3f} (|gap| {c.gap:.3f})"
        if not c.within:
            closest = f"the closest is {found} ({rule})"
            return f"no TauGate configuration is within ±{c.tolerance:g} of {c.target:g}; {closest}"
        return f"{found} ({rule})"


def decide_sparse_claims(
    stats: pd.DataFrame,
    knee: pd.Series | None,
    reference: Reference | str | Path = "paper",
    held_out: Sequence[str] = (),
    protocol: Mapping[str, Any] | None = None,
    modes: StudyModes | None = None,
    target: float = PAPER_RATIO,
    tolerance: float = RATIO_TOLERANCE,
) -> SparseClaims:
    """`taugate_claims` decided at the configuration `choose_paper_sparsity` picks (only when it is
    within `tolerance`) and at `knee` (a row of `analysis.aggregate.sparsity_front.SparsityFront`)."""
    reference = as_reference(reference)
    modes = modes or study_modes(stats)
    choice = choose_paper_sparsity(stats, protocol, target, tolerance)
    at: dict[str, dict[str, Verdict]] = {"paper": {}, "knee": {}}
    if choice.configuration is not None and choice.within:
        at["paper"] = verdicts_at(stats, int(choice.configuration["config_id"]), reference, held_out, protocol, modes)
    if knee is not None:
        at["knee"] = verdicts_at(stats, int(knee["config_id"]), reference, held_out, protocol, modes)
    names = taugate_claims(reference.baseline, modes.target, modes.retention)
    decided = [SparseClaim(name, at["paper"].get(name), at["knee"].get(name)) for name in names]
    return SparseClaims(choice, knee, decided)
