"""Grid expansion: the trial configs a spec asks for, conditional per method.

LoRA ranks multiply only LoRA trials, `s` and `lambda` only gated trials; baselines are not
multiplied by axes they ignore. Each variant is the part of a trial config that varies.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import math
from typing import Any

from study.spec.axes import MethodSpec
from study.spec.study_spec import StudySpec
from trainables import registry
from trainables.config import PROTOCOL_FIELDS, TrialConfig, layer_widths, parse_config

# A variant's fields its method sets for itself beyond the study's protocol (`MethodSpec.budget`: TauGate's
# own lr_scale and epochs), listed under this key so the results table keeps the study's protocol in
# its protocol columns and the method's own values in `method_<field>` columns.
OWN = "own"


def config_fields(variant: dict[str, Any]) -> dict[str, Any]:
    """A variant's trial-config fields (without its `OWN` list)."""
    return {k: v for k, v in variant.items() if k != OWN}


def member_config(base: dict[str, Any], variant: dict[str, Any]) -> TrialConfig:
    """The trial config of a variant (or a fused group's member) on the study's shared fields `base`."""
    return parse_config(base | config_fields(variant))


def protocols(spec: StudySpec) -> list[dict[str, Any]]:
    """The protocol grid: one dict of the swept protocol fields per protocol ([{}] when none is swept)."""
    axes = spec.protocol.axes()
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def variants(spec: StudySpec) -> list[dict[str, Any]]:
    """Every grid trial's varying fields (the swept protocol fields, the target angle when it is an
    axis, method, seed, the method's own axes, overrides): the protocol grid and the target angles
    multiply every method's grid. Trials of one seed share one foundation whatever their target."""
    out = []
    targets = [{"target_angle": t} for t in spec.target_angles] if isinstance(spec.target_angle, list) else [{}]
    for protocol, target in itertools.product(protocols(spec), targets):
        for name, method in spec.methods.items():
            for grid in method.grids():
                out.extend(_method_grid(spec, name, grid, protocol | target))
    return _unique(out)


def _method_grid(spec: StudySpec, name: str, grid: MethodSpec, fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """One grid of a method: its seeds times its own axes and budget, on the protocol and target `fixed`."""
    fixed, axes = _grid_parts(spec, name, grid, fixed)
    return [fixed | dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _grid_parts(
    spec: StudySpec, name: str, grid: MethodSpec, fixed: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list]]:
    """One grid of a method as what each of its points shares (`fixed`, the method, a per-method lr and its
    `OWN` list) and its axes (seed, the method's own axes and budget): its points are every combination."""
    axes = {"seed": grid.seeds or spec.seeds}
    for axis in registry.get(name).dimensions:
        values = getattr(grid, axis)
        if values is not None:
            axes[axis] = values
    budget = grid.budget()
    axes |= budget
    overrides = {"lr": grid.lr} if grid.lr is not None else {}
    return fixed | {"method": name} | overrides | ({OWN: list(budget)} if budget else {}), axes


def method_trials(spec: StudySpec, name: str) -> int:
    """How many distinct points a method's grids hold together (as `variants` keeps them: a point two grids
    share counts once), counted without listing them: grids whose points set other fields share none; among
    the rest, `_union_size`."""
    shapes: dict[str, list[list[list[str]]]] = {}
    for grid in spec.methods[name].grids():
        fixed, axes = _grid_parts(spec, name, grid, {})
        shape = json.dumps([fixed, list(axes)], sort_keys=True, default=str)
        shapes.setdefault(shape, []).append([[_canonical(v) for v in values] for values in axes.values()])
    return sum(_union_size(boxes) for boxes in shapes.values())


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)  # as `_unique` compares points


