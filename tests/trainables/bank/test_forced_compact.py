"""Compaction forced to a unit budget (`compact(model, train_x, keep=...)`): per hidden layer the units that fire
on the most training digits are kept, ceil(keep * width) of them, the others dropped even where they fire; the
check then counts what that costs against the dense hard-gated model. A constructed model whose units fire on
known numbers of digits: layer 1 is the identity on the inputs with tau 0 (unit i fires iff x_i > 0), layer 2
the identity on layer 1, so both layers' firing counts are the inputs' positive counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainables.bank.compact import check_compact, compact, compact_cost, firing_counts, kept_units
from trainables.bank.mixed import BankedMLP

WIDTH = 6
COUNTS = [5, 1, 4, 0, 3, 2]  # on how many of the training digits each unit fires (both layers)
TOP_HALF = [0, 2, 4]  # the ceil(0.5 * 6) = 3 units firing most often
GAMMA = 1.5


def constructed_model() -> BankedMLP:
    """6 inputs -> 6 -> 6 -> 3 classes. Class 0 reads unit 0, class 1 unit 2 and class 2 unit 1 (weight 10):
    unit 1 (fires on one training digit only, so dropped at keep 0.5) decides class 2 wherever it fires."""
    layers = nn.ModuleList([nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 3)])
    with torch.no_grad():
        for layer in layers[:2]:
            layer.weight.copy_(torch.eye(WIDTH))
            layer.bias.zero_()
        layers[2].weight.zero_()
        layers[2].weight[0, 0], layers[2].weight[1, 2], layers[2].weight[2, 1] = 1.0, 1.0, 10.0
        layers[2].bias.copy_(torch.tensor([0.1, 0.0, 0.0]))
    bank = SimpleNamespace(
        foundation=SimpleNamespace(layers=layers), names=["constructed"],
        tau=[torch.zeros(1, WIDTH), torch.zeros(1, WIDTH)], gamma=[torch.full((1, WIDTH), GAMMA)] * 2,
        sharpness=torch.tensor([10.0]), position=lambda name: 0, indices=lambda names: torch.zeros(len(names)),
    )  # fmt: skip
    return BankedMLP(bank).eval()


def training_digits() -> torch.Tensor:
    """Six digits: input i is +1 on the first COUNTS[i] of them and -1 on the rest."""
    rows = torch.arange(6).unsqueeze(1)
    return torch.where(rows < torch.tensor(COUNTS), 1.0, -1.0)


def test_counts_are_the_digits_each_unit_fires_on():
    counts = firing_counts(constructed_model(), training_digits())
    assert [c.tolist() for c in counts] == [COUNTS, COUNTS]


def test_keep_half_keeps_exactly_half_of_each_layer_the_most_often_firing_units():
    model, train_x = constructed_model(), training_digits()
    exact = compact(model, train_x)
    assert [k.tolist() for k in exact.kept] == [[0, 1, 2, 4, 5]] * 2  # every unit that ever fires
    forced = compact(model, train_x, keep=0.5)
    assert forced.widths == [WIDTH // 2, WIDTH // 2]
    assert [k.tolist() for k in forced.kept] == [TOP_HALF, TOP_HALF]  # units 1 and 5 fire yet are dropped
    # the fold is the exact compaction's: the kept rows and columns, gamma folded into the next layer
    dense = model.layers
    assert torch.equal(forced.layers[1].weight, dense[1].weight[TOP_HALF][:, TOP_HALF] * GAMMA)
    assert torch.equal(forced.layers[2].weight, dense[2].weight[:, TOP_HALF] * GAMMA)
    assert compact(model, train_x, keep=1.0).widths == [WIDTH, WIDTH]  # even the unit that never fires


def test_kept_units_take_the_ceiling_and_break_ties_by_unit_index():
    def kept(counts: list[int], keep: float | None) -> list[int]:
        return kept_units([torch.tensor(counts)], keep)[0].tolist()

    assert kept([3, 3, 1, 3], 0.5) == [0, 1]  # three units tie on 3: the lower indices
    assert kept([1, 3, 3, 3], 0.5) == [1, 2]
    assert kept([0, 0, 0, 0, 0], 0.5) == [0, 1, 2]  # ceil(2.5); never-firing units count as 0
    assert kept(list(range(10)), 0.3) == [7, 8, 9]  # ceil(0.3 * 10) is 3, not 4 (float rounding)
    assert kept([2, 0, 5, 1], 0.01) == [2]  # at least one unit
    assert kept([2, 0, 5, 1], None) == [0, 2, 3]  # exact: every unit that fires
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="keep must be a fraction in"):
            kept([1, 2], bad)


def test_forced_subnetwork_matches_the_dense_model_where_no_dropped_unit_fires():
    model, train_x = constructed_model(), training_digits()
    net = compact(model, train_x, keep=0.5)
    x = torch.rand(200, WIDTH, generator=torch.Generator().manual_seed(0)) * 3 - 1
    x[:, [1, 3, 5]] = -1.0  # the dropped units stay shut
    with torch.no_grad():
        labels = model(x).argmax(1)
        assert torch.allclose(net(x), model(x), atol=1e-5)
    report = check_compact(model, net, x, labels)
    assert (report.kept, report.units) == ([3, 3], [WIDTH, WIDTH])
    assert (report.digits, report.dropped_fired, report.differ) == (200, 0, 0)
    assert report.accuracy_dense == report.accuracy_compact == 1.0
    assert report.compact == compact_cost(net) and report.parameter_ratio < 0.6 and report.mac_ratio < 0.6


def test_forced_subnetwork_differs_where_a_dropped_unit_fires_and_costs_accuracy():
    model, train_x = constructed_model(), training_digits()
    net = compact(model, train_x, keep=0.5)
    x = torch.rand(200, WIDTH, generator=torch.Generator().manual_seed(1)) * 3 - 1
    x[:, [3, 5]] = -1.0
    x[:, 1] = torch.where(torch.arange(200) % 4 == 0, 2.0, -1.0)  # unit 1 fires on every fourth digit
    with torch.no_grad():
        labels = model(x).argmax(1)  # the dense model is right on every digit
    assert (labels[::4] == 2).all()  # unit 1 decides class 2 where it fires
    report = check_compact(model, net, x, labels)
    assert report.dropped_fired == 50 and report.differ == report.differ_dropped_fired == 50
    assert report.differ_unexplained == 0
    assert report.accuracy_dense == 1.0 and report.accuracy_compact == pytest.approx(0.75)
    # the exact compaction keeps unit 1 (it fires on a training digit): no digit differs
    exact = check_compact(model, compact(model, train_x), x, labels)
    assert (exact.differ, exact.accuracy_compact) == (0, 1.0)
