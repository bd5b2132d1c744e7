"""Which trials can train together in one fused run (`trainables.engine.fused`): the fields they must
share. No torch: a study's driver groups its planned trials by `fuse_key` (study.spec.plan.fused_groups)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainables import registry
from trainables.config import ConfigError, TrialConfig

# Config fields every member of one fused run must share (the shape of the work), plus the method's
# own `fuse_fields` (LoRA's rank). Members may differ in everything else: seed (hence foundation), lr,
# gate_sharpness, sparsity_weight, gate_init_margin, lora_alpha and the foundation_* settings.
FUSE_FIELDS = (
    "method", "dataset", "data_root", "download", "test_fraction", "val_fraction", "angles", "eval_angles",
    "target_angle", "hidden", "epochs", "batch_size", "device",
)  # fmt: skip


def _fuse_fields(config: TrialConfig) -> tuple[str, ...]:
    return FUSE_FIELDS + registry.get(config.method).fuse_fields


def fuse_key(config: TrialConfig) -> tuple:
    """Configs with equal keys can be trained in one fused run (a study groups trials by it)."""
    return tuple((name, _hashable(getattr(config, name))) for name in _fuse_fields(config))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def check_fusable(configs: Sequence[TrialConfig]) -> None:
    """Raise `ConfigError` naming the first field on which the configs cannot be fused."""
    if not configs:
        raise ConfigError("fuse: no configs to fuse")
    first = configs[0]
    for index, config in enumerate(configs[1:], start=1):
        for name in _fuse_fields(first):
            if getattr(config, name) != getattr(first, name):
                raise ConfigError(
                    f"{name}: fused trials must share it (member 0 has {getattr(first, name)!r}, "
                    f"member {index} has {getattr(config, name)!r})"
                )
