"""Reading a spec: YAML that refuses a key given twice, validated into a `StudySpec`; a problem is a
`SpecError` naming the field path and the reason.

Cheap refusals come first, so that a huge spec costs seconds and no memory: a file over MAX_SPEC_BYTES is
refused before YAML reads it (PyYAML's pure-Python reader, which names a syntax error's line and column, takes
about a second per 20 KB of a dense list of numbers on a loaded machine: a 9 MB spec listing 1.3 M seeds took
59 s and 3.4 GB), and a document holding more than MAX_SPEC_VALUES values once its YAML aliases are expanded
(a few aliases nest into millions of values) before pydantic walks it. The trial count against `max_trials`
is arithmetic (study.spec.plan.summary), never an expansion of the grid."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from study.spec.study_spec import StudySpec
from trainables.config import format_validation_error
from trainables.errors import TauGateError

# The shipped specs are under 2 KB; a spec listing 10,000 seeds is about 60 KB.
MAX_SPEC_BYTES = 64 * 1024
# Values (scalars, lists, mappings and their keys) a spec may hold with its aliases expanded: a 64 KiB file
# holds at most about 33,000 without aliases.
MAX_SPEC_VALUES = 100_000


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
    """Read and validate a spec file (`-` reads standard input); a problem is a `SpecError` naming the field. A
    file over MAX_SPEC_BYTES is refused before it is parsed."""
    path = Path(path)
    try:
        raw = yaml.load(_read_text(path), Loader=SpecLoader)  # noqa: S506
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


def _read_text(path: Path) -> str:
    """The spec's text, reading at most MAX_SPEC_BYTES + 1 bytes: a longer one is a `SpecError` naming the limit."""
    if str(path) == "-":
        data = sys.stdin.read(MAX_SPEC_BYTES + 1).encode()  # characters: at least as many bytes
    else:
        with path.open("rb") as stream:
            data = stream.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        size = path.stat().st_size if str(path) != "-" and path.is_file() else None
        raise SpecError(
            f"{path}: {'more than ' if size is None else ''}{size or len(data) - 1:,} bytes; a spec holds at most "
            f"{MAX_SPEC_BYTES:,} bytes ({MAX_SPEC_BYTES // 1024} KiB): list fewer values (the shipped specs are "
            "under 2 KB; a grid's seeds and axes multiply, so a few short lists make a large study)"
        )
    return data.decode()


def parse_spec(raw: Any, source: str = "spec") -> StudySpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: expected a mapping of study fields, got {type(raw).__name__}")
    if not _holds_at_most(raw, MAX_SPEC_VALUES):
        raise SpecError(f"{source}: more than {MAX_SPEC_VALUES:,} values once its YAML aliases are expanded; a spec "
                        "holds a few hundred")  # fmt: skip
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{source}: {format_validation_error(err)}") from None


def _holds_at_most(raw: Any, limit: int) -> bool:
    """Whether `raw` holds at most `limit` values, each use of a shared (aliased) list or mapping counted; the
    values are counted as they are reached, so no more than `limit` are ever walked or held."""
    pending, held = [raw], 1
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            inner = [*item, *item.values()]
        elif isinstance(item, list):
            inner = item
        else:
            continue
        held += len(inner)
        if held > limit:
            return False
        pending.extend(inner)
    return True
