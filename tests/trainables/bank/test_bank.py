"""The mode bank (issue 13, items 1-3): one foundation and every mode's (tau, gamma) in one folder;
switching and mixed batches that equal each trial's own adapter; compact per-mode subnetworks.
Real torch, real files, a tiny study folder built without Ray."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from study.pipeline.mode_banks import FORCED_KEEP, FORCED_RULE, build_bank, build_banks
from tests.support.bank_study import ALL_METHODS, SEED0, SEED0_TRIALS, SEED1, TINY, make_study
from tests.support.ledger import record_trial
from trainables.bank.compact import Cost, check_compact, compact, compact_cost, dense_cost, load_compact, save_compact
from trainables.bank.disk import load_bank
from trainables.bank.layout import BankError
from trainables.bank.store import assemble, mode_name, read_foundation, read_mode
from trainables.config import accuracy_name, parse_config
from trainables.data import load_modes
from trainables.formats.checkpoints import load_adapter
from trainables.methods.taugate.gate import set_hard

# one budget: t45a and t45b are two candidates for taugate@45 (the support study's t45b has another lambda, a
# budget of its own, which tests/study/test_modes_budgets.py covers)
ONE_BUDGET = tuple((key, method, angle, 0.0) for key, method, angle, _ in SEED0_TRIALS)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("bank") / "study", ONE_BUDGET)


@pytest.fixture(scope="module")
def bank_dir(study: Path, tmp_path_factory) -> Path:
    return build_bank(study, tmp_path_factory.mktemp("built") / "bank", ALL_METHODS, foundation=SEED0)


@pytest.fixture(scope="module")
def data():
    return load_modes(parse_config(TINY), torch.device("cpu"))


def metrics_of(study: Path, key: str) -> dict:
    return json.loads((study / "trials" / key / "metrics.json").read_text())


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def base_hash(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def trial_model(study: Path, key: str, hard: bool = True) -> torch.nn.Module:
    """The trial's own adapter loaded onto its foundation, as the trial code evaluates it."""
    foundation = read_foundation(study / "foundations" / f"{SEED0}.safetensors", TINY["hidden"])
    model = load_adapter(foundation, study / "trials" / key / "adapter").eval()
    set_hard(model, hard)
    return model


def best_45(study: Path) -> str:
    name = accuracy_name(45, hard=True, validation=True)
    return max(("t45a", "t45b"), key=lambda key: (metrics_of(study, key)[name], key == "t45a"))


