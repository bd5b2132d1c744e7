"""PEFT interoperability: an exported adapter loads with real PEFT onto a plain MLP carrying the
foundation's weights and computes the logits our own adapted model computes.

Tolerance: float32 logits agree within rtol = atol = 1e-5. Both sides compute the same products
(LoRA: x A^T B^T * alpha/r; IA3: gain times the next layer's input), only through different kernels
(`x @ A.T` vs `F.linear`), which round differently in the last bits of a 784-term sum; every
convention mismatch (alpha/r vs alpha/sqrt(r), a transposed A or B, a gain before the ReLU, a
tensor PEFT did not load) moves the logits by far more, as the adapters here are random and
non-zero (LoRA's B too) and the gains include negative ones.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import IA3Config, LoraConfig, PeftConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from tests.conftest import FAST
from trainables.config import parse_config
from trainables.engine.trial import run_trial, shared
from trainables.formats.checkpoints import (
    ADAPTER_CONFIG,
    ADAPTER_TENSORS,
    CheckpointError,
    foundation_for,
    load_adapter,
    load_foundation,
    save_adapter,
    save_foundation,
)
from trainables.formats.peft import PEFT_CONFIG, PEFT_TENSORS, ExportError, export_gain_only, export_lora, export_peft
from trainables.methods import adapt
from trainables.model import MLP

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def small_foundation(hidden: list[int]) -> MLP:
    torch.manual_seed(7)
    return MLP(hidden=hidden).eval()


def random_adapter(foundation: MLP, folder: Path, **settings) -> Path:
    """An adapter whose every tensor is random and non-zero (LoRA's B too; gains of both signs)."""
    config = parse_config({**FAST, "hidden": foundation.hidden, **settings})
    model = adapt(foundation, config)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if not tensor.requires_grad:
                continue
            if name.endswith("gamma"):  # gains in [-1.5, 1.5]: negative ones make the ReLU-gain order matter
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 3 - 1.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return save_adapter(model, config, folder)


def logits_agree(foundation: MLP, adapter_folder: Path, peft_folder: Path, digits: torch.Tensor) -> None:
    """PEFT's model on the export computes our adapted model's logits, which differ from the foundation's."""
    ours = load_adapter(foundation, adapter_folder).eval()
    theirs = PeftModel.from_pretrained(copy.deepcopy(foundation), str(peft_folder)).eval()
    with torch.no_grad():
        expected, got, plain = ours(digits), theirs(digits), foundation(digits)
        torch.testing.assert_close(got, expected, **TOLERANCE)
        assert (expected - plain).abs().max() > 1e-2  # the adapter changes the function: the check means something
        # merged into the base weights, PEFT's model still computes the same function
        torch.testing.assert_close(theirs.merge_and_unload()(digits), expected, **TOLERANCE)


@pytest.fixture(scope="module")
def digits(modes) -> torch.Tensor:
    return modes[45.0].test_x[:256].cpu()


@pytest.mark.parametrize(
    ("hidden", "rank", "alpha"),
    [([128, 128], 8, 8.0), ([16, 12, 8], 3, 2.5), ([16, 16], 4, 16.0)],
)
def test_lora_export_loads_in_peft_and_computes_our_logits(tmp_path, digits, hidden, rank, alpha):
    foundation = small_foundation(hidden)
    adapter = random_adapter(foundation, tmp_path / "ours", method="lora", lora_rank=rank, lora_alpha=alpha)
    assert export_lora(adapter, tmp_path / "peft") == tmp_path / "peft"
    logits_agree(foundation, adapter, tmp_path / "peft", digits)


@pytest.mark.parametrize("hidden", [[128, 128], [16, 12, 8]])
def test_gain_only_export_is_ia3_on_the_next_layers_input(tmp_path, digits, hidden):
    foundation = small_foundation(hidden)
    adapter = random_adapter(foundation, tmp_path / "ours", method="gain_only")
    export_gain_only(adapter, tmp_path / "peft")
    logits_agree(foundation, adapter, tmp_path / "peft", digits)
    config = PeftConfig.from_pretrained(str(tmp_path / "peft"))
    targets = {f"layers.{i + 1}" for i in range(len(hidden))}
    assert config.peft_type == "IA3" and set(config.target_modules) == set(config.feedforward_modules) == targets


@pytest.mark.parametrize("method", ["lora", "gain_only"])
def test_a_trained_adapter_exports_through_export_peft(tmp_path, foundation, digits, method):
    run_trial({**FAST, "method": method}, shared(foundation), artifact_dir=tmp_path)
    export_peft(tmp_path / "adapter", tmp_path / "peft")
    logits_agree(foundation, tmp_path / "adapter", tmp_path / "peft", digits)


@pytest.mark.parametrize("method", ["lora", "gain_only"])
def test_export_names_tensors_and_config_as_peft_saves_them(tmp_path, method):
    """The files match those PEFT itself writes for the same adapter on the MLP: same keys, shapes, settings."""
    foundation = small_foundation([16, 16])
    adapter = random_adapter(foundation, tmp_path / "ours", method=method, lora_rank=4, lora_alpha=8.0)
    export_peft(adapter, tmp_path / "export")
    if method == "lora":
        reference = LoraConfig(r=4, lora_alpha=8, target_modules=["layers.0", "layers.1", "layers.2"])
    else:
        reference = IA3Config(target_modules=["layers.1", "layers.2"], feedforward_modules=["layers.1", "layers.2"])
    get_peft_model(copy.deepcopy(foundation), reference).save_pretrained(str(tmp_path / "reference"))

    ours, theirs = (load_file(str(tmp_path / folder / PEFT_TENSORS)) for folder in ("export", "reference"))
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    written, saved = (json.loads((tmp_path / folder / PEFT_CONFIG).read_text()) for folder in ("export", "reference"))
    assert set(written) <= set(saved)  # only fields this PEFT knows (an older one refuses unknown fields)
    for field in set(written) - {"target_modules", "feedforward_modules"}:
        assert written[field] == saved[field], field
    for field in {"target_modules", "feedforward_modules"} & set(written):
        assert sorted(written[field]) == sorted(saved[field])


def test_the_export_tells_where_it_came_from(tmp_path):
    foundation = small_foundation([16, 16])
    adapter = random_adapter(foundation, tmp_path / "ours", method="lora", lora_rank=4, seed=3)
    export_lora(adapter, tmp_path / "peft", base_model_name_or_path="foundations/abc123.safetensors")
    assert json.loads((tmp_path / "peft" / PEFT_CONFIG).read_text())["base_model_name_or_path"] == (
        "foundations/abc123.safetensors"
    )
    from safetensors import safe_open

    with safe_open(str(tmp_path / "peft" / PEFT_TENSORS), "pt") as file:
        metadata = file.metadata()
    assert metadata == {"format": "pt", "taugate_method": "lora", "taugate_hidden": "[16, 16]", "taugate_seed": "3"}


def test_exporting_leaves_the_callers_random_state_alone(tmp_path):
    adapter = random_adapter(small_foundation([16, 16]), tmp_path / "ours", method="lora", lora_rank=4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    export_lora(adapter, tmp_path / "peft")
    assert torch.equal(torch.rand(3), expected)


def test_the_module_does_not_import_peft():
    code = "import sys, trainables.formats.peft; assert 'peft' not in sys.modules, 'peft imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


# --- what cannot be exported ---


@pytest.mark.parametrize("method", ["taugate", "threshold_only"])
def test_a_threshold_gate_has_no_peft_equivalent(tmp_path, method):
    adapter = random_adapter(small_foundation([16, 16]), tmp_path / "ours", method=method)
    for export in (export_gain_only, export_peft):
        with pytest.raises(ExportError, match=rf"method '{method}'.*threshold gate.*no PEFT equivalent"):
            export(adapter, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()  # nothing half-written


@pytest.mark.parametrize("method", ["frozen", "bitfit", "full"])
def test_methods_without_a_peft_adapter_type_are_refused_by_name(tmp_path, method):
    adapter = random_adapter(small_foundation([16, 16]), tmp_path / "ours", method=method)
    for export in (export_lora, export_gain_only, export_peft):
        with pytest.raises(ValueError, match=f"cannot export method '{method}' to PEFT"):
            export(adapter, tmp_path / "peft")


def test_each_exporter_points_to_the_other_for_its_method(tmp_path):
    foundation = small_foundation([16, 16])
    lora = random_adapter(foundation, tmp_path / "lora", method="lora", lora_rank=4)
    gains = random_adapter(foundation, tmp_path / "gains", method="gain_only")
    with pytest.raises(ExportError, match="method 'lora'.*export_lora"):
        export_gain_only(lora, tmp_path / "peft")
    with pytest.raises(ExportError, match="method 'gain_only'.*export_gain_only"):
        export_lora(gains, tmp_path / "peft")


def test_the_export_never_overwrites_its_source(tmp_path):
    adapter = random_adapter(small_foundation([16, 16]), tmp_path / "ours", method="lora", lora_rank=4)
    before = (adapter / ADAPTER_CONFIG).read_text()
    with pytest.raises(ExportError, match="overwrite"):
        export_lora(adapter, adapter)
    assert (adapter / ADAPTER_CONFIG).read_text() == before


# --- a missing or damaged adapter folder: CheckpointError naming the file ---


def test_a_missing_folder_names_its_config_file(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / 'nowhere' / ADAPTER_CONFIG}: file not found")):
        export_lora(tmp_path / "nowhere", tmp_path / "peft")


@pytest.mark.parametrize(
    ("damage", "file", "reason"),
    [
        (lambda folder: (folder / ADAPTER_CONFIG).write_text("{not json"), ADAPTER_CONFIG, "not valid JSON"),
        (lambda folder: (folder / ADAPTER_CONFIG).write_text("[1, 2]"), ADAPTER_CONFIG, "invalid adapter config"),
        (lambda folder: _edit_config(folder, hidden="wide"), ADAPTER_CONFIG, "invalid adapter config"),
        (lambda folder: _edit_config(folder, lora_rank=-1), ADAPTER_CONFIG, "invalid adapter config"),
        (lambda folder: (folder / ADAPTER_TENSORS).unlink(), ADAPTER_TENSORS, "file not found"),
        (lambda folder: _truncate(folder / ADAPTER_TENSORS), ADAPTER_TENSORS, "not a readable safetensors file"),
        (
            lambda folder: _drop_tensor(folder, "layers.1.lora_B"),
            ADAPTER_TENSORS,
            r"tensors \[.*\] do not match method 'lora'",
        ),
        (lambda folder: _edit_config(folder, hidden=[16, 32]), ADAPTER_TENSORS, "shapes do not fit"),
    ],
    ids=["bad-json", "not-an-object", "bad-hidden", "bad-rank", "no-tensors", "truncated", "missing-tensor", "shapes"],
)
def test_a_damaged_adapter_folder_names_the_file(tmp_path, damage, file, reason):
    adapter = random_adapter(small_foundation([16, 16]), tmp_path / "ours", method="lora", lora_rank=4)
    damage(adapter)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(adapter / file))}: {reason}"):
        export_peft(adapter, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()


def _edit_config(folder: Path, **changes) -> None:
    path = folder / ADAPTER_CONFIG
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _drop_tensor(folder: Path, name: str) -> None:
    tensors = load_file(str(folder / ADAPTER_TENSORS))
    del tensors[name]
    save_file(tensors, str(folder / ADAPTER_TENSORS))


# ------------------------------------------------------------------------------------------
# The README's PEFT snippet on a real trial: which foundation an adapter belongs to, loaded from a
# string path without its widths, exported, and loaded by real PEFT.


def lora_trial(study_dir: Path) -> Path:
    """The folder of a LoRA trial of a finished study (its ledger's config.json names the method)."""
    configs = sorted((study_dir / "trials").glob("*/config.json"))
    return next(c.parent for c in configs if json.loads(c.read_text())["config"]["method"] == "lora")


@pytest.fixture(scope="module")
def study_adapter(smoke_study) -> Path:
    """A LoRA trial's adapter in the session's smoke study (configs/smoke.yaml)."""
    return lora_trial(smoke_study) / "adapter"


def readme_snippet(adapter: str, out: str, digits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The README's block, word for word in spirit: every path a string, no widths given."""
    foundation_path = str(foundation_for(adapter))
    export_peft(adapter, out)
    peft_model = PeftModel.from_pretrained(load_foundation(foundation_path), out).eval()
    ours = load_adapter(load_foundation(foundation_path), adapter).eval()
    with torch.no_grad():
        return peft_model(digits), ours(digits)


def test_a_study_trials_adapter_names_its_foundation_and_loads_in_peft_from_string_paths(study_adapter, tmp_path,
                                                                                         digits):  # fmt: skip
    study_dir = study_adapter.parent.parent.parent
    record = json.loads((study_adapter / ADAPTER_CONFIG).read_text())["foundation"]
    found = foundation_for(str(study_adapter))
    trial_config = parse_config(json.loads((study_adapter.parent / "config.json").read_text()))
    assert found == study_dir / "foundations" / f"{trial_config.foundation_id()}.safetensors" and found.is_file()
    assert record == {"file": found.name, "sha256": hashlib.sha256(found.read_bytes()).hexdigest()}
    assert load_foundation(str(found)).hidden == trial_config.hidden  # read from the tensors
    theirs, ours = readme_snippet(str(study_adapter), str(tmp_path / "peft"), digits)
    torch.testing.assert_close(theirs, ours, **TOLERANCE)
    plain = load_foundation(str(found)).eval()(digits)
    assert (ours - plain).abs().max() > 1e-3  # the adapter is trained: the comparison means something


def test_taugate_trial_artifacts_keep_the_foundation_the_adapter_needs(tmp_path, digits):
    from tests.support.cli import taugate

    artifacts = tmp_path / "artifacts"
    result = taugate("trial", "--method", "gain_only", "--device", "cpu", "--config", str(tiny_config(tmp_path)),
                     "--artifacts", str(artifacts))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert foundation_for(str(artifacts / "adapter")) == artifacts / "foundation.safetensors"
    theirs, ours = readme_snippet(str(artifacts / "adapter"), str(tmp_path / "peft"), digits)
    torch.testing.assert_close(theirs, ours, **TOLERANCE)


def test_a_missing_or_replaced_foundation_is_a_clear_error_naming_both_files(tmp_path):
    artifacts = tmp_path / "artifacts"
    run_trial({**FAST, "method": "lora", "hidden": [8]}, artifact_dir=artifacts)
    foundation, adapter = artifacts / "foundation.safetensors", artifacts / "adapter"
    save_foundation(small_foundation([8]), foundation)  # retrained: same shape, other weights
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(foundation))}: sha256 \w+ is not the \w+ recorded "
                                              rf"in {re.escape(str(adapter / ADAPTER_CONFIG))}"):  # fmt: skip
        foundation_for(adapter)
    foundation.unlink()
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(foundation))}: file not found \(the foundation of "
                                              rf"the adapter {re.escape(str(adapter))}\)"):  # fmt: skip
        foundation_for(str(adapter))


def tiny_config(folder: Path) -> Path:
    path = folder / "tiny.json"
    path.write_text(json.dumps({"foundation_epochs": 1, "epochs": 1, "hidden": [16, 8]}))
    return path
