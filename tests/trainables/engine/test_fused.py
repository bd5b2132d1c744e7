"""Fused trials (trainables.engine.fused): K trials in one vectorised step give each member the metrics
it gets alone; the frozen-prefix cache changes nothing but the speed; a diverging member is
isolated. Every comparison is against the unfused `run_trial` on the same foundation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import FAST
from trainables.config import ConfigError, parse_config
from trainables.engine.fit import train_foundation
from trainables.engine.fused import check_fusable, fit_fused, fuse_key, run_fused
from trainables.engine.stacked import FusedMLP
from trainables.engine.trial import GATE_STATS_FILE, run_trial
from trainables.methods import adapt

TOLERANCE = 1e-5  # accuracies move in steps of 1e-3 (1,000 test digits), so they must be equal


@pytest.fixture(scope="module")
def foundations(modes):
    """One foundation per seed, trained once: different seeds fuse different foundations."""
    cache = {}

    def provider(config, modes_):
        if config.seed not in cache:
            cache[config.seed] = train_foundation(config, modes_)
        return cache[config.seed]

    return provider


def assert_same_metrics(fused: dict, alone: dict) -> None:
    assert set(fused) == set(alone)
    for name, value in alone.items():
        if name == "train_seconds":
            assert fused[name] > 0
        elif isinstance(value, float):
            assert math.isfinite(fused[name]) and abs(fused[name] - value) <= TOLERANCE, (name, fused[name], value)
        else:
            assert fused[name] == value, (name, fused[name], value)


def check_against_unfused(configs: list[dict], provider, cache_prefix: bool = True) -> list[dict]:
    fused = run_fused(configs, provider, cache_prefix=cache_prefix)
    assert len(fused) == len(configs)
    for config, metrics in zip(configs, fused, strict=True):
        assert_same_metrics(metrics, run_trial(config, provider))
    return fused


@pytest.mark.parametrize("cache_prefix", [True, False])
def test_taugate_over_seeds_matches_unfused_trials(foundations, cache_prefix):
    configs = [{**FAST, "method": "taugate", "seed": seed, "sparsity_weight": 0.05} for seed in (0, 1, 2)]
    fused = check_against_unfused(configs, foundations, cache_prefix)
    assert [m["seed"] for m in fused] == [0, 1, 2] and {m["trainable_params"] for m in fused} == {512}
    assert len({m["final_loss"] for m in fused}) == 3  # three different trials, not one copied


def test_taugate_over_sharpness_and_sparsity_on_one_foundation(foundations):
    grid = [(10.0, 0.0), (4.0, 0.2), (25.0, 1.0), (10.0, 0.5)]
    configs = [{**FAST, "method": "taugate", "gate_sharpness": s, "sparsity_weight": w} for s, w in grid]
    fused = check_against_unfused(configs, foundations)
    assert len({m["mean_gate"] for m in fused}) == len(grid)


def test_lora_same_rank_over_seeds_and_alphas(foundations):
    members = ((0, 8.0), (1, 8.0), (2, 16.0))
    configs = [{**FAST, "method": "lora", "seed": seed, "lora_alpha": alpha} for seed, alpha in members]
    fused = check_against_unfused(configs, foundations)
    assert {m["trainable_params"] for m in fused} == {10448}


@pytest.mark.parametrize("cache_prefix", [True, False])
def test_bitfit_matches_unfused_trials(foundations, cache_prefix):
    configs = [{**FAST, "method": "bitfit", "seed": seed} for seed in (0, 1)]
    fused = check_against_unfused(configs, foundations, cache_prefix)
    assert {m["trainable_params"] for m in fused} == {266}


@pytest.mark.parametrize("method", ["threshold_only", "gain_only", "frozen", "full"])
def test_other_methods_match_unfused_trials(foundations, method):
    configs = [{**FAST, "method": method, "seed": seed, "sparsity_weight": 0.1 * seed} for seed in (0, 1)]
    check_against_unfused(configs, foundations)


def test_a_single_trial_with_the_prefix_cache_matches_run_trial(foundations):
    config = {**FAST, "method": "taugate", "seed": 3, "epochs": 2}
    (fused,) = check_against_unfused([config], foundations)
    assert fused["status"] == "ok"


def test_per_member_learning_rates_match_unfused_trials(foundations):
    configs = [{**FAST, "method": "taugate", "seed": 0, "lr": lr} for lr in (1e-2, 3e-3, 3e-2)]
    check_against_unfused(configs, foundations)


def test_a_diverging_member_is_isolated(foundations):
    configs = [{**FAST, "method": "lora", "seed": seed, "lr": lr} for seed, lr in ((0, 1e-3), (1, 1e30), (2, 1e-3))]
    fused = check_against_unfused(configs, foundations)
    assert [m["status"] for m in fused] == ["ok", "diverged", "ok"]
    assert fused[1]["diverged_at_step"] >= 1 and "acc_45" not in fused[1]
    for metrics in (fused[0], fused[2]):
        assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


def test_every_member_diverging_reports_each(foundations):
    configs = [{**FAST, "method": "full", "seed": seed, "lr": 1e30} for seed in (0, 1)]
    fused = check_against_unfused(configs, foundations)
    assert [m["status"] for m in fused] == ["diverged", "diverged"]


@pytest.mark.parametrize("method", ["taugate", "lora", "bitfit", "gain_only"])
def test_cached_and_uncached_training_agree(foundations, modes, method):
    """The cache changes where layer 1's frozen product comes from, not the step: the same batch
    gives the same loss and the same gradient of every trained tensor, and two epochs end at the
    same losses. (Trained parameters are not compared: on some CPUs the two paths round
    differently in the last bit, and Adam's sign-like steps turn a 1e-8 gradient difference on a
    near-zero gradient into a full step apart.)"""
    configs = [parse_config({**FAST, "method": method, "seed": seed, "epochs": 2}) for seed in (0, 1, 0)]
    target = modes[45.0]
    index = torch.stack([torch.randperm(len(target.train_y), generator=torch.Generator().manual_seed(s))[:64]
                         for s in (0, 1, 2)])  # fmt: skip
    steps, losses = {}, {}
    for cache_prefix in (True, False):
        fused = FusedMLP([adapt(foundations(c, modes), c) for c in configs])
        if cache_prefix:
            fused.cache_prefix(target.train_x)
        logits, _ = fused.forward(target.train_x, index)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 target.train_y.index_select(0, index.reshape(-1)))  # fmt: skip
        gradients = torch.autograd.grad(loss, fused.trainable)
        steps[cache_prefix] = (loss.item(), gradients)
        results = fit_fused(
            [adapt(foundations(c, modes), c) for c in configs], target.train_x, target.train_y, epochs=2,
            lrs=[1e-2] * 3, batch_size=64, seeds=[c.seed for c in configs], cache_prefix=cache_prefix,
        )  # fmt: skip
        losses[cache_prefix] = [r.final_loss for r in results]
    assert steps[True][0] == pytest.approx(steps[False][0], abs=TOLERANCE)
    for cached, plain in zip(steps[True][1], steps[False][1], strict=True):
        torch.testing.assert_close(cached, plain, atol=TOLERANCE, rtol=1e-4)
    assert losses[True] == pytest.approx(losses[False], abs=TOLERANCE)


def test_the_prefix_cache_holds_one_block_per_foundation_and_gives_the_same_logits(foundations, modes):
    configs = [parse_config({**FAST, "method": "lora", "seed": seed}) for seed in (0, 1, 0)]
    models = [adapt(foundations(c, modes), c) for c in configs]
    x = modes[45.0].train_x
    with torch.no_grad():  # a non-zero B, so the low-rank term on x counts
        for model in models:
            for layer in model.layers:
                layer.lora_B.normal_(0, 0.1)
    plain, cached = FusedMLP(models), FusedMLP(models)
    cached.cache_prefix(x)
    assert cached.prefix.shape == (2 * len(x), 128)  # seeds 0 and 1: two foundations, three members
    index = torch.stack([torch.randperm(len(x), generator=torch.Generator().manual_seed(s))[:64] for s in range(3)])
    with torch.no_grad():
        expected = torch.stack([model(x[rows]) for model, rows in zip(models, index, strict=True)])
        torch.testing.assert_close(cached.forward(x, index)[0], expected, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(plain.forward(x, index)[0], expected, atol=TOLERANCE, rtol=0)


def test_full_cannot_cache_its_trained_first_layer(foundations, modes):
    config = parse_config({**FAST, "method": "full"})
    fused = FusedMLP([adapt(foundations(config, modes), config)])
    assert not fused.prefix_cacheable()
    with pytest.raises(ValueError, match="cannot be cached"):
        fused.cache_prefix(modes[45.0].train_x)


def test_configs_that_differ_in_shape_cannot_fuse():
    base = {**FAST, "method": "lora"}
    assert fuse_key(parse_config({**base, "seed": 1, "lora_alpha": 4.0, "lr": 0.1})) == fuse_key(parse_config(base))
    for change in ({"method": "taugate"}, {"epochs": 2}, {"lora_rank": 4}, {"hidden": [64, 64]}, {"batch_size": 32}):
        configs = [parse_config(base), parse_config({**base, **change})]
        assert fuse_key(configs[0]) != fuse_key(configs[1])
        with pytest.raises(ConfigError, match=next(iter(change))):
            check_fusable(configs)
    with pytest.raises(ConfigError):
        run_fused([])
    with pytest.raises(ConfigError, match="lr"):
        run_fused([{**base, "lr": -1.0}])


def test_artifacts_are_written_per_member(foundations, tmp_path):
    configs = [{**FAST, "method": "taugate", "seed": seed} for seed in (0, 1)]
    folders = [tmp_path / "fused0", tmp_path / "fused1"]
    run_fused(configs, foundations, artifact_dirs=folders)
    for config, folder in zip(configs, folders, strict=True):
        alone = tmp_path / f"alone{config['seed']}"
        run_trial(config, foundations, artifact_dir=alone)
        assert (folder / "adapter").is_dir()
        ours, theirs = (json.loads((f / GATE_STATS_FILE).read_text()) for f in (folder, alone))
        assert ours["method"] == "taugate"
        rates = ours["modes"]["45"]["rate"], theirs["modes"]["45"]["rate"]
        torch.testing.assert_close(torch.tensor(rates[0]), torch.tensor(rates[1]), atol=2e-5, rtol=0)
