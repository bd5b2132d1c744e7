"""Small file I/O the whole product shares: atomic writes (a reader on another process or node
never sees half a file), and JSON and safetensors readers whose errors name the file."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.errors import TauGateError

if TYPE_CHECKING:  # the safetensors helpers import torch when called: the JSON ones are a study driver's too
    import torch


class DamagedFile(TauGateError, ValueError):
    """A file the product wrote earlier is missing a part, truncated or not what it should be. The message
    is `<file>: <what is wrong>; <what to do>`; the parts stay readable for a report of every damaged file."""

    def __init__(self, file: Path | str, problem: str, fix: str):
        self.file, self.problem, self.fix = str(file), problem, fix
        super().__init__(f"{file}: {problem}; {fix}")

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "problem": self.problem, "what_to_do": self.fix}


def cache_dir() -> Path:
    """The product's cache folder (decoded digits, an empty MLflow store): TAUGATE_CACHE_DIR or ~/.cache/taugate."""
    return Path(os.environ.get("TAUGATE_CACHE_DIR", Path.home() / ".cache" / "taugate"))


def staging_path(path: Path) -> Path:
    """A hidden sibling of `path`, unique to this process and call, to write before renaming."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a staging path to write; on success it replaces `path` in one rename, on an error it
    is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = staging_path(path)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)


def write_json(path: Path | str, data: Any, indent: int | None = 1, default: Callable[[Any], Any] | None = str) -> None:
    write_text(path, json.dumps(data, indent=indent, default=default))


def write_tensors(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A safetensors file of `tensors` (detached, contiguous, on the CPU), written atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as partial:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(partial), metadata=metadata)


def read_json(path: Path | str, error: type[Exception], want: type = dict) -> Any:
    """A JSON file's content; a missing file, invalid JSON or content other than `want` (a JSON
    object by default) raises `error` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise error(f"{path}: unreadable ({err})") from None
    if not isinstance(data, want):
        found = _JSON_TYPES.get(type(data), type(data).__name__)
        raise error(f"{path}: expected a JSON {_JSON_TYPES.get(want, want.__name__)}, found {found} {_brief(data)}")
    return data


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}  # fmt: skip


def _brief(data: Any) -> str:
    text = json.dumps(data)
    return text if len(text) <= 40 else text[:37] + "..."


def read_tensors(path: Path | str, error: type[Exception]) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a missing or unreadable file raises `error` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise error(f"{path}: not a readable safetensors file ({err})") from None
