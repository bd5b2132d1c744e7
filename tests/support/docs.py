"""The documentation's code blocks as tests: README.md and docs/*.md, read by sybil (conftest.py at the root).

Each block runs as a user pastes it, with the working directory in one sandbox folder per session that holds
what the documentation's paths name:
- `configs/`: a copy of the repository's shipped specs;
- `studies/smoke`: a copy of the session's finished smoke study (tests/support/smoke.py), so a block that
  writes into it never changes what other tests read;
- `studies/modes`: a tiny modes study with its mode banks (tests/support/bank_study.py: real foundation,
  TauGate adapters at 0, 45 and 90 degrees, banks built by `study.pipeline.mode_banks.build_banks`), so
  `studies/modes/bank/...` works as it does after `taugate run configs/modes.yaml --output studies/modes`.

Languages:
- ```python: run in a fresh namespace each (a block must carry its own imports), with the method registry
  restored afterwards (a block that registers a method does not leak it into other tests);
- ```bash: run by `bash -e` with `.venv/bin` first on PATH and RAY_ADDRESS naming the session's warm cluster
  (`taugate run` joins it as with `--address`);
- ```yaml: a study spec, or the top-level fields of one (merged into a minimal spec), planned with
  `taugate plan`: it must parse;
- ```text and plain fences show output or layouts and are not run.
A block that cannot run here is preceded by `<!-- skip: next "why, and which test runs the same path" -->`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from tests.support.paths import ROOT

# every fenced block's language: run (python, bash, yaml) or shown only (text, none); tests/docs checks no other
RUN_LANGUAGES = ("python", "bash", "yaml")
SHOWN_LANGUAGES = ("text", "")
SANDBOX_FIXTURE = "docs_sandbox"
BASH_TIMEOUT_S = 300


def run_python(example: Example) -> None:
    """The block in a namespace of its own, in the sandbox; the method registry as it was before."""
    from trainables import registry

    __tracebackhide__ = True
    registered = dict(registry.REGISTRY)
    # padded so that a traceback names the block's own line in the document
    code = compile("\n" * (example.line + example.parsed.line_offset) + example.parsed, str(example.path), "exec")
    previous = Path.cwd()
    os.chdir(example.namespace[SANDBOX_FIXTURE])
    try:
        exec(code, {"__name__": "__doc_block__"})
    finally:
        os.chdir(previous)
        registry.REGISTRY.clear()
        registry.REGISTRY.update(registered)


def run_bash(example: Example) -> None:
    """The block under `bash -e` in the sandbox; its output is the failure's message."""
    from tests.support.warm import cluster

    __tracebackhide__ = True
    bin_dir = Path(sys.executable).parent
    env = os.environ | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_ADDRESS": cluster().address,  # a study a block starts joins the session's warm cluster
        "RAY_AUTH_MODE": "token",
    }
    done = subprocess.run(
        ["bash", "-e", "-c", str(example.parsed)], cwd=example.namespace[SANDBOX_FIXTURE], env=env,
        capture_output=True, text=True, timeout=BASH_TIMEOUT_S,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(
            f"{example.path}, line {example.line}: `bash -e` exited {done.returncode}\n"
            f"--- block ---\n{example.parsed}--- stdout ---\n{done.stdout[-3000:]}--- stderr ---\n{done.stderr[-3000:]}"
        )


def plan_yaml(example: Example) -> None:
    """The block is a study spec (it has a `name`) or some of its top-level fields: `taugate plan` must accept it."""
    from tests.support.cli import taugate

    __tracebackhide__ = True
    text = yaml.safe_load(str(example.parsed))
    assert isinstance(text, dict), f"{example.path}, line {example.line}: a yaml block must be a mapping"
    spec = text if "name" in text else {"name": "doc-fields", "methods": {"taugate": {}}} | text
    path = Path(example.namespace[SANDBOX_FIXTURE]) / f"doc-spec-line{example.line}.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = taugate("plan", str(path))
    assert result.returncode == 0, f"{example.path}, line {example.line}: `taugate plan` refused it\n{result.stderr}"


DOCS = Sybil(
    parsers=[
        CodeBlockParser("python", run_python),
        CodeBlockParser("bash", run_bash),
        CodeBlockParser("yaml", plan_yaml),
        SkipParser(),
    ],
    path=str(ROOT),
    patterns=["README.md", "docs/*.md"],
    excludes=["*/README.md"],  # the READMEs of docker/ and benchmarks/ are theirs, not the project's documentation
    fixtures=[SANDBOX_FIXTURE],
)


def modes_study(folder: Path) -> Path:
    """A tiny finished modes study with its banks (one foundation; TauGate at 0, 45 and 90 degrees)."""
    from study.pipeline.mode_banks import build_banks
    from tests.support.bank_study import make_study

    study = make_study(folder, tuple((f"t{angle}", "taugate", angle, 0.0) for angle in (0, 45, 90)), second_seed=False)
    build_banks(study, compact=True)
    return study


def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation's working directory: configs/, studies/smoke, studies/modes (see the module's text)."""
    from study.cluster.head import ensure_auth_token
    from tests.support.smoke import smoke_study

    os.environ["RAY_AUTH_MODE"] = "token"  # before Ray is first imported (tests/conftest.py does the same)
    ensure_auth_token()
    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "configs", folder / "configs")
    shutil.copytree(smoke_study(tmp_path_factory), folder / "studies" / "smoke")
    modes_study(folder / "studies" / "modes")
    return folder
