"""The stacked model of a fused group: K adapted MLPs (one method and shape) as tensors with a leading
member dimension, trained as one (`trainables.engine.fused` runs the group).

Every product is formed as `nn.Linear` forms it, and its backward as autograd's `nn.Linear` backward
forms it, so a member's trajectory equals its lone one (see `_BatchedLinear`); a method's elementwise
math (the gate, LoRA's update) is its own function, called here with the stacked tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainables.methods.lora.lowrank import LoRALinear, low_rank_update
from trainables.methods.taugate.gate import GatedReLU, gated, step_or_sigmoid
from trainables.model import MLP, frozen_product


class _BatchedLinear(torch.autograd.Function):
    """`h @ weight.T + bias` per member (h: (K, B, in), weight: (K, out, in), bias: (K, out) or None).

    The backward forms each gradient with the same product, in the same operand layout, as
    autograd's `addmm`/`mm` backward forms it for `nn.Linear` (grad_W = grad.T @ h, grad_h =
    grad @ W), so a member's gradients are the ones it gets alone, bit for bit on our CPU
    (autograd's own `bmm` backward forms grad_W.T = h.T @ grad, which rounds differently).
    With `per_member`, grad_W is one `mm` per member: MKL's batched kernel rounds differently
    from `mm` for some shapes (10x128 from a batch of 64), which matters when the foundation's
    own weights train (`full`, whose errors grow fast); LoRA's small matrices use one `bmm`.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, per_member):
        ctx.save_for_backward(h, weight)
        ctx.per_member = per_member
        if bias is None:
            return torch.bmm(h, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        h, weight = ctx.saved_tensors
        need_h, need_weight, need_bias, _ = ctx.needs_input_grad
        grad_h = torch.bmm(grad, weight) if need_h else None
        grad_weight = None
        if need_weight and ctx.per_member:
            grad_weight = torch.stack([g.t().mm(x) for g, x in zip(grad, h, strict=True)])
        elif need_weight:
            grad_weight = torch.bmm(grad.transpose(1, 2), h)
        grad_bias = grad.sum(1) if need_bias else None
        return grad_h, grad_weight, grad_bias, None


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _BatchedLinear.apply(h, weight, bias, bias is not None and weight.requires_grad)


@dataclass
class _Layer:
    weight: torch.Tensor  # (K, out, in)
    bias: torch.Tensor  # (K, out)
    lora_a: torch.Tensor | None = None  # (K, r, in)
    lora_b: torch.Tensor | None = None  # (K, out, r)
    scaling: torch.Tensor | None = None  # (K, 1, 1)


@dataclass
class _Gate:
    gamma: torch.Tensor  # (K, 1, width)
    tau: torch.Tensor | None = None  # (K, 1, width); None for a gain-only gate
    sharpness: torch.Tensor | None = None  # (K, 1, 1)


class FusedMLP:
    """K adapted MLPs (same method and shape) as stacked tensors with a leading K dimension.

    `trainable` lists the stacked leaves the optimiser updates; `write_back()` copies them
    into the members' own models. After `cache_prefix(x)`, `forward` reads layer 1's frozen
    part from the cache instead of multiplying by W1.
    """

    def __init__(self, models: Sequence[MLP]):
        self.models = list(models)
        self.size = len(self.models)
        self.trainable: list[torch.Tensor] = []
        self._pairs: list[tuple[torch.Tensor, list[torch.Tensor]]] = []  # stacked leaf, member params
        self.layers = [self._layer(index) for index in range(len(self.models[0].layers))]
        self.gates = [self._gate(index) for index in range(len(self.models[0].activations))]
        self.prefix: torch.Tensor | None = None  # (G * n, width1): one block of rows per distinct foundation
        self.prefix_offset: torch.Tensor | None = None  # (K, 1): first row of each member's block
        self.prefix_has_bias = False

    def _stack(self, tensors: list[torch.Tensor], broadcast: bool = False) -> torch.Tensor:
        """(K, *shape), or with `broadcast` (K, 1, *shape): ready to broadcast over a batch, so a
        training step needs no view ops on it (a gate's tensors, used several times a step)."""
        stacked = torch.stack([t.detach() for t in tensors])
        if broadcast:
            stacked = stacked.unsqueeze(1).contiguous()
        learn = {bool(t.requires_grad) for t in tensors}
        if len(learn) != 1:
            raise ValueError("fused members must train the same tensors")
        if learn == {True}:
            stacked.requires_grad_(True)
            self.trainable.append(stacked)
            self._pairs.append((stacked, list(tensors)))
        return stacked

    def _layer(self, index: int) -> _Layer:
        members = [model.layers[index] for model in self.models]
        if all(isinstance(m, LoRALinear) for m in members):
            bases = [m.base for m in members]
            layer = _Layer(self._stack([b.weight for b in bases]), self._stack([b.bias for b in bases]))
            layer.lora_a = self._stack([m.lora_A for m in members])
            layer.lora_b = self._stack([m.lora_B for m in members])
            scaling = [m.scaling for m in members]
            layer.scaling = torch.tensor(scaling, dtype=layer.weight.dtype, device=layer.weight.device).view(-1, 1, 1)
            return layer
        if all(type(m) is nn.Linear for m in members):
            return _Layer(self._stack([m.weight for m in members]), self._stack([m.bias for m in members]))
        raise ValueError(f"layer {index}: fused trials support nn.Linear or LoRALinear layers, one kind per layer")

    def _gate(self, index: int) -> _Gate | None:
        members = [model.activations[index] for model in self.models]
        if all(type(m) is nn.ReLU for m in members):
            return None
        if not all(isinstance(m, GatedReLU) for m in members) or len({m.has_gate for m in members}) != 1:
            raise ValueError(f"activation {index}: fused trials support ReLU or GatedReLU, one kind per layer")
        gate = _Gate(gamma=self._stack([m.gamma for m in members], broadcast=True))
        if members[0].has_gate:
            gate.tau = self._stack([m.tau for m in members], broadcast=True)
            sharpness = [m.sharpness for m in members]
            gate.sharpness = torch.tensor(sharpness, dtype=gate.gamma.dtype, device=gate.gamma.device).view(-1, 1, 1)
        return gate

    @property
    def taus(self) -> list[torch.Tensor]:
        """The stacked thresholds the optimiser trains (their rate may differ: `tau_lr_multiplier`)."""
        return [g.tau for g in self.gates if g is not None and g.tau is not None and g.tau.requires_grad]

    @property
    def gated(self) -> bool:
        return any(g is not None and g.tau is not None for g in self.gates)

    def prefix_cacheable(self) -> bool:
        return not self.layers[0].weight.requires_grad

    @torch.no_grad()
    def cache_prefix(self, x: torch.Tensor) -> None:
        """Compute layer 1's frozen part on every row of `x` once per distinct foundation.

        With a frozen bias the cache holds `x @ W1.T + b1` formed as `nn.Linear` forms it (so a
        cached row equals the one computed on a batch, bit for bit on our CPU); with a trained
        bias (BitFit) it holds `x @ W1.T` and the bias is added per step (~1 ulp apart)."""
        if not self.prefix_cacheable():
            raise ValueError("the first layer's weight is trained, so its output cannot be cached")
        layer = self.layers[0]
        self.prefix_has_bias = not layer.bias.requires_grad
        blocks: list[torch.Tensor] = []  # one per distinct foundation: the cache hands equal tensors one output
        owner: list[int] = []
        for k in range(self.size):
            z = frozen_product(x, layer.weight[k], layer.bias[k] if self.prefix_has_bias else None)
            match = next((g for g, block in enumerate(blocks) if block is z), None)
            if match is None:
                blocks.append(z)
                match = len(blocks) - 1
            owner.append(match)
        self.prefix = torch.cat(blocks)
        self.prefix_offset = (torch.tensor(owner, device=x.device) * len(x)).view(-1, 1)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Each member's logits on its own batch `x[index[k]]` (K, B, classes), and the soft gates."""
        soft: list[torch.Tensor] = []
        size, batch = index.shape
        cached = self.prefix is not None
        inputs = None
        if not cached or self.layers[0].lora_a is not None:  # index_select: a plain gather, faster than x[index]
            inputs = x.index_select(0, index.reshape(-1)).view(size, batch, -1)
        for position, layer in enumerate(self.layers):
            if position == 0 and cached:
                z = self.prefix.index_select(0, (index + self.prefix_offset).reshape(-1)).view(size, batch, -1)
                if not self.prefix_has_bias:
                    z = z + layer.bias.unsqueeze(1)
            else:
                z = _linear(inputs, layer.weight, layer.bias)
            if layer.lora_a is not None:  # as LoRALinear, with the batched product
                z = z + low_rank_update(inputs, layer.lora_a, layer.lora_b, layer.scaling, _linear)
            if position == len(self.gates):
                return z, soft
            inputs = self._activate(self.gates[position], z, soft)
        raise AssertionError("an MLP has one more layer than activations")

    @staticmethod
    def _activate(gate: _Gate | None, z: torch.Tensor, soft: list[torch.Tensor]) -> torch.Tensor:
        # GatedReLU's gate on the stacked tensors
        if gate is None:
            return torch.relu(z)
        g = None if gate.tau is None else step_or_sigmoid(z, gate.tau, gate.sharpness, hard=False)
        if g is not None:
            soft.append(g)
        return gated(z, gate.gamma, g)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy every trained stacked tensor into the members' own models."""
        for stacked, params in self._pairs:
            for k, param in enumerate(params):
                param.copy_(stacked[k].view_as(param))
