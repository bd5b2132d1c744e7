"""Adam, the optimiser of every trial: torch.optim.Adam's arithmetic without torch.optim.

torch.optim's optimisers import torch._dynamo the first time one is built (their methods are
wrapped to keep the compiler out), which costs a fresh process 1.6 s on the machines this
study runs on: more than six whole trials, paid again by every new Ray worker. This class
performs the elementwise operations of torch's single-tensor Adam (its CPU path, default betas
and eps, no weight decay) in the same order, so it follows torch.optim.Adam bit for bit
(tests/trainables/engine/test_optim.py holds it to that). It also takes stacked tensors with a learning rate
per member, which fused trials (trainables.engine.fused) need.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


class Adam:
    """Adam over `params`. `lr` is one rate, or one per member when every tensor is stacked
    with a leading member dimension (member k's slice then follows a lone Adam with lr[k]).
    `multipliers` scales the rate per tensor: one factor per member for each of `params`
    (TauGate's tau may learn faster than its gamma); a factor of 1 changes no bit."""

    def __init__(
        self, params: Sequence[torch.Tensor], lr: float | Sequence[float],
        multipliers: Sequence[Sequence[float]] | None = None,
    ):  # fmt: skip
        self.params = list(params)
        lrs = [float(lr)] if isinstance(lr, int | float) else [float(value) for value in lr]
        if not lrs:
            raise ValueError("Adam: at least one learning rate")
        factors = multipliers if multipliers is not None else [[1.0] * len(lrs)] * len(self.params)
        if len(factors) != len(self.params) or any(len(f) != len(lrs) for f in factors):
            raise ValueError("Adam: one multiplier per learning rate for each tensor")
        # per tensor: its members' rates (lr x 1.0 is lr exactly, so no multiplier keeps the rates as given)
        self.rates = [[rate * float(f) for rate, f in zip(lrs, factor, strict=True)] for factor in factors]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = BETAS
        self.steps += 1
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = (1 - beta2**self.steps) ** 0.5
        for param, exp_avg, exp_avg_sq, rates in zip(self.params, self.exp_avg, self.exp_avg_sq, self.rates,
                                                     strict=True):  # fmt: skip
            grad = param.grad
            if grad is None:
                continue  # as torch.optim skips a parameter without a gradient
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(EPS)
            if len(set(rates)) == 1:
                param.addcdiv_(exp_avg, denom, value=-(rates[0] / bias_correction1))
            else:  # -lr_k / bc1, rounded to the tensor's dtype as addcdiv_ rounds its scalar; addcdiv_
                # computes param + value * t1 / t2, in that order
                scales = torch.tensor([-(rate / bias_correction1) for rate in rates], dtype=param.dtype,
                                      device=param.device)  # fmt: skip
                param.add_(scales.view(-1, *([1] * (param.dim() - 1))) * exp_avg / denom)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None
