"""TauGate's own budget in training: tau's learning-rate multiplier and the sparsity target met by dual
ascent on lambda (trainables.methods.taugate.control), alone, fused and resumed."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import FAST
from tests.trainables.engine.test_resume import Recorder, matching_metrics, same_metrics
from trainables.config import ConfigError, parse_config
from trainables.engine.fused import run_fused
from trainables.engine.optim import Adam
from trainables.engine.resume import TrainState
from trainables.engine.trial import run_trial, shared
from trainables.methods.taugate.control import SparsityControl, hard_ratio


def gates_with_ratio(ratio: float, members: int = 1, units: int = 100) -> list[torch.Tensor]:
    """Soft gates of one batch of which exactly `ratio` are on (> 0.5), per member."""
    on = int(round(ratio * units))
    row = torch.cat([torch.full((on,), 0.9), torch.full((units - on,), 0.1)])
    return [row.repeat(members, 2, 1).reshape(members * 2, units)]


def test_the_batch_ratio_counts_gates_on():
    assert hard_ratio(gates_with_ratio(0.3), 1).tolist() == pytest.approx([0.3])
    assert hard_ratio(gates_with_ratio(0.7, members=2), 2).tolist() == pytest.approx([0.7, 0.7])


def test_lambda_rises_while_too_many_gates_are_open_and_falls_once_fewer_are():
    control = SparsityControl([1.0], [0.4], steps=[0.5], damping=[10.0])
    control.update(gates_with_ratio(0.8))  # 0.4 above the target
    assert control.weights()[0] == pytest.approx(1.0 + 0.5 * 0.4 + 10.0 * 0.4)
    high = control.weights()[0]
    control.update(gates_with_ratio(0.8))
    assert control.weights()[0] > high  # the integral keeps growing while the ratio stays above
    control.update(gates_with_ratio(0.1))  # below the target: lambda drops at once (the damping term)
    assert control.weights()[0] < high - 10.0 * 0.4
    for _ in range(50):
        control.update(gates_with_ratio(0.1))
    assert control.weights()[0] < 0  # an equality constraint: a negative lambda opens gates again


def test_a_member_without_a_target_keeps_its_lambda():
    control = SparsityControl([3.0, 1.0], [None, 0.5], steps=[1.0, 1.0], damping=[100.0, 100.0])
    control.update(gates_with_ratio(0.9, members=2))
    assert control.weights()[0] == 3.0 and control.weights()[1] > 1.0


def test_the_loss_term_uses_lambda_of_the_step_and_gives_no_gradient_to_it():
    control = SparsityControl([2.0], [0.5], steps=[1.0], damping=[1.0])
    soft = [torch.full((4, 10), 0.75, requires_grad=True)]
    term = control.term(soft)
    control.update(soft)  # in place, after the term was formed: backward still works
    term.sum().backward()
    assert term.item() == pytest.approx(2.0 * 0.75) and soft[0].grad is not None
    assert not control.weight.requires_grad


def test_no_control_without_a_target():
    configs = [parse_config(FAST | {"method": "taugate", "sparsity_weight": 3.0})]
    assert SparsityControl.of(configs, "cpu", torch.float32) is None
    configs.append(parse_config(FAST | {"method": "taugate", "sparsity_target": 0.3}))
    control = SparsityControl.of(configs, "cpu", torch.float32)
    assert control is not None and control.weights() == [3.0, 0.0]


@pytest.mark.parametrize("bad", [{"sparsity_target": 1.0}, {"sparsity_target": 0.0}, {"tau_lr_multiplier": 0}])
def test_budget_fields_are_checked(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        parse_config(FAST | bad)


def test_a_multiplier_scales_only_its_tensor_bit_for_bit_as_adam_at_that_rate():
    torch.manual_seed(0)
    tau, gamma = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    twin_tau, twin_gamma = tau.detach().clone().requires_grad_(), gamma.detach().clone().requires_grad_()
    ours = Adam([tau, gamma], 0.01, multipliers=[[5.0], [1.0]])
    reference_tau, reference_gamma = torch.optim.Adam([twin_tau], lr=0.05), torch.optim.Adam([twin_gamma], lr=0.01)
    for step in range(5):
        grads = torch.randn(2, 8, generator=torch.Generator().manual_seed(step))
        for p, q, g in ((tau, twin_tau, grads[0]), (gamma, twin_gamma, grads[1])):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        reference_tau.step()
        reference_gamma.step()
    assert torch.equal(tau, twin_tau) and torch.equal(gamma, twin_gamma)


def test_a_larger_tau_rate_moves_the_thresholds_further(foundation):
    slow = run_trial(FAST | {"method": "taugate", "sparsity_weight": 1.0}, shared(foundation))
    fast = run_trial(
        FAST | {"method": "taugate", "sparsity_weight": 1.0, "tau_lr_multiplier": 10.0}, shared(foundation)
    )
    assert fast["tau_step_budget"] == pytest.approx(10 * slow["tau_step_budget"])
    assert fast["tau_displacement"] > 2 * slow["tau_displacement"] > 0  # lambda closes gates: tau rises
    assert fast["val_high_activation_ratio"] < slow["val_high_activation_ratio"]


def test_a_target_pulls_the_ratio_toward_it_from_either_side(foundation):
    budget = FAST | {"method": "taugate", "tau_lr_multiplier": 25.0, "epochs": 2}
    dense = run_trial(budget, shared(foundation))["val_high_activation_ratio"]
    sparse = run_trial(budget | {"sparsity_target": 0.3}, shared(foundation))
    assert abs(sparse["val_high_activation_ratio"] - 0.3) < abs(dense - 0.3) / 2
    assert sparse["sparsity_weight_final"] != 0.0  # lambda moved from its start (sparsity_weight 0)


def test_fused_members_with_targets_and_multipliers_match_their_lone_trials(foundation):
    configs = [FAST | {"method": "taugate", "seed": 0, **extra} for extra in
               ({"sparsity_target": 0.3, "tau_lr_multiplier": 25.0}, {"sparsity_weight": 1.0},
                {"sparsity_target": 0.6, "tau_lr_multiplier": 5.0})]  # fmt: skip
    fused = run_fused(configs, foundation=shared(foundation))
    for config, member in zip(configs, fused, strict=True):
        matching_metrics(member, run_trial(config, foundation=shared(foundation)))


def test_a_targeted_trial_resumed_from_its_saved_epoch_ends_as_an_uninterrupted_one(foundation, tmp_path):
    config = FAST | {"method": "taugate", "epochs": 3, "sparsity_target": 0.4, "tau_lr_multiplier": 25.0}
    whole = run_trial(config, foundation=shared(foundation))
    with pytest.raises(KeyboardInterrupt):
        run_trial(config, foundation=shared(foundation), progress=Recorder(tmp_path, stop_at=1))
    assert TrainState.load(tmp_path).sparsity_weights is not None  # lambda's state is in the checkpoint
    metrics = run_trial(config, foundation=shared(foundation), progress=Recorder(start=TrainState.load(tmp_path)))
    same_metrics(metrics, whole)
