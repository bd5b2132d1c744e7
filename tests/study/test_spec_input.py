"""Bad spec input: every malformed spec is a `SpecError` naming the field, never a crash.

A study spec is typed by hand, so anything can arrive: wrong types, out-of-range numbers,
typos in keys, broken YAML, a list where a mapping belongs. The spec loader must turn each
into one `SpecError` whose message names the field (`<file>: <field.path>: <reason>`), and
the CLI must print it and exit 2 without a traceback and without creating the study folder.
The table below is the specification; the hypothesis fuzz checks the "never a crash" part on
inputs nobody thought of, and a spec that does load must give only valid trial configs.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.spec.axes import FoundationSpec, MethodSpec, ProtocolSpec, Resources
from study.spec.calibration_spec import CalibrateSpec, NextStudy
from study.spec.loader import MAX_SPEC_BYTES, SpecError, load_spec, parse_spec
from study.spec.plan import summary, trial_config, variants
from study.spec.search_space import PLAIN_OBJECTIVES, Objective, Range, SearchSpec
from study.spec.study_spec import StudySpec
from tests.support.cli import assert_spec_refused, taugate
from tests.support.paths import CONFIGS
from trainables import registry
from trainables.config import angle_key


def spec_text(*lines: str, name: str = "x", methods: str = "{frozen: {}}") -> str:
    """A minimal valid spec plus `lines` (each one top-level YAML line)."""
    return "\n".join([f"name: {name}", f"methods: {methods}", *lines]) + "\n"


# (case id, spec file text, text the error message must contain: the field path or the problem)
MALFORMED = [
    # wrong types
    ("seeds-a-string", spec_text("seeds: abc"), "seeds"),
    ("epochs-a-word", spec_text("epochs: five"), "epochs"),
    ("methods-a-list", "name: x\nmethods: [taugate, lora]\n", "methods"),
    ("foundation-a-number", spec_text("foundation: 3"), "foundation"),
    ("angle-not-a-number", spec_text("angles: [0, forty-five]", "target_angle: 0"), "angles.1"),
    ("axis-a-scalar-not-a-list", spec_text(methods="{taugate: {gate_sharpness: 10}}"), "gate_sharpness"),
    ("name-a-list", spec_text(name="[a, b]"), "name"),
    ("bool-not-a-bool", spec_text("reuse_actors: maybe"), "reuse_actors"),
    # out-of-range values
    ("epochs-negative", spec_text("epochs: -1"), "epochs"),
    ("batch_size-zero", spec_text("batch_size: 0"), "batch_size"),
    ("foundation-lr-zero", spec_text("foundation: {lr: 0}"), "foundation.lr"),
    ("foundation-lr-negative", spec_text("foundation: {lr: -0.001}"), "foundation.lr"),
    ("foundation-batch_size-zero", spec_text("foundation: {batch_size: 0}"), "foundation.batch_size"),
    ("foundation-hidden-width-zero", spec_text("foundation: {hidden: [128, 0]}"), "hidden"),
    ("foundation-weights-one-per-angle", spec_text("foundation: {weights: [1]}"), "weights"),
    ("method-lr-zero", spec_text(methods="{taugate: {lr: 0}}"), "methods.taugate.lr"),
    ("lora_alpha-negative", spec_text(methods="{lora: {lora_alpha: [-1]}}"), "lora_alpha"),
    ("resources-cpu-zero", spec_text("resources: {cpu: 0}"), "resources.cpu"),
    ("resources-gpu-negative", spec_text("resources: {gpu: -1}"), "resources.gpu"),
    ("max_failures-negative", spec_text("max_failures: -1"), "max_failures"),
    ("max_concurrent_trials-zero", spec_text("max_concurrent_trials: 0"), "max_concurrent_trials"),
    ("max_trials-zero", spec_text("max_trials: 0"), "max_trials"),
    ("num_samples-zero", spec_text("search: {kind: optuna, num_samples: 0}"), "search.num_samples"),
    ("sharpness-nan", spec_text(methods="{taugate: {gate_sharpness: [.nan]}}"), "gate_sharpness"),
    ("angle-infinite", spec_text("angles: [0, .inf]", "target_angle: 0"), "angles.1"),
    ("float-overflows-to-infinity", spec_text("foundation: {lr: 1.0e+999}"), "foundation.lr"),
    # unknown keys, top level and nested
    ("unknown-top-level-key", spec_text("epoch: 3"), "epoch: unknown field"),
    ("typo-in-method-axis", spec_text(methods="{taugate: {gate_sharpnes: [10]}}"), "methods.taugate.gate_sharpnes"),
    ("typo-in-foundation", spec_text("foundation: {hiden: [64]}"), "foundation.hiden"),
    ("typo-in-search", spec_text("search: {kinds: grid}"), "search.kinds"),
    ("unknown-resource", spec_text("resources: {memory: 4}"), "resources.memory"),
    ("non-string-key", spec_text("1: 2"), "Keys should be strings"),
    # YAML syntax errors
    ("yaml-unclosed-brace", "name: x\nmethods: {frozen: {}\n", "YAML syntax error"),
    ("yaml-tab-indent", "name: x\nmethods:\n\tfrozen: {}\n", "YAML syntax error"),
    ("yaml-bad-indent", "name: x\n  methods: {frozen: {}}\n", "YAML syntax error"),
    ("yaml-python-tag", spec_text("device: !!python/object:os.system {}"), "YAML syntax error"),
    ("yaml-nested-too-deeply", "name: x\nmethods: " + "[" * 5000 + "]" * 5000 + "\n", "YAML syntax error"),
    # empty lists
    ("seeds-empty", spec_text("seeds: []"), "seeds"),
    ("angles-empty", spec_text("angles: []"), "angles"),
    ("axis-empty", spec_text(methods="{taugate: {gate_sharpness: []}}"), "methods.taugate.gate_sharpness"),
    ("methods-empty", "name: x\nmethods: {}\n", "methods"),
    ("hidden-empty", spec_text("foundation: {hidden: []}"), "foundation.hidden"),
    ("objectives-empty", spec_text("search: {objectives: []}"), "search.objectives"),
    # duplicates
    ("seeds-duplicate", spec_text("seeds: [0, 1, 0]"), "seeds: duplicate seeds"),
    ("method-seeds-duplicate", spec_text(methods="{taugate: {seeds: [1, 1]}}"), "methods.taugate.seeds"),
    ("axis-duplicate", spec_text(methods="{taugate: {gate_sharpness: [10, 10.0]}}"), "gate_sharpness"),
    ("angles-duplicate", spec_text("angles: [0, 45, 45]"), "angles: duplicate angle"),
    # a key given twice (plain YAML keeps the last silently), at the top level and nested
    ("duplicate-key-top-level", spec_text("seeds: [0]", "seeds: [1]"), "duplicate key 'seeds' at line 4"),
    (
        "duplicate-key-nested",
        "name: x\nmethods:\n  taugate:\n    gate_sharpness: [3]\n    lr: 0.1\n    gate_sharpness: [10]\n",
        "duplicate key 'gate_sharpness' at line 6, column 5 (first given at line 4)",
    ),  # fmt: skip
    ("duplicate-key-flow-mapping", spec_text("foundation: {epochs: 1, epochs: 2}"), "duplicate key 'epochs'"),
    ("duplicate-method", "name: x\nmethods:\n  lora: {}\n  frozen: {}\n  lora: {lora_rank: [4]}\n", "'lora' at line 5"),
    # unknown names
    ("unknown-method", "name: x\nmethods: {dropout: {}}\n", "dropout"),
    ("unknown-objective", spec_text("search: {objectives: [{metric: speed, mode: max}]}"), "speed"),
    ("unknown-objective-mode", spec_text("search: {objectives: [{metric: acc_45, mode: maximise}]}"), "mode"),
    # objectives select, so they read validation metrics of the study's own angles and methods
    ("objective-reads-test", spec_text("search: {objectives: [{metric: acc_45, mode: max}]}"), "use val_acc_45"),
    ("objective-unknown-angle", spec_text("search: {objectives: [{metric: val_acc_30, mode: max}]}"), "val_acc_30"),
    (
        "objective-hard-on-ungated-method",
        spec_text(
            "search: {kind: optuna, objectives: [{metric: val_acc_45_hard, mode: max}]}",
            methods="{taugate: {}, lora: {}}",
        ),
        "only for gated methods, not lora",
    ),  # fmt: skip
    # the protocol axes
    ("protocol-unknown-axis", spec_text("protocol: {lr: [0.1]}"), "protocol.lr: unknown field"),
    ("protocol-empty-axis", spec_text("protocol: {epochs: []}"), "protocol.epochs"),
    ("protocol-negative-epochs", spec_text("protocol: {epochs: [-1]}"), "epochs must be >= 0"),
    ("protocol-zero-lr-scale", spec_text("protocol: {lr_scale: [0]}"), "protocol.lr_scale"),
    ("protocol-duplicate", spec_text("protocol: {lr_scale: [0.1, 0.1]}"), "duplicate values"),
    ("protocol-and-single-epochs", spec_text("epochs: 2", "protocol: {epochs: [1, 2]}"), "give it once"),
    (
        "protocol-and-method-epochs",
        spec_text("protocol: {epochs: [1, 2]}", methods="{bitfit: {epochs: 3}}"),
        "methods.bitfit.epochs",
    ),  # fmt: skip
    ("protocol-with-optuna", spec_text("search: {kind: optuna}", "protocol: {epochs: [1, 2]}"), "search kind grid"),
    ("val-fraction-one", spec_text("val_fraction: 1"), "val_fraction"),
    ("calibrate-unknown-field", spec_text("calibrate: {target: 0.28}"), "calibrate.target"),
    ("calibrate-sparsity-target-above-one", spec_text("calibrate: {sparsity_target: 28}"), "calibrate.sparsity_target"),
    ("unknown-search-kind", spec_text("search: {kind: random}"), "search.kind"),
    ("unknown-dataset", spec_text("dataset: cifar10"), "dataset"),
    ("unknown-device", spec_text("device: tpu"), "device"),
    ("unknown-range-axis", spec_text("search: {ranges: {lora_alpha: {low: 1, high: 2}}}"), "search.ranges"),
    # search ranges
    ("log-range-low-zero", spec_text("search: {ranges: {gate_sharpness: {low: 0, high: 10, log: true}}}"), "log"),
    (
        "range-low-equals-high",
        spec_text("search: {ranges: {sparsity_weight: {low: 1, high: 1}}}"),
        "low must be < high",
    ),
    ("range-low-above-high", spec_text("search: {ranges: {lora_rank: {low: 8, high: 2}}}"), "search.ranges.lora_rank"),
    # study name
    ("name-with-space", spec_text(name="'my study'"), "name"),
    ("name-with-slash", spec_text(name="a/b"), "name"),
    ("name-empty", spec_text(name="''"), "name"),
    ("name-missing", "methods: {frozen: {}}\n", "name: Field required"),
    # angles, axes, seeds
    ("target_angle-not-an-angle", spec_text("target_angle: 30"), "target_angle"),
    ("axis-the-method-does-not-use", spec_text(methods="{lora: {sparsity_weight: [0.1]}}"), "lora.sparsity_weight"),
    ("lora-axis-on-a-baseline", spec_text(methods="{frozen: {lora_rank: [4]}}"), "frozen.lora_rank"),
    ("seeds-negative", spec_text("seeds: [-1]"), "seeds must be >= 0"),
    ("method-seeds-negative", spec_text(methods="{taugate: {seeds: [-1]}}"), "methods.taugate.seeds"),
    # numbers beyond what torch, JSON tables and pandas hold (64-bit signed integers)
    ("seed-2-to-the-64", spec_text("seeds: [0, 18446744073709551616]"), "seeds: must be < 2**63"),
    ("seed-2-to-the-63", spec_text("seeds: [9223372036854775808]"), "seeds: must be < 2**63"),
    (
        "method-seed-2-to-the-64",
        spec_text(methods="{taugate: {seeds: [18446744073709551616]}}"),
        "methods.taugate.seeds",
    ),
    ("method-seed-2-to-the-63", spec_text(methods="{lora: {seeds: [0, 9223372036854775808]}}"), "methods.lora.seeds"),
    ("hidden-width-2-to-the-64", spec_text("foundation: {hidden: [18446744073709551616]}"), "foundation.hidden"),
    (
        "lora-rank-2-to-the-63",
        spec_text(methods="{lora: {lora_rank: [9223372036854775808]}}"),
        "methods.lora.lora_rank",
    ),
    ("epochs-2-to-the-64", spec_text("epochs: 18446744073709551616"), "epochs: must be < 2**63"),
    # search ranges must only suggest values the trial contract accepts
    ("range-sharpness-from-zero", spec_text("search: {ranges: {gate_sharpness: {low: 0, high: 10}}}"), "s > 0"),
    ("range-lambda-negative", spec_text("search: {ranges: {sparsity_weight: {low: -1, high: 1}}}"), "lambda >= 0"),
    (
        "range-rank-below-one",
        spec_text("search: {ranges: {lora_rank: {low: 0.5, high: 8}}}"),
        "lora_rank: low must be >= 1",
    ),
    # not a mapping at all
    ("empty-file", "", "expected a mapping"),
    ("only-a-comment", "# nothing here\n", "expected a mapping"),
    ("yaml-list", "- name: x\n- methods: {frozen: {}}\n", "expected a mapping"),
    ("yaml-scalar", "just a sentence\n", "expected a mapping"),
    # the modes axis: targets among the evaluated angles, lists non-empty and without duplicates
    ("target-not-evaluated", spec_text("target_angle: 90"), "target_angle: 90 is not an evaluated angle"),
    ("target-axis-not-evaluated", spec_text("eval_angles: [90]", "target_angle: [0, 90, 135]"), "target_angle.2: 135"),
    ("target-axis-empty", spec_text("target_angle: []"), "target_angle: an empty list"),
    ("target-axis-duplicate", spec_text("target_angle: [0, 45, 0]"), "target_angle: duplicate target angles"),
    ("eval-angles-empty", spec_text("eval_angles: []"), "eval_angles"),
    ("eval-angles-duplicate", spec_text("eval_angles: [90, 90]"), "eval_angles: duplicate angles"),
    ("eval-angle-not-a-number", spec_text("eval_angles: [ninety]"), "eval_angles.0"),
    (
        "target-axis-with-optuna",
        spec_text("target_angle: [0, 45]", "search: {kind: optuna}", methods="{taugate: {}}"),
        "several target angles need search kind grid",
    ),  # fmt: skip
    (
        "target-axis-with-calibration",
        spec_text("target_angle: [0, 45]", "calibrate: {reference: paper}"),
        "calibrate: a calibration against a reference table needs one target_angle",
    ),  # fmt: skip
    ("yaml-number", "42\n", "expected a mapping"),
]


@pytest.mark.parametrize(("text", "field"), [pytest.param(t, f, id=i) for i, t, f in MALFORMED])
def test_malformed_spec_is_a_spec_error_naming_the_field(text, field, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:  # any other exception type fails the test
        load_spec(path)
    assert type(caught.value) is SpecError
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert field in message, message


# One CLI round per kind of mistake (each call starts a process, ~3 s): the same message, exit 2, nothing written.
CLI_CASES = ["epochs-a-word", "typo-in-method-axis", "yaml-tab-indent", "method-seeds-negative", "empty-file",
             "duplicate-key-nested", "seed-2-to-the-64", "target-axis-not-evaluated", "target-axis-empty"]  # fmt: skip


@pytest.mark.parametrize(("text", "field"), [pytest.param(t, f, id=i) for i, t, f in MALFORMED if i in CLI_CASES])
def test_cli_refuses_a_malformed_spec_with_exit_2_and_writes_nothing(text, field, tmp_path):
    assert_spec_refused(text, field, tmp_path)


def test_cli_case_ids_exist():
    assert set(CLI_CASES) <= {case_id for case_id, _, _ in MALFORMED}


# ---- round trip -------------------------------------------------------------------------------

RICH_SPEC = {
    "name": "round.trip-1",
    "angles": [0, 22.5, 45],
    "target_angle": 22.5,
    "foundation": {"hidden": [64, 32], "lr": 0.002, "weights": [1, 2, 1]},
    "seeds": [3, 1],
    "methods": {
        "frozen": {},
        "taugate": {"gate_sharpness": [1, 10], "sparsity_weight": [0, 0.001], "seeds": [7], "lr": 0.01},
        "lora": {"lora_rank": [2, 8], "lora_alpha": [16], "epochs": 3},
    },
    "protocol": {"lr_scale": [0.1, 1.0], "foundation_epochs": [1, 2]},
    "calibrate": {"held_out": ["taugate"], "sparsity_target": 0.3, "next": {"seeds": [0, 1, 2]}},
    "search": {
        "kind": "grid",  # per-method lists and protocol axes are grid features; Optuna fields still round-trip
        "num_samples": 7,
        "objectives": [{"metric": "val_acc_45", "mode": "max"}, {"metric": "trainable_params", "mode": "min"}],
        "ranges": {"gate_sharpness": {"low": 0.5, "high": 50, "log": True}},
        "study_name": "rt",
    },
    "resources": {"cpu": 0.5, "gpu": 0.25},
    "max_concurrent_trials": 4,
    "reuse_actors": False,
    "max_failures": 0,
    "storage_path": "/shared/studies",
    "experiment_name": "exp",
}


@pytest.mark.parametrize("source", ["rich", *sorted(p.name for p in CONFIGS.glob("*.yaml"))])
def test_a_valid_spec_dumped_back_to_yaml_loads_to_an_equal_spec(source, tmp_path):
    spec = parse_spec(RICH_SPEC) if source == "rich" else load_spec(CONFIGS / source)
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(spec.dump()))
    assert load_spec(path) == spec


# ---- fuzz: never anything but a StudySpec or a SpecError --------------------------------------

SPEC_MODELS = (StudySpec, FoundationSpec, MethodSpec, SearchSpec, Objective, Range, Resources, ProtocolSpec,
               CalibrateSpec, NextStudy)  # fmt: skip
FIELD_NAMES = sorted({field for model in SPEC_MODELS for field in model.model_fields})
WORDS = [
    *FIELD_NAMES,
    *registry.names(),
    *PLAIN_OBJECTIVES,
    "val_acc_45",
    "acc_45",
    "grid",
    "optuna",
    "max",
    "min",
    "mnist5k",
    "cpu",
    "cuda",
]

# Numbers are mostly in range (so that a changed spec often still loads), with edge cases and anything.
integers = st.one_of(st.integers(0, 50), st.integers(0, 50), st.sampled_from([0, -1, 10**30, 2**64]), st.integers())
reals = st.one_of(
    st.floats(0.001, 100),
    st.integers(0, 50),
    st.sampled_from([0.0, -0.0, -1.5, float("nan"), float("inf"), float("-inf"), 1e308]),
    st.floats(),
)
numbers = integers | reals
scalars = st.none() | st.booleans() | numbers | st.text(max_size=12) | st.sampled_from(WORDS)
keys = st.sampled_from(WORDS) | st.text(max_size=10) | st.integers() | st.booleans() | st.none() | st.floats()
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)

INTEGER_FIELDS = {"seeds", "hidden", "lora_rank", "epochs", "batch_size", "num_samples", "max_concurrent_trials",
                  "max_failures", "max_trials"}  # fmt: skip
LIST_FIELDS = {"seeds", "angles", "eval_angles", "hidden", "weights", "gate_sharpness", "sparsity_weight", "lora_rank",
               "lora_alpha"}  # fmt: skip
TEXT_FIELDS = {"name", "dataset", "data_root", "device", "kind", "metric", "mode", "study_name", "storage_path",
               "tracking_uri", "experiment_name"}  # fmt: skip


def value_for(field: str) -> st.SearchStrategy:
    """Mostly the kind of value the field expects (often out of range), sometimes anything at all."""
    number = integers if field in INTEGER_FIELDS else reals
    if field in LIST_FIELDS:
        expected = st.lists(number, min_size=1, max_size=4, unique=True)
    elif field in TEXT_FIELDS:
        expected = st.sampled_from(WORDS) | st.text(max_size=12)
    elif field in ("log", "reuse_actors"):
        expected = st.booleans()
    else:
        expected = number
    return st.one_of(expected, expected, expected, expected, expected, anything)


VALID = {
    "name": "fuzz",
    "seeds": [0, 1],
    "methods": {"frozen": {}, "taugate": {"gate_sharpness": [10]}, "lora": {"lora_rank": [4]}},
    "search": {"objectives": [{"metric": "val_acc_45", "mode": "max"}], "ranges": {"lora_rank": {"low": 1, "high": 8}}},
}
# where a field can be set (a path into the spec) and the model that defines the fields there
SECTIONS = [
    ((), StudySpec),
    (("foundation",), FoundationSpec),
    (("search",), SearchSpec),
    (("search", "objectives", 0), Objective),
    (("search", "ranges", "lora_rank"), Range),
    (("resources",), Resources),
    *((("methods", method), MethodSpec) for method in registry.names()),
]


@st.composite
def near_valid_specs(draw) -> dict:
    """A valid spec with one or two fields (or a typo-like key) set to a plausible or arbitrary value."""
    spec = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 2))):
        where, model = draw(st.sampled_from(SECTIONS))
        typo = draw(st.integers(0, 7)) == 0
        key = draw(st.text(max_size=6) if typo else st.sampled_from(sorted(model.model_fields)))
        node = walk(spec, where)
        if isinstance(node, dict):
            node[key] = draw(value_for(key))
    return spec


def walk(node, where: tuple) -> object:
    """The node at `where` (creating missing mappings), or None where an earlier change broke the path."""
    for part in where:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node


def assert_spec_or_spec_error(load) -> None:
    """`load()` gives a StudySpec whose every trial config is valid, or raises SpecError: nothing else."""
    try:
        spec = load()
    except SpecError:
        return
    assert isinstance(spec, StudySpec)
    summary(spec)  # counted, not listed: it checks no trial config
    for variant in variants(spec):  # every grid trial's config passes the trial contract (ConfigError otherwise)
        trial_config(spec, variant)
    for angle in spec.angles:
        angle_key(angle)  # each angle can name its metrics


FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FILE_FUZZ = settings(FUZZ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(raw=anything | st.dictionaries(keys, anything, max_size=8))
def test_fuzz_parse_spec_on_arbitrary_structures(raw):
    assert_spec_or_spec_error(lambda: parse_spec(raw))


@settings(FILE_FUZZ, max_examples=1000)  # the richest source of specs that load: worth more examples
@given(raw=near_valid_specs())
def test_fuzz_near_valid_specs_through_a_yaml_file(raw, tmp_path):
    assert_spec_or_spec_error(lambda: parse_spec(raw))
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert_spec_or_spec_error(lambda: load_spec(path))


YAMLISH = st.text(
    alphabet=st.sampled_from(list("{}[]:-,&*!|>'\"#%?@` \n\t.01xyz")) | st.characters(codec="utf-8"), max_size=80
)


@FILE_FUZZ
@given(data=st.text(max_size=200).map(str.encode) | YAMLISH.map(str.encode) | st.binary(max_size=200))
def test_fuzz_load_spec_on_arbitrary_text(data, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    assert_spec_or_spec_error(lambda: load_spec(path))


def test_plan_warns_when_the_grid_exceeds_max_trials_and_run_would_need_yes(tmp_path):
    """4 trials (2 methods x 2 seeds) against max_trials 3: `plan` still shows the plan (exit 0, JSON on
    stdout intact) and warns on stderr with the count, the limit and the ways out; `run` then refuses it."""
    spec = tmp_path / "big.yaml"
    spec.write_text(spec_text("seeds: [0, 1]", "max_trials: 3", methods="{frozen: {}, bitfit: {}}"))
    for args in (["plan", str(spec)], ["plan", str(spec), "--json"]):
        result = taugate(*args)
        assert result.returncode == 0, result.stderr
        warning = " ".join(result.stderr.split())
        assert "warning: 4 trials, more than max_trials=3" in warning, result.stderr
        assert "`taugate run` refuses this spec unless given --yes" in warning and "raise max_trials" in warning
    assert json.loads(result.stdout)["trials"] == 4
    refused = taugate("run", str(spec), "--output", str(tmp_path / "study"))
    assert refused.returncode == 2 and "max_trials" in refused.stderr and "--yes" in refused.stderr

    spec.write_text(spec_text("seeds: [0, 1]", "max_trials: 4", methods="{frozen: {}, bitfit: {}}"))
    within = taugate("plan", str(spec))
    assert within.returncode == 0 and "warning" not in within.stderr and "max_trials" not in within.stderr


# ---- size ---------------------------------------------------------------------------------------


def padded_spec(size: int) -> str:
    """A valid spec of exactly `size` bytes (a YAML comment fills it)."""
    text = spec_text("seeds: [0, 1]")
    return text + "#" + "x" * (size - len(text) - 2) + "\n"


def test_a_spec_of_64_kib_loads_and_one_byte_more_is_refused_before_parsing(tmp_path):
    path = tmp_path / "padded.yaml"
    path.write_text(padded_spec(MAX_SPEC_BYTES))
    assert path.stat().st_size == MAX_SPEC_BYTES == 65_536
    assert load_spec(path).seeds == [0, 1]
    path.write_text(padded_spec(MAX_SPEC_BYTES + 1))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: 65,537 bytes; a spec holds at most 65,536 bytes (64 KiB): list "
                                        "fewer values")  # fmt: skip


def test_a_spec_on_standard_input_is_held_to_the_same_size(tmp_path):
    within = taugate("plan", "-", "--json", input=padded_spec(MAX_SPEC_BYTES))
    assert within.returncode == 0 and json.loads(within.stdout)["trials"] == 2, within.stderr
    refused = taugate("plan", "-", "--json", input=padded_spec(MAX_SPEC_BYTES) + "# one line more\n")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "-: more than 65,536 bytes; a spec holds at most 65,536 bytes (64 KiB)" in " ".join(refused.stderr.split())
