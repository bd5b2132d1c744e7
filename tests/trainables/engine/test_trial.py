"""One trial end to end: the metrics contract, determinism, divergence, artifacts, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import FAST
from tests.support.cli import taugate
from trainables.config import ConfigError, parse_config
from trainables.device import resolve_device
from trainables.engine.fit import specialise
from trainables.engine.trial import GATE_STATS_FILE, run_trial, shared
from trainables.formats.checkpoints import CheckpointError, load_adapter, load_foundation, save_foundation
from trainables.methods import adapt

METRIC_NAMES = {"status", "method", "seed", "trainable_params", "acc_0", "acc_45", "val_acc_0", "val_acc_45",
                "final_loss", "train_seconds", "active_ratio", "val_active_ratio",
                "strong_activation_ratio"}  # fmt: skip
GATED_NAMES = {"acc_0_hard", "acc_45_hard", "val_acc_0_hard", "val_acc_45_hard", "high_activation_ratio",
               "val_high_activation_ratio", "mean_gate", "tau_displacement", "tau_step_budget",
               "sparsity_weight_final"}  # fmt: skip


@pytest.mark.parametrize("method", ["frozen", "bitfit", "taugate", "threshold_only", "gain_only", "lora", "full"])
def test_metrics_dict_follows_the_contract(method, foundation):
    metrics = run_trial({**FAST, "method": method}, shared(foundation))
    gated = method in ("taugate", "threshold_only")
    assert set(metrics) == METRIC_NAMES | (GATED_NAMES if gated else set())
    assert metrics["status"] == "ok" and metrics["method"] == method
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert 0.5 < metrics["acc_45"] <= 1 and 0 <= metrics["active_ratio"] <= 1
    assert 0.5 < metrics["val_acc_45"] <= 1 and metrics["val_acc_45"] != metrics["acc_45"]  # other digits
    assert 0 <= metrics["strong_activation_ratio"] <= metrics["active_ratio"]  # strong units are active ones
    if gated:
        assert 0 <= metrics["high_activation_ratio"] <= 1 and 0 < metrics["mean_gate"] <= 1
        assert 0 <= metrics["val_high_activation_ratio"] <= 1
        # FAST trains 1 epoch of ceil(n / 64) steps at the method's lr x lr_scale; lambda stays 0
        assert metrics["tau_step_budget"] > 0 and metrics["sparsity_weight_final"] == 0.0
        assert math.isfinite(metrics["tau_displacement"])
    json.dumps(metrics)  # plain, serialisable values only


def test_lr_scale_multiplies_the_methods_learning_rate(foundation):
    from trainables.methods import specialisation_lr

    assert specialisation_lr(parse_config({"method": "lora", "lr_scale": 0.1})) == pytest.approx(
        0.1 * specialisation_lr(parse_config({"method": "lora", "lr_scale": 1.0}))
    )
    assert specialisation_lr(parse_config({"method": "lora", "lr": 0.5, "lr_scale": 0.2})) == pytest.approx(0.1)
    slow = run_trial({**FAST, "method": "full", "lr_scale": 0.01}, shared(foundation))
    fast = run_trial({**FAST, "method": "full", "lr_scale": 1.0}, shared(foundation))
    # a hundredth of the step size forgets the original mode far less
    assert slow["acc_0"] > fast["acc_0"]


def test_same_config_and_seed_give_identical_metrics():
    config = {**FAST, "method": "taugate", "seed": 7, "sparsity_weight": 0.01}
    first, second = run_trial(config), run_trial(config)
    first.pop("train_seconds"), second.pop("train_seconds")
    assert first == second
    other_seed = run_trial({**config, "seed": 8})
    other_seed.pop("train_seconds")
    assert other_seed != first


def test_a_diverging_run_reports_diverged_without_nan(foundation):
    metrics = run_trial({**FAST, "method": "full", "lr": 1e30}, shared(foundation))
    assert metrics["status"] == "diverged" and metrics["diverged_at_step"] >= 1
    assert "acc_45" not in metrics and "final_loss" not in metrics
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


@pytest.mark.parametrize("method", ["taugate", "lora", "bitfit", "threshold_only", "full", "frozen"])
def test_adapter_round_trip_gives_identical_logits(method, foundation, modes, tmp_path):
    run_trial({**FAST, "method": method, "sparsity_weight": 0.01}, shared(foundation), artifact_dir=tmp_path)
    config = parse_config({**FAST, "method": method, "sparsity_weight": 0.01})
    trained, _ = specialise(foundation, config, modes[45.0])
    loaded = load_adapter(foundation, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(trained(modes[45.0].test_x), loaded(modes[45.0].test_x))
    stats = json.loads((tmp_path / GATE_STATS_FILE).read_text())
    assert set(stats["modes"]) == {"0", "45"}
    assert len(stats["modes"]["45"]["rate"]) == 2 and len(stats["modes"]["45"]["rate"][0]) == 128
    assert len(stats["modes"]["0"]["rate_by_class"][1]) == 10


def test_damaged_adapter_and_foundation_files_are_named_in_the_error(foundation, tmp_path):
    run_trial({**FAST, "method": "taugate"}, shared(foundation), artifact_dir=tmp_path)
    tensors = tmp_path / "adapter" / "adapter.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="adapter.safetensors"):
        load_adapter(foundation, tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="adapter_config.json"):
        load_adapter(foundation, tmp_path / "adapter")
    path = tmp_path / "foundation.safetensors"
    save_foundation(foundation, path)
    assert torch.equal(load_foundation(path, [128, 128]).layers[0].weight, foundation.layers[0].weight)
    with pytest.raises(CheckpointError, match="hidden"):
        load_foundation(path, [64, 64])
    path.write_bytes(b"\x80\x04pickle?")
    with pytest.raises(CheckpointError, match="foundation.safetensors"):
        load_foundation(path, [128, 128])


def test_adapter_of_another_method_is_refused(foundation, tmp_path):
    run_trial({**FAST, "method": "taugate"}, shared(foundation), artifact_dir=tmp_path)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({**config, "method": "lora"}))
    with pytest.raises(CheckpointError, match="do not match method 'lora'"):
        load_adapter(foundation, tmp_path / "adapter")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"method": "dropout"}, "method"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"gate_sharpness": 0}, "gate_sharpness"),
        ({"gate_sharpness": -1}, "gate_sharpness"),
        ({"sparsity_weight": -0.1}, "sparsity_weight"),
        ({"dataset": "cifar"}, "dataset"),
        ({"device": "tpu"}, "device"),
        ({"target_angle": 30}, "target_angle"),
        ({"hidden": [128, 0]}, "hidden"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_bad_config_is_a_clear_error_naming_the_field(raw, field):
    with pytest.raises(ConfigError, match=field):
        parse_config(raw)


def test_unavailable_device_is_a_clear_error():
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="directml"):
        resolve_device("directml")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cli_trial_prints_the_metrics_dict_as_the_last_line():
    result = taugate("trial", "--method", "taugate", "--seed", "2", "--gate-sharpness", "3", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["method"] == "taugate" and metrics["seed"] == 2 and metrics["trainable_params"] == 512


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--method", "dropout"], "method"),
        (["--method", "lora", "--lora-rank", "0"], "lora_rank"),
        (["--gate-sharpness", "0"], "gate_sharpness"),
        (["--sparsity-weight", "-1"], "sparsity_weight"),
        (["--dataset", "cifar"], "dataset"),
        (["--dataset", "mnist", "--data-root", "/nonexistent/mnist"], "data_root"),
        (["--device", "directml"], "directml"),
    ],
)
def test_cli_rejects_bad_input_with_a_message_naming_the_field(args, field):
    result = taugate("trial", *args)
    assert result.returncode == 2
    assert field in result.stderr and "Traceback" not in result.stderr


def test_cli_config_file_sets_fields(tmp_path):
    (tmp_path / "trial.yaml").write_text("method: bitfit\nepochs: 1\nfoundation_epochs: 1\ndevice: cpu\n")
    result = taugate("trial", "--config", str(tmp_path / "trial.yaml"), "--method", "bitfit")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["trainable_params"] == 266
    (tmp_path / "bad.yaml").write_text("method: [unclosed\n")
    result = taugate("trial", "--config", str(tmp_path / "bad.yaml"))
    assert result.returncode == 2 and "YAML" in result.stderr


def test_adapt_never_touches_the_foundation(foundation):
    before = {k: v.clone() for k, v in foundation.state_dict().items()}
    adapt(foundation, parse_config({"method": "lora"}))
    assert all(torch.equal(v, foundation.state_dict()[k]) for k, v in before.items())
