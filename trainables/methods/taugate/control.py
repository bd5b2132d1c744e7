"""TauGate's sparsity under control: lambda, the weight of the loss term lambda * mean(g), either fixed
(the penalty) or adapted during training toward a requested ratio (a constraint, by dual ascent).

A penalty says how much an open gate costs; a target says how many gates may stay open. With
`sparsity_target` r, training solves min loss subject to ratio <= r through its Lagrangian: after
every optimiser step lambda moves by `sparsity_dual_step * (ratio - r)`, never below 0, where ratio
is the batch's share of hard gates on (z > tau, the `high_activation_ratio` reading; a soft gate
above 0.5 is exactly that). Lambda grows while too many gates are open and shrinks once fewer are,
so one trial lands at the requested ratio instead of a sweep over lambda hoping to hit it.
`sparsity_weight` is lambda's starting value.

One `SparsityControl` serves a lone trial (one member) and a fused group (one lambda per member).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainables.methods.taugate.gate import mean_gate


def hard_ratio(soft: list[torch.Tensor], members: int) -> torch.Tensor:
    """Each member's share of gates on (z > tau, i.e. soft gate > 0.5) over its batch: [members]."""
    return torch.cat([(g > 0.5).reshape(members, -1) for g in soft], dim=1).to(soft[0].dtype).mean(1)


class SparsityControl:
    """Lambda per member: fixed, or (a member with a target) adapted after each step by PI-damped dual
    ascent: the integral `dual` += step * error (kept >= 0), lambda = max(0, dual + damping * error),
    error = batch ratio - target. The damping term answers at once when the ratio crosses the target,
    so Adam's momentum does not carry tau far past it while the integral unwinds (Stooke et al., 2020,
    "Responsive Safety in Reinforcement Learning by PID Lagrangian Methods")."""

    def __init__(
        self, weights: Sequence[float], targets: Sequence[float | None], steps: Sequence[float],
        damping: Sequence[float] | None = None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
    ):  # fmt: skip
        damping = list(damping) if damping is not None else [0.0] * len(weights)
        if not (len(weights) == len(targets) == len(steps) == len(damping)):
            raise ValueError("SparsityControl: one weight, target, step and damping per member")

        def tensor(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor([float(v) for v in values], dtype=dtype, device=device)

        self.members = len(weights)
        self.weight = tensor(weights)
        self.dual = tensor(weights)  # the integral: lambda's starting value is sparsity_weight
        self.target = tensor([0.0 if t is None else t for t in targets])
        # a member without a target moves by 0: its lambda stays what it was given
        self.adaptive = torch.tensor([t is not None for t in targets], device=device)
        self.step = tensor([0.0 if t is None else s for t, s in zip(targets, steps, strict=True)])
        self.damping = tensor([0.0 if t is None else d for t, d in zip(targets, damping, strict=True)])

    @classmethod
    def of(cls, configs: Sequence, device: torch.device | str, dtype: torch.dtype) -> SparsityControl | None:
        """The control of trial configs (one per member), or None when no member sets a target (a fixed
        lambda is the loss term as it always was: `fit` and `fit_fused` add it themselves)."""
        if not any(c.gated and c.sparsity_target is not None for c in configs):
            return None
        targets = [c.sparsity_target if c.gated else None for c in configs]
        return cls(
            [c.sparsity_weight if c.gated else 0.0 for c in configs], targets,
            [c.sparsity_dual_step for c in configs], [c.sparsity_dual_damping for c in configs], device, dtype,
        )  # fmt: skip

    def term(self, soft: list[torch.Tensor]) -> torch.Tensor:
        """Each member's lambda * mean(g) for the latest forward's soft gates: [members]. Lambda is
        a constant of the step (no gradient flows into it)."""
        return self.weight.clone() * mean_gate(soft, self.members)  # a copy: `update` changes it in place

    @torch.no_grad()
    def update(self, soft: list[torch.Tensor]) -> None:
        """One dual-ascent step of each targeted member's lambda from this batch's ratio of gates on."""
        error = hard_ratio([g.detach() for g in soft], self.members) - self.target
        self.dual.copy_(self.dual + self.step * error)
        adapted = self.dual + self.damping * error
        self.weight.copy_(torch.where(self.adaptive, adapted, self.weight))

    def state(self) -> list[float]:
        """What a checkpoint keeps: each member's integral, then each member's lambda."""
        return self.dual.tolist() + self.weight.tolist()

    def load_state(self, state: Sequence[float]) -> None:
        if len(state) != 2 * self.members:
            raise ValueError(f"checkpoint: sparsity control of {len(state) // 2} members, the trial has {self.members}")
        values = torch.tensor([float(v) for v in state], dtype=self.dual.dtype, device=self.dual.device)
        self.dual.copy_(values[: self.members])
        self.weight.copy_(values[self.members :])

    def weights(self) -> list[float]:
        return self.weight.tolist()
