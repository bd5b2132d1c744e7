"""The method registry owns what a method is: a method registered here, in the test, runs through a
trial, a fused group and a planned study, and the mode bank and the PEFT export refuse it by its
registry entry, without any other file naming it."""

from __future__ import annotations

import pytest

from tests.conftest import FAST
from trainables import registry
from trainables.bank.layout import BankError
from trainables.bank.store import read_mode
from trainables.config import ConfigError, parse_config
from trainables.engine.fit import train_foundation
from trainables.engine.fused import fuse_key, run_fused
from trainables.engine.trial import run_trial, shared
from trainables.formats.peft import ExportError, export_peft
from trainables.methods import adapt, count_trainable
from trainables.model import MLP

TOY = "last_bias"


def train_last_bias(model: MLP, config) -> None:
    """A toy method: only the output layer's bias learns."""
    model.layers[-1].bias.requires_grad_(True)


@pytest.fixture
def toy():
    method = registry.register(registry.Method(TOY, train_last_bias, default_lr=5e-2, peft_note="a toy"))
    yield method
    registry.unregister(TOY)


@pytest.fixture(scope="module")
def foundation(modes):
    return train_foundation(parse_config({**FAST, "seed": 0}), modes)


def test_an_unregistered_method_is_refused_by_name_and_the_choices_come_from_the_registry():
    with pytest.raises(ConfigError, match=f"unknown method '{TOY}'; choose one of frozen, bitfit, taugate"):
        parse_config({"method": TOY})


def test_a_registered_method_runs_as_a_trial_training_only_its_own_tensors(toy, foundation):
    config = parse_config({**FAST, "method": TOY, "seed": 0})
    assert not config.gated
    model = adapt(foundation, config)
    assert count_trainable(model) == 10  # the 10 output biases
    metrics = run_trial(config, shared(foundation))
    assert metrics["status"] == "ok" and metrics["method"] == TOY and metrics["trainable_params"] == 10
    assert "acc_45_hard" not in metrics  # not gated: no hard-gate metrics
    frozen = run_trial({**FAST, "method": "frozen", "seed": 0}, shared(foundation))
    assert metrics["final_loss"] < frozen["final_loss"]  # the bias learned something


def test_a_registered_method_fuses_and_each_member_gets_its_lone_trial(toy, foundation):
    configs = [{**FAST, "method": TOY, "seed": 0, "lr": lr} for lr in (0.05, 0.01)]
    assert fuse_key(parse_config(configs[0])) == fuse_key(parse_config(configs[1]))
    fused = run_fused(configs, shared(foundation))
    for member, config in zip(fused, configs, strict=True):
        alone = run_trial(config, shared(foundation))
        for name, value in alone.items():
            if name != "train_seconds":
                assert member[name] == pytest.approx(value, abs=1e-5), name


def test_the_bank_and_the_peft_export_refuse_a_method_their_registry_entry_does_not_fit(toy, foundation, tmp_path):
    run_trial({**FAST, "method": TOY, "seed": 0}, shared(foundation), artifact_dir=tmp_path / "trial")
    adapter = tmp_path / "trial" / "adapter"
    with pytest.raises(BankError, match=f"method '{TOY}' has no gate to bank"):
        read_mode(foundation, adapter, angle=45.0, foundation_id="f")
    with pytest.raises(ExportError, match=f"cannot export method '{TOY}' to PEFT: a toy"):
        export_peft(adapter, tmp_path / "peft")


def test_a_second_method_under_a_registered_name_and_a_search_range_off_its_dimensions_are_refused():
    with pytest.raises(registry.MethodError, match="'taugate' is already registered"):
        registry.register(registry.Method("taugate", train_last_bias, default_lr=1.0))
    with pytest.raises(registry.MethodError, match="'lora_rank', which is not one of its dimensions"):
        registry.register(
            registry.Method(TOY, train_last_bias, 1.0, search={"lora_rank": registry.SearchRange("int", 1, 2)})
        )
    assert TOY not in registry.names()


def test_the_built_in_methods_describe_themselves():
    assert registry.names() == ("frozen", "bitfit", "taugate", "gain_only", "threshold_only", "lora", "full")
    assert registry.gated_methods() == ("taugate", "threshold_only")
    assert registry.bank_methods() == ("taugate", "gain_only", "threshold_only")
    assert registry.get("lora").fuse_fields == ("lora_rank",)
    assert {name for name in registry.names() if registry.get(name).peft} == {"lora", "gain_only"}


def test_a_registered_method_is_planned_in_a_study_with_its_seeds_fused_and_its_parameters_counted(toy):
    from study.spec.loader import parse_spec
    from study.spec.plan import fused_groups, summary, trainable_count, trial_config, variants

    spec = parse_spec({"name": "toy", "seeds": [0, 1, 2], "fuse": 3, "foundation": {"hidden": [16]},
                       "methods": {TOY: {}, "taugate": {"sparsity_weight": [0, 1]}}})  # fmt: skip
    grid = variants(spec)
    assert summary(spec)["per_method"] == {TOY: 3, "taugate": 6}
    toys = [v for v in grid if v["method"] == TOY]
    assert all(set(v) == {"method", "seed"} for v in toys)  # no dimensions: only seeds vary
    groups = [g for g in fused_groups(spec, grid) if g[0]["method"] == TOY]
    assert [len(g) for g in groups] == [3]  # its three seeds train as one fused group
    assert trainable_count(trial_config(spec, toys[0])) == 10