def mixed_batch(data, names: list[str], per_mode: int = 40, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Test digits of each mode's own angle, shuffled together; each sample names its mode."""
    x = torch.cat([data[float(name.split("@")[1])].test_x[:per_mode] for name in names])
    labels = [name for name in names for _ in range(per_mode)]
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return x[order], [labels[i] for i in order]


# --- 1. the bank folder ----------------------------------------------------------------------------


def test_the_bank_holds_one_row_per_mode_taken_from_each_trials_adapter(study: Path, bank_dir: Path):
    index = json.loads((bank_dir / "bank.json").read_text())
    assert (index["format"], index["format_version"]) == ("taugate-mode-bank", 1)
    assert index["foundation"]["id"] == SEED0 and index["foundation"]["file"] == "foundation.safetensors"
    original = (study / "foundations" / f"{SEED0}.safetensors").read_bytes()
    assert (bank_dir / "foundation.safetensors").read_bytes() == original  # a byte copy: self-contained
    assert index["foundation"]["sha256"] == hashlib.sha256(original).hexdigest()
    assert (index["in_features"], index["hidden"], index["classes"], index["gate_sharpness"]) == (784, [16, 16], 10, 10)

    names = ["taugate@0", "taugate@45", "taugate@90", "gain_only@45", "threshold_only@90"]  # methods, then angle
    assert [m["name"] for m in index["modes"]] == names
    trials = {"taugate@0": "t0", "taugate@45": best_45(study), "taugate@90": "t90", "gain_only@45": "g45",
              "threshold_only@90": "th90"}  # fmt: skip
    assert {m["name"]: m["trial"] for m in index["modes"]} == trials  # never the diverged one
    assert [m["angle"] for m in index["modes"]] == [0.0, 45.0, 90.0, 45.0, 90.0]
    assert index["tensors"] == {"sharpness": [5], "tau.0": [5, 16], "gamma.0": [5, 16], "tau.1": [5, 16],
                                "gamma.1": [5, 16]}  # fmt: skip

    tensors = load_file(str(bank_dir / "bank.safetensors"))
    for row, entry in enumerate(index["modes"]):
        assert entry["metrics"] == metrics_of(study, entry["trial"])
        adapter = load_file(str(study / "trials" / entry["trial"] / "adapter" / "adapter.safetensors"))
        for layer in (0, 1):
            tau, gamma = tensors[f"tau.{layer}"][row], tensors[f"gamma.{layer}"][row]
            if entry["method"] == "gain_only":  # no gate: stored as an always-open threshold
                assert torch.isinf(tau).all() and (tau < 0).all()
            else:
                assert torch.equal(tau, adapter[f"activations.{layer}.tau"])
            if entry["method"] == "threshold_only":  # no learned gain: gamma stays 1
                assert torch.equal(gamma, torch.ones(16))
            else:
                assert torch.equal(gamma, adapter[f"activations.{layer}.gamma"])


def test_a_mode_is_the_trial_best_on_validation_never_on_test_and_the_choice_is_recorded(study: Path, tmp_path):
    copied = copy_of(study, tmp_path)
    val, test = accuracy_name(45, hard=True, validation=True), accuracy_name(45, hard=True)

    def set_metrics(key: str, val_value: float, test_value: float) -> None:
        path = copied / "trials" / key / "metrics.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {val: val_value, test: test_value}))

    set_metrics("t45a", 0.30, 0.99)  # best on test, worse on validation
    set_metrics("t45b", 0.70, 0.10)
    bank = load_bank(build_bank(copied, tmp_path / "one", foundation=SEED0, compact=False))
    assert bank.mode("taugate@45").trial == "t45b"
    assert bank.mode("taugate@45").selection == {
        "metric": val,
        "value": 0.70,
        "candidates": {"t45a": 0.30, "t45b": 0.70},
    }
    assert any("taugate@45 is trial t45b" in note for note in bank.source["notes"])

    set_metrics("t45b", 0.30, 0.10)  # a tie: the first trial key
    assert (
        load_bank(build_bank(copied, tmp_path / "two", foundation=SEED0, compact=False)).mode("taugate@45").trial
        == "t45a"
    )


def test_one_bank_per_foundation_and_a_single_bank_needs_the_foundation_chosen(study: Path, tmp_path: Path):
    with pytest.raises(BankError, match=rf"2 foundations \({SEED0} \(seed 0\), {SEED1} \(seed 1\)|{SEED1}.*{SEED0}"):
        build_bank(study, tmp_path / "single")
    assert not (tmp_path / "single").exists()

    built = build_banks(study, tmp_path / "banks", compact=False)
    assert [(b.foundation_id, b.seed, b.folder) for b in built] == [
        (SEED0, 0, tmp_path / "banks" / SEED0), (SEED1, 1, tmp_path / "banks" / SEED1)
    ]  # fmt: skip
    assert load_bank(tmp_path / "banks" / SEED0).names == ["taugate@0", "taugate@45", "taugate@90"]
    assert load_bank(tmp_path / "banks" / SEED1).names == ["taugate@45"]
    assert load_bank(tmp_path / "banks" / SEED1).foundation_id == SEED1
    with pytest.raises(BankError, match=f"one bank per foundation.*{SEED0}"):
        load_bank(tmp_path / "banks")

    only = build_banks(study, tmp_path / "chosen", foundation=SEED1, compact=False)
    assert [b.foundation_id for b in only] == [SEED1] and not (tmp_path / "chosen" / SEED0).exists()


def test_modes_trained_on_another_foundation_are_refused(study: Path, tmp_path: Path):
    foundation0 = study / "foundations" / f"{SEED0}.safetensors"
    foundation1 = read_foundation(study / "foundations" / f"{SEED1}.safetensors", [16, 16])
    own = read_mode(read_foundation(foundation0, [16, 16]), study / "trials" / "t0" / "adapter", angle=0,
                    foundation_id=SEED0, trial="t0")  # fmt: skip
    other = read_mode(foundation1, study / "trials" / "s1t45" / "adapter", angle=45, foundation_id=SEED1, trial="s1t45")
    with pytest.raises(
        BankError, match=f"taugate@45 \\(trial s1t45\\) was trained on foundation {SEED1}, not on {SEED0}"
    ):
        assemble(foundation0, SEED0, [16, 16], [own, other])
    with pytest.raises(BankError, match="two modes named taugate@0"):
        assemble(foundation0, SEED0, [16, 16], [own, own])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ("lora",)}, "method 'lora' has no gate to bank"),
        ({"methods": ("taugate",), "foundation": "feedbeef0000"}, f"foundation 'feedbeef0000'.*{SEED0} \\(seed 0\\)"),
    ],
)
def test_a_method_without_gates_or_an_unknown_foundation_is_refused(study: Path, tmp_path: Path, kwargs, message):
    with pytest.raises(BankError, match=message):
        build_banks(study, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_a_study_without_gated_trials_or_a_bad_folder_is_refused(study: Path, tmp_path: Path):
    lora_only = tmp_path / "lora_only"
    record_trial(lora_only, "lora", TINY | {"method": "lora"}, {"status": "ok", "method": "lora"})
    with pytest.raises(BankError, match=f"{lora_only}: no finished trials of taugate"):
        build_banks(lora_only)
    with pytest.raises(BankError, match="no such study folder"):
        build_banks(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BankError, match="not a study folder"):
        build_banks(tmp_path / "empty")
    assert not (lora_only / "bank").exists() and not (tmp_path / "empty" / "bank").exists()

    copied = copy_of(study, tmp_path)
    damaged = copied / "trials" / "t90" / "adapter" / "adapter.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:40])
    with pytest.raises(BankError, match=re.escape(str(damaged))):
        build_banks(copied, foundation=SEED0)
    assert not (copied / "bank").exists()  # nothing is written when one adapter is damaged
    missing = copied / "foundations" / f"{SEED1}.safetensors"
    missing.unlink()
    with pytest.raises(BankError, match=re.escape(f"{missing}: file not found")):
        build_banks(copied, foundation=SEED1)


def _truncate(folder: Path) -> str:
    path = folder / "bank.safetensors"
    path.write_bytes(path.read_bytes()[:-50])
    return f"{path}: not a readable safetensors file"


def _bad_json(folder: Path) -> str:
    (folder / "bank.json").write_text('{"format": "taugate-mode-bank",')
    return f"{folder / 'bank.json'}: not valid JSON"


def _wrong_shape(folder: Path) -> str:
    path = folder / "bank.safetensors"
    tensors = load_file(str(path))
    tensors["tau.1"] = tensors["tau.1"][:, :15].contiguous()
    save_file(tensors, str(path))
    return f"{path}: tensor tau.1 has shape [5, 15], expected [5, 16]"


def _missing_tensor(folder: Path) -> str:
    path = folder / "bank.safetensors"
    tensors = load_file(str(path))
    del tensors["gamma.0"]
    save_file(tensors, str(path))
    return f"{path}: tensor gamma.0 is missing"


def _edit_index(folder: Path, change) -> None:
    path = folder / "bank.json"
    index = json.loads(path.read_text())
    change(index)
    path.write_text(json.dumps(index))


def _missing_field(folder: Path) -> str:
    _edit_index(folder, lambda index: index.pop("hidden"))
    return f"{folder / 'bank.json'}: field 'hidden' is missing"


def _mode_without_method(folder: Path) -> str:
    _edit_index(folder, lambda index: index["modes"][2].pop("method"))
    return f"{folder / 'bank.json'}: modes[2]: field 'method' is missing"


def _newer_format(folder: Path) -> str:
    _edit_index(folder, lambda index: index.update(format_version=2))
    return f"{folder / 'bank.json'}: format_version 2"


def _replaced_foundation(folder: Path) -> str:
    path = folder / "foundation.safetensors"
    tensors = load_file(str(path))
    tensors["layers.0.bias"] = tensors["layers.0.bias"] + 1
    save_file(tensors, str(path))
    return f"{path}: sha256 differs"


@pytest.mark.parametrize(
    "damage",
    [_truncate, _bad_json, _wrong_shape, _missing_tensor, _missing_field, _mode_without_method, _newer_format,
     _replaced_foundation],
)  # fmt: skip
def test_a_damaged_bank_is_an_error_naming_the_file_and_field(bank_dir: Path, tmp_path: Path, damage):
    folder = copy_of(bank_dir, tmp_path)
    message = damage(folder)
    with pytest.raises(BankError, match=re.escape(message)):
        load_bank(folder)


# --- 2. switching and mixed batches ----------------------------------------------------------------


@pytest.mark.parametrize("hard", [True, False])
def test_a_mixed_batch_equals_each_trials_own_adapter_and_each_mode_alone(study, bank_dir, data, hard):
    """Exact (torch.equal) against the trial's own adapter on the same batch: the gate's arithmetic is
    GatedReLU's in its order and the Linear layers are the same modules on an input of the same shape.
    Against each mode's samples run alone (a smaller batch) the rows agree to rounding only: matrix
    kernels choose their summation order by batch size (on the H200 machine's CPU and on CUDA the
    logits differed by up to 4e-6; on this 2-core CPU they happen to be equal), so that comparison is
    allclose(rtol=1e-5, atol=1e-6), while the mode alone equals the trial's adapter alone exactly."""
    bank = load_bank(bank_dir)
    model = bank.model(hard=hard)
    x, names = mixed_batch(data, bank.names)
    with torch.no_grad():
        mixed = model(x, names)
        assert torch.equal(model(x, bank.indices(names)), mixed)  # names or an index tensor: the same gather
        for name in bank.names:
            rows = torch.tensor([n == name for n in names])
            own = trial_model(study, bank.mode(name).trial, hard=hard)
            assert torch.equal(mixed[rows], own(x)[rows]), name
            assert torch.equal(mixed[rows], model(x, name)[rows]), name
            model.set_mode(name)
            assert model.mode == name
            assert torch.equal(mixed[rows], model(x)[rows]), name

            alone = model(x[rows])
            assert torch.equal(alone, own(x[rows])), name
            assert torch.equal(model(x[rows], name), alone), name
            assert torch.allclose(mixed[rows], alone, rtol=1e-5, atol=1e-6), name


def test_switching_and_mixed_batches_never_touch_the_base_weights(bank_dir: Path, data):
    bank = load_bank(bank_dir)
    before, tensors_before = base_hash(bank.foundation), [t.clone() for t in (*bank.tau, *bank.gamma)]
    model, other = bank.model(), bank.model("taugate@90")
    # the foundation is held once: both models use the bank's own Linear modules and tensors
    for mine, theirs, base in zip(model.layers, other.layers, bank.foundation.layers, strict=True):
        assert mine is base and theirs is base
    assert [g.tau.data_ptr() for g in model.gates] == [t.data_ptr() for t in bank.tau]
    assert not any(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in bank.foundation.parameters())

    pointers = [p.data_ptr() for p in model.parameters()]
    x, names = mixed_batch(data, bank.names, per_mode=8)
    with torch.no_grad():
        for step in range(60):
            model.set_mode(bank.names[step % len(bank)])
            model(x)
            model(x, names)
            model(x, bank.indices(names[::-1]))
    assert base_hash(bank.foundation) == before and base_hash(model) == base_hash(other)
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert all(torch.equal(a, b) for a, b in zip((*bank.tau, *bank.gamma), tensors_before, strict=True))


def test_unknown_modes_and_bad_index_tensors_are_refused(bank_dir: Path, data):
    bank = load_bank(bank_dir)
    model = bank.model()
    x = data[0.0].test_x[:4]
    listed = re.escape(", ".join(bank.names))
    for action in (
        lambda: model.set_mode("taugate@30"),
        lambda: bank.model("taugate@30"),
        lambda: model(x, ["taugate@0", "taugate@30", "taugate@0", "taugate@0"]),
        lambda: model(x, "taugate@30"),
        lambda: bank.mode("taugate@30"),
        lambda: bank.export_adapter("taugate@30", Path("/nonexistent")),
    ):
        with pytest.raises(
            BankError, match=f"mode 'taugate@30' is not in the bank \\({re.escape(str(bank_dir))}\\); modes: {listed}"
        ):
            action()
    with pytest.raises(BankError, match="one mode per sample of a batch of 4"):
        model(x, torch.tensor([0, 1]))
    with pytest.raises(BankError, match="positions must lie in 0..4"):
        model(x, torch.tensor([0, 1, 5, 0]))
    with pytest.raises(BankError, match="positions must lie in 0..4"):
        model(x, torch.tensor([0, -1, 2, 0]))  # never wraps round to the last mode
    with pytest.raises(BankError, match="dtype torch.float32"):
        model(x, torch.zeros(4))
    assert model.mode == "taugate@0"  # a refused switch leaves the mode as it was


def test_a_mode_exports_as_an_adapter_that_load_adapter_reads(study: Path, bank_dir: Path, data, tmp_path: Path):
    bank = load_bank(bank_dir)
    x = data[45.0].test_x
    for name in bank.names:
        folder = bank.export_adapter(name, tmp_path / name)
        trial = study / "trials" / bank.mode(name).trial / "adapter"
        assert (
            load_file(str(folder / "adapter.safetensors")).keys()
            == load_file(str(trial / "adapter.safetensors")).keys()
        )
        assert json.loads((folder / "adapter_config.json").read_text()) == json.loads(
            (trial / "adapter_config.json").read_text()
        )
        exported = load_adapter(bank.foundation, folder).eval()
        set_hard(exported, True)
        with torch.no_grad():
            assert torch.equal(exported(x), trial_model(study, bank.mode(name).trial)(x)), name


# --- 3. compact per-mode subnetworks --------------------------------------------------------------


def dense_activations(bank, name: str, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return bank.model(name).trace(x)[1]


def edited_bank(study: Path, closed: dict[int, list[int]], gains: dict[tuple[int, int], float] | None = None,
                taus: dict[tuple[int, int], float] | None = None):  # fmt: skip
    """A bank of t45a's mode with some units' tau set so high they never open, and other edits."""
    path = study / "foundations" / f"{SEED0}.safetensors"
    mode = read_mode(
        read_foundation(path, [16, 16]), study / "trials" / "t45a" / "adapter", angle=45, foundation_id=SEED0
    )
    tau, gamma = [t.clone() for t in mode.tau], [g.clone() for g in mode.gamma]
    for layer, units in closed.items():
        tau[layer][units] = 1e6
    for (layer, unit), value in (taus or {}).items():
        tau[layer][unit] = value
    for (layer, unit), value in (gains or {}).items():
        gamma[layer][unit] = value
    return assemble(path, SEED0, [16, 16], [dataclasses.replace(mode, tau=tau, gamma=gamma)])


def test_compaction_drops_exactly_the_units_that_never_open_on_training_digits_and_folds_gamma(study, data):
    bank = edited_bank(study, closed={0: [3, 7], 1: [5]})
    train_x, test_x = data[45.0].train_x, data[45.0].test_x
    net = bank.compact("taugate@45", train_x)
    opened = [(a != 0).any(0) for a in dense_activations(bank, "taugate@45", train_x)]
    assert [units.tolist() for units in net.kept] == [torch.nonzero(o).flatten().tolist() for o in opened]
    assert 3 not in net.kept[0] and 7 not in net.kept[0] and 5 not in net.kept[1]
    assert net.widths == [int(o.sum()) for o in opened] and all(w < 16 for w in net.widths)

    # gamma folds into the next layer's columns; thresholds are max(tau, 0) of the kept units
    dense = bank.foundation.layers
    k0, k1 = net.kept
    assert torch.equal(net.layers[0].weight, dense[0].weight[k0])
    assert torch.equal(net.layers[1].weight, dense[1].weight[k1][:, k0] * bank.gamma[0][0][k0])
    assert torch.equal(net.layers[2].weight, dense[2].weight[:, k1] * bank.gamma[1][0][k1])
    assert torch.equal(net.activations[1].threshold, bank.tau[1][0][k1].clamp(min=0))

    # on every training digit no dropped unit fires, so the compact net predicts as the dense one
    model = bank.model("taugate@45")
    with torch.no_grad():
        assert torch.equal(net(train_x).argmax(1), model(train_x).argmax(1))
        assert torch.allclose(net(train_x), model(train_x), atol=1e-5)  # the fold only changes rounding
    report = check_compact(model, net, train_x)
    assert (report.dropped_fired, report.differ, report.differ_unexplained) == (0, 0, 0)
    assert report.max_logit_gap < 1e-5
    assert check_compact(model, net, test_x, data[45.0].test_y).digits == len(test_x)


def test_compact_predictions_differ_only_on_digits_where_a_dropped_unit_fired(study: Path, data):
    """Units are dropped on 300 training digits; a last-layer unit that opens above all of them (and
    has a large gain) then fires on some test digits: those, and only those, may be predicted otherwise."""
    train_x, test_x = data[45.0].train_x[:300], data[45.0].test_x
    probe = edited_bank(study, closed={})
    z = probe.foundation.layers[1](dense_activations(probe, "taugate@45", train_x)[0])
    unit = int(torch.argmax(z.max(0).values))  # the unit of layer 1 that reaches highest on these digits
    bank = edited_bank(study, closed={}, taus={(1, unit): float(z[:, unit].max())}, gains={(1, unit): 1e3})
    model = bank.model("taugate@45")
    net = compact(model, train_x)
    assert unit not in net.kept[1]

    activations = dense_activations(bank, "taugate@45", test_x)
    fired = torch.zeros(len(test_x), dtype=torch.bool)
    for activation, kept in zip(activations, net.kept, strict=True):
        dropped = torch.ones(16, dtype=torch.bool)
        dropped[kept] = False
        fired |= (activation[:, dropped] != 0).any(1)
    with torch.no_grad():
        differ = net(test_x).argmax(1) != model(test_x).argmax(1)
    assert fired.any() and differ.any()  # the dropped unit fired on some test digits and changed them
    assert not (differ & ~fired).any()  # equal on every digit where no dropped unit fired

    report = check_compact(model, net, test_x, data[45.0].test_y)
    assert report.digits == len(test_x) and report.dropped_fired == int(fired.sum())
    assert report.differ == int(differ.sum()) == report.differ_dropped_fired and report.differ_unexplained == 0
    assert report.accuracy_dense == pytest.approx((model(test_x).argmax(1) == data[45.0].test_y).float().mean().item())


def test_costs_count_parameters_and_multiply_adds_against_the_dense_model(study: Path, data):
    assert dense_cost(784, [128, 128], 10) == Cost(parameters=118_282 + 512, macs=118_016 + 256)
    bank = edited_bank(study, closed={0: [0, 1, 2, 3], 1: list(range(8))})
    net = bank.compact("taugate@45", data[45.0].train_x)
    a, b = net.widths
    assert a <= 12 and b <= 8
    assert compact_cost(net) == Cost(
        parameters=784 * a + a + a * b + b + b * 10 + 10 + a + b, macs=784 * a + a * b + b * 10
    )
    report = check_compact(bank.model("taugate@45"), net, data[45.0].test_x)
    assert report.kept == [a, b] and report.units == [16, 16]
    assert report.parameter_ratio == compact_cost(net).parameters / dense_cost(784, [16, 16], 10).parameters < 1
    assert report.mac_ratio == compact_cost(net).macs / dense_cost(784, [16, 16], 10).macs < 1


def test_compact_nets_are_written_with_the_bank_and_read_back(study: Path, bank_dir: Path, data, tmp_path: Path):
    bank = load_bank(bank_dir)
    for name in bank.names:
        angle = bank.mode(name).angle
        stored = bank.load_compact(name)
        fresh = bank.compact(name, data[angle].train_x)  # units chosen on the mode's training digits
        assert [k.tolist() for k in stored.kept] == [k.tolist() for k in fresh.kept]
        with torch.no_grad():
            assert torch.equal(stored(data[angle].test_x), fresh(data[angle].test_x))
        info = json.loads((bank_dir / bank.mode(name).compact / "compact.json").read_text())
        report = check_compact(bank.model(name), fresh, data[angle].test_x, data[angle].test_y).to_dict()
        latency = info["report"].pop("latency")  # a timing: its shape, not its value
        forced = info["report"].pop("forced")  # the subnetwork forced to half the units: a measurement only
        assert info["mode"] == name and info["report"] == report
        at_half = compact(bank.model(name), data[angle].train_x, keep=FORCED_KEEP)
        assert forced == check_compact(bank.model(name), at_half, data[angle].test_x, data[angle].test_y).to_dict() | {
            "keep": 0.5, "rule": FORCED_RULE.format(keep=0.5)
        }  # fmt: skip
        assert forced["kept"] == [8, 8] and forced["units"] == [16, 16] and forced["digits"] == len(data[angle].test_x)
        assert forced["accuracy_dense"] == report["accuracy_dense"] and forced["accuracy_compact"] is not None
        assert sorted(p.name for p in (bank_dir / bank.mode(name).compact).iterdir()) == [
            "compact.json", "compact.safetensors"
        ]  # fmt: skip
        assert report["differ_unexplained"] == 0
        assert set(latency) == {"batch_1", "batch_256"}
        for reading in latency.values():
            assert reading["dense_seconds"] > 0 and reading["compact_seconds"] > 0
            assert reading["ratio"] == pytest.approx(reading["compact_seconds"] / reading["dense_seconds"])

    net = bank.load_compact("taugate@0")
    folder = save_compact(net, tmp_path / "net", {"mode": "taugate@0"})
    with torch.no_grad():
        assert torch.equal(load_compact(folder)(data[0.0].test_x), net(data[0.0].test_x))
    (folder / "compact.safetensors").write_bytes(b"nope")
    with pytest.raises(BankError, match=re.escape(f"{folder / 'compact.safetensors'}: not a readable safetensors")):
        load_compact(folder)
    assert mode_name("gain_only", -30) == "gain_only@m30" and mode_name("taugate", 22.5) == "taugate@22p5"
