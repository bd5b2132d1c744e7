"""A mode bank as a servable MLflow model (issue 13, item 4).

`ModeBankModel` is an `mlflow.pyfunc.PythonModel` over a bank folder (`trainables.bank`): a request is a
table of flattened, normalised digits, each row naming its mode, and the whole table runs as one mixed
batch through the hard-gated `BankedMLP` (one gather of tau and gamma, no loop over modes).

    input   pixel_0 .. pixel_783 (double), mode (string: a name in the bank, "taugate@45"); no other column;
            1 to MAX_ROWS (4096) rows a request
    output  class (long), prob_0 .. prob_9 (double: softmax of the hard-gated logits)

The model checks its input itself and refuses anything else with an `InputError`, which MLflow's scoring
server answers with HTTP 400 and `{"error_code": "INVALID_PARAMETER_VALUE", "message": ...}`, the message
one line naming the problem: the row count above MAX_ROWS, missing, unexpected or repeated columns, a pixel
that is not a number (a string, a boolean, null) or not finite (NaN, infinity) or beyond +-PIXEL_LIMIT, a mode
that is not a string or not in the bank. So the logged signature declares the output only: an input schema
would have MLflow enforce it first (`PyFuncModel.predict` -> `mlflow.models.utils._enforce_schema`), which
drops an unexpected column without a word and words a missing one as a ~25 KB message (the table's and the
schema's reprs) that the scoring server prefixes with the table once more. The input's schema is kept in the
model's metadata instead (`taugate.input_schema`, MLflow's schema JSON, with `taugate.input` and
`taugate.max_rows`), and the input example shows a valid request.

`log_bank_model` logs it to the study's MLflow parent run. MLflow 3 keeps a model as a LoggedModel, not
in the run's artifact folder: the model is created with the parent run as its source run
(`source_run_id`), listed among the parent run's outputs (`run.outputs.model_outputs`), its files under
the experiment's artifact location (for a study's own SQLite store: `<study>/mlartifacts/`). The URI
returned is the LoggedModel's `models:/<model id>`; `runs:/<parent run id>/<artifact_path>` names the
same model. Both resolve against the study's tracking store, so a served process needs
MLFLOW_TRACKING_URI set to it (without it MLflow looks in a new `./mlflow.db` and finds nothing), and
`mlflow models serve` runs `uvicorn` from PATH: `serve_command` writes the whole line, which runs as
pasted from any folder:

    PATH="/venv/bin:$PATH" MLFLOW_TRACKING_URI=sqlite:////abs/STUDY/mlflow.db /venv/bin/mlflow models serve \
        -m models:/m-... --env-manager local -h 127.0.0.1 -p 5001

Logging is idempotent: the model carries the sha256 of what it serves (`bank_digest`: the foundation's and
the bank's tensors and the mode names) as the tag `taugate.bank_sha256`; logging a bank whose digest is
already a READY model of the study's parent run logs nothing and returns that model.

The model is logged from code (MLflow's models from code: a three-line file that imports `ModeBankModel`
and calls `set_model`), so nothing is pickled; the served process must be able to import `study.serving`
and `trainables`: with `--env-manager local` that is the installed (editable) package of the current
environment, so no `code_paths` are copied into the model (they would also make MLflow re-import
`trainables` from the copy in a process that has it loaded already). The pip requirements are pinned from the
installed versions (nothing is inferred or downloaded); the taugate package itself is not on an index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

from study import environment  # noqa: F401 - MLflow's logging level and progress bars, before MLflow is imported

# isort: split
import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema

from trainables.data import MNIST_MEAN, MNIST_STD

PIXELS, CLASSES = 784, 10
PIXEL_COLUMNS = [f"pixel_{i}" for i in range(PIXELS)]
MODE_COLUMN, CLASS_COLUMN = "mode", "class"
PROB_COLUMNS = [f"prob_{c}" for c in range(CLASSES)]
BANK_ARTIFACT = "bank"  # the key of the bank folder in the model's artifacts
MODEL_NAME = "mode_bank"
REQUIREMENTS = ("mlflow", "torch", "safetensors", "numpy", "pandas")
DIGEST_TAG = "taugate.bank_sha256"  # what a logged model serves, so logging it again finds it
SERVE_HOST, SERVE_PORT = "127.0.0.1", 5001  # the printed `mlflow models serve` line's address
MAX_ROWS = 4096  # rows a request may hold: the whole test split of four modes (1,000 digits each) at once
PIXEL_LIMIT = 1_000_000  # a normalised digit's pixels lie in [-0.43, 2.83]; far beyond, float32 logits could overflow
INPUT_DESCRIPTION = (
    f"{PIXEL_COLUMNS[0]} .. {PIXEL_COLUMNS[-1]}: the flattened digit, normalised with MNIST's mean and std "
    f"(finite numbers within +-{PIXEL_LIMIT:,}); {MODE_COLUMN}: a string, one of the bank's modes; no other "
    f"column; 1 to {MAX_ROWS} rows a request"
)
MODEL_CODE_FILE = "mode_bank_model.py"  # the model's code, copied into the logged model
MODEL_CODE = (
    "from mlflow.models import set_model\n\nfrom study.serving import ModeBankModel\n\nset_model(ModeBankModel())\n"
)


def input_schema() -> Schema:
    """784 double pixel columns and the string `mode`: the model's input, which `ModeBankModel.predict` checks
    (kept in the model's metadata, not its signature: see the module's docstring)."""
    return Schema([ColSpec("double", name) for name in PIXEL_COLUMNS] + [ColSpec("string", MODE_COLUMN)])


def signature() -> ModelSignature:
    """The long `class` and 10 double probabilities out; no input schema, so MLflow hands `predict` the request
    as sent (an input schema would drop unexpected columns before `predict` could refuse them)."""
    outputs = Schema([ColSpec("long", CLASS_COLUMN)] + [ColSpec("double", name) for name in PROB_COLUMNS])
    return ModelSignature(inputs=None, outputs=outputs)


def model_metadata() -> dict[str, Any]:
    """What the logged model's MLmodel file says of its input (`metadata:`)."""
    return {"taugate.input": INPUT_DESCRIPTION, "taugate.input_schema": input_schema().to_json(),
            "taugate.max_rows": MAX_ROWS}  # fmt: skip