def _union_size(boxes: list[list[list[str]]]) -> int:
    """How many points the union of grids (each a list of axes, each axis a list of distinct values, the same
    axes in the same order) holds: split on the first axis, its values grouped by which grids hold them. One
    grid is the product of its axes' lengths."""
    if len(boxes) == 1:
        return math.prod(len(values) for values in boxes[0])
    if not boxes[0]:
        return 1  # every axis fixed: the grids' one point
    holders: dict[str, list[int]] = {}
    for index, box in enumerate(boxes):
        for value in box[0]:
            holders.setdefault(value, []).append(index)
    groups = collections.Counter(tuple(indices) for indices in holders.values())
    return sum(count * _union_size([boxes[i][1:] for i in indices]) for indices, count in groups.items())


def grid_trials(spec: StudySpec) -> dict[str, int]:
    """Per method, how many grid trials `variants` lists for it (the protocol grid and the target angles times
    its own points), counted arithmetically: a grid of millions is counted, and refused, without expanding it."""
    combos = len(protocols(spec)) * len(spec.target_angles)
    return {name: combos * method_trials(spec, name) for name in spec.methods}


def _unique(grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid without repeats (two of a method's grids may share a point, e.g. lambda 0): first kept."""
    seen, out = set(), []
    for variant in grid:
        key = json.dumps(variant, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(variant)
    return out


def fused_groups(spec: StudySpec, grid: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The grid cut into Tune trials: same-shape variants (`trainables.engine.fusable.fuse_key`) in groups of
    at most `spec.fuse`, in grid order; with `fuse: 1` every variant is its own trial."""
    from trainables.engine.fusable import fuse_key

    by_shape: dict[tuple, list[dict[str, Any]]] = {}
    for variant in grid:
        by_shape.setdefault(fuse_key(trial_config(spec, variant)), []).append(variant)
    return [members[i : i + spec.fuse] for members in by_shape.values() for i in range(0, len(members), spec.fuse)]


def longest_first(spec: StudySpec, units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tune trials (variants, or `{"members": [...]}` groups) ordered by expected cost, largest
    first, so that a study does not end on one worker training a slow trial while the others
    idle (longest-processing-time-first scheduling). The estimate is members x epochs x the
    method's trainable parameters (log-scaled): full fine-tuning before LoRA before gates and
    biases. The order changes when trials run, never what they compute."""

    def cost(unit: dict[str, Any]) -> float:
        members = unit.get("members", [unit])
        config = trial_config(spec, members[0])
        return len(members) * config.epochs * (1.0 + math.log1p(trainable_count(config)))

    return sorted(units, key=cost, reverse=True)  # stable: equal costs keep grid order


@functools.lru_cache(maxsize=64)
def _trainable_count(shape: tuple[str, tuple[int, ...], tuple[tuple[str, Any], ...]]) -> int:
    method, hidden, fields = shape
    config = parse_config({"method": method, "hidden": list(hidden), **dict(fields)})
    count = registry.get(method).trainable
    if count is not None:  # the method's record counts them: no model, no torch in the driver
        return count(layer_widths(hidden), config)
    import torch

    from trainables.methods import adapt, count_trainable
    from trainables.model import MLP

    with torch.random.fork_rng():  # building a model must not move the driver's random state
        return count_trainable(adapt(MLP(hidden=list(hidden)), config))


def trainable_count(config: TrialConfig) -> int:
    """A trial's trainable parameters, from its method and shape (its hidden widths and the method's
    fuse fields, such as LoRA's rank), as its metrics count them: by the method's `trainable` count
    (trainables.registry), else by building the adapted model."""
    fields = tuple((name, getattr(config, name)) for name in registry.get(config.method).fuse_fields)
    return _trainable_count((config.method, tuple(config.hidden), fields))


def trial_config(spec: StudySpec, variant: dict[str, Any]) -> TrialConfig:
    return member_config(spec.base_config(), variant)


def table_columns(config: TrialConfig, variant: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """What identifies a trial in the results table: method, seed, the target mode, the study's protocol, the
    values of the method's own axes (defaults included), a per-method lr override and the method's own
    budget (`method_lr_scale`, `method_epochs`: the protocol columns keep the study's values, from `base`,
    so the baselines and TauGate share one protocol). Axes a method ignores stay out."""
    own = {axis: getattr(config, axis) for axis in registry.get(config.method).dimensions}
    protocol = {field: getattr(config, field) for field in PROTOCOL_FIELDS}
    budget = {}
    for field in variant.get(OWN, ()):
        budget[f"method_{field}"] = getattr(config, field)
        protocol[field] = base[field]
    overrides = {"lr": variant["lr"]} if "lr" in variant else {}
    return (
        {"method": config.method, "seed": config.seed, "target_angle": config.target_angle}
        | protocol | own | overrides | budget
    )  # fmt: skip


def trial_key(config: TrialConfig) -> str:
    """A stable id for a trial's whole config: the same trial always gets the same key."""
    fields = config.model_dump()
    if fields["eval_angles"] is None:  # a field added later: keys of studies without it stay as they were
        del fields["eval_angles"]
    canonical = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def foundation_key(config: TrialConfig) -> str:
    return config.foundation_id()


def run_name(variant: dict[str, Any]) -> str:
    """Readable names such as `taugate-s10-l0.001-seed2` or `lora-r8-seed0` (a fused group: its first
    member's name and `+N`)."""
    if "members" in variant:
        return f"{run_name(variant['members'][0])}+{len(variant['members']) - 1}"
    parts = [variant["method"]]
    short = {"target_angle": "t", "gate_sharpness": "s", "sparsity_weight": "l", "tau_lr_multiplier": "xt",
             "sparsity_target": "rt", "lora_rank": "r", "lora_alpha": "a", "lr": "lr", "foundation_epochs": "fe",
             "epochs": "ep", "lr_scale": "x", "batch_size": "b"}  # fmt: skip
    for field, prefix in short.items():
        if field in variant:
            parts.append(f"{prefix}{variant[field]:g}")
    parts.append(f"seed{variant['seed']}")
    return "-".join(parts)


def summary(spec: StudySpec) -> dict[str, Any]:
    """The totals `taugate plan --json` prints, counted without expanding the grid (`grid_trials`), so that
    the `max_trials` check (study.folder.metadata.prepare) costs as little for a grid of millions as for ten.
    The foundations: one per seed any grid uses and per swept foundation_epochs (the rest of a foundation's
    settings, `TrialConfig.foundation_key`, is the study's own)."""
    per_method = grid_trials(spec)
    optuna = spec.search.kind == "optuna"
    seeds = {seed for method in spec.methods.values() for grid in method.grids() for seed in grid.seeds or spec.seeds}
    return {
        "name": spec.name,
        "search": spec.search.kind,
        # an Optuna trial is one configuration evaluated on every seed: one study trial per seed
        "trials": spec.search.num_samples * len(spec.seeds) if optuna else sum(per_method.values()),
        "foundations": len(seeds) * len(spec.protocol_values()["foundation_epochs"]),
        "per_method": {} if optuna else per_method,  # Optuna draws the methods: no fixed count each
        "target_angles": spec.target_angles,
        "evaluated_angles": spec.evaluated_angles,
        "protocol": spec.protocol_values(),
        "protocols": len(protocols(spec)),
    }


def planned_trials(spec: StudySpec, grid: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What `<study>/plan.json` holds for a grid study: per trial key its run name, variant and
    results-table columns, so a trial that never reached the ledger (it failed, or has not run) is
    still named and grouped as the trials that did (`analysis.table.load.load_tune`)."""
    out, base = {}, spec.base_config()
    for variant in grid:
        config = member_config(base, variant)
        out[trial_key(config)] = {"run_name": run_name(variant), "variant": variant,
                                  "columns": table_columns(config, variant, base)}  # fmt: skip
    return out
