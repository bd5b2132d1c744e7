"""Reading a spec: YAML that refuses a key given twice, validated into a `StudySpec`; a problem is a
`SpecError` naming the field path and the reason."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from study.spec.study_spec import StudySpec
from trainables.config import format_validation_error
from trainables.errors import TauGateError


class SpecError(TauGateError, ValueError):
    """An invalid study spec; the message names the field path and the reason."""


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice (plain YAML keeps the last one silently)."""


class SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, at any depth. Keys merged in
    with `<<` may still be overridden: that is what a merge is for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if earlier is not key_node:
                mark, was = key_node.start_mark, earlier.start_mark
                raise DuplicateKeyError(
                    None, None, f"duplicate key {key!r} at line {mark.line + 1}, column {mark.column + 1} "
                    f"(first given at line {was.line + 1}); give each key once", mark,
                )  # fmt: skip
        return super().construct_mapping(node, deep=deep)


def load_spec(path: Path | str) -> StudySpec:
    """Read and validate a spec file (`-` reads standard input); a problem is a `SpecError` naming the field."""
    path = Path(path)
    try:
        raw = yaml.load(sys.stdin.read() if str(path) == "-" else path.read_text(), Loader=SpecLoader)  # noqa: S506
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except DuplicateKeyError as err:
        raise SpecError(f"{path}: {err.problem}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: YAML syntax error: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read ({err})") from None
    except RecursionError:
        raise SpecError(f"{path}: YAML syntax error: nested too deeply") from None
    return parse_spec(raw, source=str(path))


def parse_spec(raw: Any, source: str = "spec") -> StudySpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: expected a mapping of study fields, got {type(raw).__name__}")
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{source}: {format_validation_error(err)}") from None