def request_frame(x: torch.Tensor | np.ndarray, modes: list[str]) -> pd.DataFrame:
    """Digits ([n, 784], flattened and normalised) and each row's mode as the model's input table."""
    pixels = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if pixels.ndim != 2 or pixels.shape[1] != PIXELS or len(pixels) != len(modes):
        raise ValueError(f"digits {pixels.shape} and {len(modes)} modes: expected [n, {PIXELS}] and n modes")
    frame = pd.DataFrame(pixels, columns=PIXEL_COLUMNS)
    frame[MODE_COLUMN] = pd.Series(list(modes), dtype=object)
    return frame


def input_example(modes: list[str]) -> pd.DataFrame:
    """Two rows: a stroke (a "1") on the normalised background, under the bank's first and last mode."""
    image = np.zeros((28, 28), dtype=np.float64)
    image[4:24, 13:15] = 1.0
    pixels = np.repeat(((image - MNIST_MEAN) / MNIST_STD).reshape(1, PIXELS), 2, axis=0)
    return request_frame(pixels, [modes[0], modes[-1]])


class InputError(MlflowException):
    """A request the model refuses: HTTP 400 (INVALID_PARAMETER_VALUE) whose message is the problem, one line.

    MLflow's scoring server rewrites the message of an `MlflowException` raised in `predict` to
    "Failed to predict data '<the request's table>'. \\nError: <message>" (`invocations` in
    mlflow/pyfunc/scoring_server/__init__.py), whose first line names no problem. An InputError's message
    stays what it was raised with, so the response's message is the problem alone."""

    def __init__(self, problem: str) -> None:
        self._problem = problem
        super().__init__(problem, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._problem

    @message.setter
    def message(self, rewritten: str) -> None:
        """Ignored: `MlflowException.__init__` sets the problem itself; the scoring server's rewrite is dropped."""


def _listed(names: list[Any], limit: int = 6) -> str:
    """Column names for a message: all of a few, else the first three, the last and how many."""
    shown = [str(name) for name in names]
    if len(shown) <= limit:
        return ", ".join(shown)
    return f"{', '.join(shown[:3])}, ..., {shown[-1]} ({len(shown)} columns)"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _described(value: Any) -> str:
    """A cell of the request as a message shows it: null, or its repr and type."""
    if value is None or (isinstance(value, float) and np.isnan(value)):  # pandas keeps a null string as NaN
        return "null"
    text = repr(value)
    return f"{text[:40]}... ({type(value).__name__})" if len(text) > 40 else f"{text} ({type(value).__name__})"


def checked_input(frame: pd.DataFrame, modes: list[str]) -> tuple[np.ndarray, list[str]]:
    """The request's pixels ([n, 784] float64) and modes, or an `InputError` naming the first problem: too
    many rows, the columns, a pixel's or a mode's type, a pixel that is not finite or beyond +-PIXEL_LIMIT,
    a mode not among `modes`. Rows count from 0, in the request's order."""
    rows = len(frame)
    if rows > MAX_ROWS:
        raise InputError(f"the request has {rows} rows; a request holds at most {MAX_ROWS}: split it")
    if rows == 0:
        raise InputError("the request has no rows")
    expected = [*PIXEL_COLUMNS, MODE_COLUMN]
    given = list(frame.columns)
    known, seen = set(expected), set(given)  # names may be of any type (a JSON table without `columns`: 0, 1, ...)
    problems = []
    if missing := [name for name in expected if name not in seen]:
        problems.append(f"missing column(s) {_listed(missing)}")
    if unexpected := [name for name in given if name not in known]:
        problems.append(f"unexpected column(s) {_listed(unexpected)}")
    if repeated := [name for name, count in Counter(given).items() if count > 1]:
        problems.append(f"column(s) given more than once: {_listed(repeated)}")
    if problems:
        raise InputError(f"{'; '.join(problems)}: the input is exactly {PIXEL_COLUMNS[0]} .. {PIXEL_COLUMNS[-1]} "
                         f"and {MODE_COLUMN}")  # fmt: skip
    for name in PIXEL_COLUMNS:
        column = frame[name]
        if column.dtype.kind not in "iuf":  # a string, a boolean or a null among the numbers
            row, value = next((r, v) for r, v in enumerate(column) if not _is_number(v))
            raise InputError(f"{name} of row {row} is {_described(value)}: a pixel is a number")
    for row, mode in enumerate(frame[MODE_COLUMN]):
        if not isinstance(mode, str):
            raise InputError(f"{MODE_COLUMN} of row {row} is {_described(mode)}: a mode is a string, one of "
                             f"{', '.join(modes)}")  # fmt: skip
    pixels = frame[PIXEL_COLUMNS].to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        beyond = np.abs(pixels) > PIXEL_LIMIT
    for wrong, rule in ((~np.isfinite(pixels), "finite number"), (beyond, f"number within +-{PIXEL_LIMIT:,}")):
        if wrong.any():
            row, column = (int(i) for i in np.argwhere(wrong)[0])
            count, in_rows = int(wrong.sum()), int(wrong.any(axis=1).sum())
            value = float(pixels[row, column])  # JSON's spelling; a null among numbers arrives as NaN
            value = "NaN or null" if np.isnan(value) else json.dumps(value)  # (JavaScript writes NaN as null)
            raise InputError(f"{PIXEL_COLUMNS[column]} of row {row} is {value}: a pixel is a {rule} "
                             f"({count} such value(s) in {in_rows} row(s))")  # fmt: skip
    names = frame[MODE_COLUMN].tolist()
    if unknown := sorted({m for m in names if m not in modes}, key=str):
        raise InputError(f"mode {', '.join(repr(m) for m in unknown)} is not in the bank; modes: {', '.join(modes)}")
    return pixels, names


class ModeBankModel(mlflow.pyfunc.PythonModel):
    """The bank's hard-gated `BankedMLP`: every row of a request in one mixed batch, on the CPU. The input is
    checked first (`checked_input`): anything but 1 to MAX_ROWS rows of exactly pixel_0 .. pixel_783 (finite
    numbers) and mode (one of the bank's modes) is an `InputError`, a 400 from the scoring server."""

    def load_context(self, context: Any) -> None:
        from trainables.bank.disk import load_bank

        self.bank = load_bank(Path(context.artifacts[BANK_ARTIFACT]))
        self.model = self.bank.model(hard=True).eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        pixels, modes = checked_input(model_input, list(self.bank.names))
        x = torch.from_numpy(pixels.astype(np.float32))
        with torch.no_grad():
            probs = torch.softmax(self.model(x, self.bank.indices(modes)), dim=1)
        out = pd.DataFrame(probs.numpy().astype(np.float64), columns=PROB_COLUMNS, index=model_input.index)
        out.insert(0, CLASS_COLUMN, probs.argmax(1).numpy().astype(np.int64))
        return out


def pip_requirements() -> list[str]:
    """The serving dependencies pinned to what is installed here (so MLflow infers nothing)."""
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to `uri` for the block, then restored exactly as it was
    (unset stays unset): `Model.log` and `pyfunc.load_model("models:/...")` read it."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(uri):
        yield


class BankModel(NamedTuple):
    """A bank's model in the study's MLflow store: its URI, the store, and whether this call logged it."""

    uri: str  # models:/<model id>
    tracking_uri: str
    logged_now: bool  # False: the same bank was logged before, nothing new was logged


def bank_digest(bank_dir: Path, names: list[str]) -> str:
    """sha256 of what a bank model serves: the foundation's and the bank's tensor files and the mode names
    (not bank.json, which also names the compact subnetworks and the trials' timings)."""
    digest = hashlib.sha256()
    for name in ("foundation.safetensors", "bank.safetensors"):
        digest.update(hashlib.sha256((Path(bank_dir) / name).read_bytes()).digest())
    digest.update(json.dumps(names).encode())
    return digest.hexdigest()


def serve_command(model_uri: str, tracking_uri: str, host: str = SERVE_HOST, port: int = SERVE_PORT) -> str:
    """The `mlflow models serve` line for a logged bank that runs as pasted into a shell, from any folder:
    the store it is logged in (MLFLOW_TRACKING_URI), this environment's `mlflow` by its absolute path and its
    folder first on PATH (MLflow starts `uvicorn` from PATH), on loopback."""
    bin_dir = Path(sys.executable).parent
    mlflow_bin = bin_dir / "mlflow"
    return (f'PATH={shlex.quote(str(bin_dir))}:"$PATH" MLFLOW_TRACKING_URI={shlex.quote(tracking_uri)} '
            f"{shlex.quote(str(mlflow_bin))} models serve -m {shlex.quote(model_uri)} --env-manager local "
            f"-h {host} -p {port}")  # fmt: skip


def log_bank_model(
    bank_dir: Path, study_dir: Path, tracking_uri: str | None = None, artifact_path: str = MODEL_NAME
) -> BankModel:
    """Log the bank folder as a pyfunc model of the study's MLflow parent run (created if the study never
    logged one); its URI is `models:/<model id>`. The store is the one the study logs to: the
    `tracking_uri` given, else the study's own (`study.json`), MLFLOW_TRACKING_URI, `<study>/mlflow.db`.
    A bank already logged there (a READY model of the parent run with its `bank_digest`) is not logged
    again: its model is returned with `logged_now` False. The parent run's status is left as it was. A bank
    that does not load is a `BankError`."""
    from mlflow.entities import LoggedModelStatus

    from study.folder.metadata import load_study
    from study.tracking.tracker import Tracker
    from trainables.bank.disk import load_bank

    bank_dir, study_dir = Path(bank_dir), Path(study_dir)
    bank = load_bank(bank_dir)  # refuse a damaged bank before anything is logged
    _, study = load_study(study_dir)
    tracker = Tracker(study_dir, tracking_uri or study.get("tracking_uri"), study["experiment_name"])
    parent = tracker.parent(study)
    client = tracker.client
    digest = bank_digest(bank_dir, bank.names)
    query = f"source_run_id = '{parent}' AND tags.`{DIGEST_TAG}` = '{digest}'"
    for found in client.search_logged_models([tracker.experiment_id], filter_string=query):
        if found.status == LoggedModelStatus.READY:
            return BankModel(f"models:/{found.model_id}", tracker.uri, logged_now=False)
    logged = client.create_logged_model(
        tracker.experiment_id, name=artifact_path, source_run_id=parent,
        tags={"taugate.kind": "mode_bank", "taugate.study_id": study["study_id"],
              "taugate.foundation_id": bank.foundation_id, "taugate.modes": ", ".join(bank.names),
              "taugate.input": INPUT_DESCRIPTION, DIGEST_TAG: digest},
    )  # fmt: skip
    try:
        with use_tracking_uri(tracker.uri), tempfile.TemporaryDirectory() as scratch:
            code = Path(scratch) / MODEL_CODE_FILE
            code.write_text(MODEL_CODE)
            info = Model.log(
                artifact_path=None,  # deprecated in MLflow 3: the model's name is `name`
                name=artifact_path,
                flavor=mlflow.pyfunc,
                run_id=parent,
                model_id=logged.model_id,
                python_model=str(code),  # models from code: the class by import, nothing pickled
                artifacts={BANK_ARTIFACT: str(bank_dir.resolve())},
                signature=signature(),
                input_example=input_example(bank.names),
                metadata=model_metadata(),
                pip_requirements=pip_requirements(),
            )
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return BankModel(info.model_uri, tracker.uri, logged_now=True)
