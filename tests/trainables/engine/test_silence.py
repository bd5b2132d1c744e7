"""Silencing hidden units: exactly the chosen units output 0, and the model comes back intact."""

from __future__ import annotations

import pytest
import torch

from trainables.config import parse_config
from trainables.engine.silence import hard_accuracy, silenced, silenced_accuracies
from trainables.methods import taugate
from trainables.methods.taugate.gate import GatedReLU, hard_gates
from trainables.model import MLP


def identity_mlp(width: int = 4, layers: int = 2) -> MLP:
    """Every Linear is the identity without bias: on inputs >= 0 each unit passes its input on."""
    model = MLP(in_features=width, hidden=[width] * layers, classes=width)
    with torch.no_grad():
        for linear in model.layers:
            linear.weight.copy_(torch.eye(width))
            linear.bias.zero_()
    return model


def gated(model: MLP) -> MLP:
    taugate.install(model, parse_config({"method": "taugate"}))  # tau < 0: on inputs > 0 every hard gate is open
    return model


def snapshot(model: MLP) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def same_tensors(model: MLP, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


X = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])


@pytest.mark.parametrize("build", [identity_mlp, lambda: gated(identity_mlp())], ids=["relu", "gated_relu"])
def test_silenced_zeroes_exactly_the_chosen_units_and_restores_the_model(build):
    model = build()
    with hard_gates(model):
        expected_intact = model(X)
    assert torch.equal(expected_intact, X)
    before = snapshot(model)

    with silenced(model, {0: [1], 1: [3]}), hard_gates(model):
        logits, pre_activations = model.trace(X)
    # layer 0's unit 1 is off, so layer 1 sees 0 there; layer 1's unit 3 still receives its input
    # (its pre-activation is intact) but outputs nothing
    assert torch.equal(pre_activations[1], torch.tensor([[1.0, 0, 3, 4], [5, 0, 7, 8]]))
    assert torch.equal(logits, torch.tensor([[1.0, 0, 3, 0], [5, 0, 7, 0]]))

    with hard_gates(model):
        assert torch.equal(model(X), expected_intact)
    assert same_tensors(model, before)
    assert all(not activation._forward_hooks for activation in model.activations)


def test_silenced_restores_the_model_when_the_body_raises():
    model = gated(identity_mlp())
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="inside"), silenced(model, {0: [0, 2]}):
        assert model(X)[:, 0].eq(0).all()
        raise RuntimeError("inside the block")
    assert all(not activation._forward_hooks for activation in model.activations)
    assert same_tensors(model, before)
    with hard_gates(model):
        assert torch.equal(model(X), X)


def test_silencing_nothing_changes_nothing_and_duplicates_count_once():
    model = identity_mlp()
    with silenced(model, {}):
        assert torch.equal(model(X), X)
    with silenced(model, {0: [2, 2], 1: []}):
        assert torch.equal(model(X), torch.tensor([[1.0, 2, 0, 4], [5, 6, 0, 8]]))


@pytest.mark.parametrize("units", [{2: [0]}, {-1: [0]}, {0: [4]}, {1: [-1]}])
def test_units_outside_the_model_are_refused_before_anything_changes(units):
    model = identity_mlp()
    with pytest.raises(ValueError), silenced(model, units):
        pass
    assert all(not activation._forward_hooks for activation in model.activations)


def test_silencing_keeps_gradients_flowing_through_the_other_units():
    model = identity_mlp()
    x = X.clone().requires_grad_(True)
    with silenced(model, {0: [0]}):
        model(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[0.0, 1, 1, 1], [0, 1, 1, 1]]))


def two_unit_gated_network() -> MLP:
    """Identity layers and tau = (0.45, -0.4): on x = (0.5, 0.49) the hard gate keeps unit 0 fully
    (class 0 wins), while the soft gate damps unit 0 to 0.5 * sigmoid(0.5) = 0.31 (class 1 wins)."""
    model = gated(identity_mlp(width=2, layers=1))
    with torch.no_grad():
        model.activations[0].tau.copy_(torch.tensor([0.45, -0.4]))
    return model


def test_hard_accuracy_uses_hard_gates_and_restores_each_gates_setting():
    model = two_unit_gated_network()
    x, y = torch.tensor([[0.5, 0.49]]), torch.tensor([0])
    with torch.no_grad():
        assert model(x).argmax(1).item() == 1  # soft gates: wrong
    assert hard_accuracy(model, x, y) == 1.0
    assert model.activations[0].hard is False

    model.activations[0].hard = True  # a gate already hard stays hard afterwards
    assert hard_accuracy(model, x, torch.tensor([1])) == 0.0
    assert model.activations[0].hard is True


def test_hard_accuracy_counts_correct_predictions_under_silencing():
    model = identity_mlp(width=4, layers=1)
    y = torch.tensor([3, 3])
    assert hard_accuracy(model, X, y) == 1.0
    with silenced(model, {0: [3]}):
        assert hard_accuracy(model, X, y) == 0.0  # class 2 now wins on both digits
    assert isinstance(model.activations[0], torch.nn.ReLU) and not isinstance(model.activations[0], GatedReLU)


def test_batched_silencings_give_the_accuracies_of_one_silencing_at_a_time():
    torch.manual_seed(0)
    model = MLP(in_features=20, hidden=[12, 8], classes=3)
    taugate.install(model, parse_config({"method": "taugate", "hidden": [12, 8]}))
    for gate in model.activations:
        gate.tau.data.uniform_(-0.3, 0.3)  # some gates shut: the hard gate matters
        gate.gamma.data.uniform_(0.5, 1.5)
    x, y = torch.randn(300, 20), torch.randint(0, 3, (300,))
    silencings = [{0: [1, 2, 3]}, {1: [0, 7]}, {0: list(range(12))}, {0: [5], 1: [1, 2, 3, 4]}, {}]
    before = snapshot(model)
    batched = silenced_accuracies(model, x, y, silencings)
    one_by_one = []
    for units in silencings:
        with silenced(model, units):
            one_by_one.append(hard_accuracy(model, x, y))
    assert batched == pytest.approx(one_by_one, abs=1e-9)
    assert len(set(batched)) > 2  # the silencings differ in effect: the comparison means something
    assert same_tensors(model, before) and not any(gate.hard for gate in model.activations)
    assert silenced_accuracies(model, x, y, []) == []
    with pytest.raises(ValueError, match="layer 0: units"):
        silenced_accuracies(model, x, y, [{0: [12]}])
