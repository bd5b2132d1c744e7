"""Two scales for a gap between our number and a reference's, both from each table's seed stds.

- The *spread of a difference of single runs*, sqrt(σ_ours² + σ_ref²): how far apart one run of ours
  and one run of the reference's typically land. Twice it is the verdicts' **equivalence margin**
  (`analysis.reproduction.verdicts`): a gap inside it is one that single runs of two faithful
  reproductions would show. It does not shrink with more seeds, so it is not a test.
- The *standard error of a difference of two means*, sqrt(σ_ours²/n_ours + σ_ref²/n_ref): how far the
  two tables' *means* typically land apart when both measure the same thing. It shrinks with n.

The paper gives no n ("across several seeds"): `ASSUMED_REFERENCE_N` stands in for it, and every
label that uses it says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

ASSUMED_REFERENCE_N = 5  # the paper's seeds per method: not given, assumed (DESIGN asks for 5)
MARGIN_FACTOR = 2.0
MARGIN_NAME = "equivalence margin"
MARGIN_FORMULA = "2·sqrt(σ_ours² + σ_ref²)"
MARGIN_MEANING = "2 × the spread of a difference of single runs, σ from each table's seed stds"
SE_FORMULA = "sqrt(σ_ours²/n_ours + σ_ref²/n_ref)"
SE_MEANING = "standard error of the difference of the two tables' means"


def reference_n_note(n_ref: int = ASSUMED_REFERENCE_N) -> str:
    """What the reference's n is, stated as the assumption it is."""
    return f"n_ref = {n_ref} assumed: the paper gives no n, only 'several seeds'"


def single_run_spread(*stds: float) -> float:
    """sqrt(sum of σ²): the spread of a sum or difference of single runs with these seed stds."""
    return math.hypot(*stds)


def standard_error(terms: Iterable[tuple[float, float]]) -> float:
    """sqrt(sum of σ²/n) over (σ, n) pairs: the standard error of a sum or difference of means.
    NaN when any n is below 1 or any σ is not finite."""
    total = 0.0
    for std, n in terms:
        if not n or n < 1 or not math.isfinite(std):
            return math.nan
        total += std * std / n
    return math.sqrt(total)
