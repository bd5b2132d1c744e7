"""A mode bank as a servable MLflow model (issue 13, item 4).

`ModeBankModel` is an `mlflow.pyfunc.PythonModel` over a bank folder (`trainables.bank`): a request is a
table of flattened, normalised digits, each row naming its mode, and the whole table runs as one mixed
batch through the hard-gated `BankedMLP` (one gather of tau and gamma, no loop over modes).

    input   pixel_0 .. pixel_783 (double), mode (string: a name in the bank, "taugate@45")
    output  class (long), prob_0 .. prob_9 (double: softmax of the hard-gated logits)

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
MODEL_CODE_FILE = "mode_bank_model.py"  # the model's code, copied into the logged model
MODEL_CODE = (
    "from mlflow.models import set_model\n\nfrom study.serving import ModeBankModel\n\nset_model(ModeBankModel())\n"
)


def signature() -> ModelSignature:
    """784 double pixel columns and the string `mode` in; the long `class` and 10 double probabilities out."""
    inputs = Schema([ColSpec("double", name) for name in PIXEL_COLUMNS] + [ColSpec("string", MODE_COLUMN)])
    outputs = Schema([ColSpec("long", CLASS_COLUMN)] + [ColSpec("double", name) for name in PROB_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=outputs)


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


class ModeBankModel(mlflow.pyfunc.PythonModel):
    """The bank's hard-gated `BankedMLP`: every row of a request in one mixed batch, on the CPU."""

    def load_context(self, context: Any) -> None:
        from trainables.bank.disk import load_bank

        self.bank = load_bank(Path(context.artifacts[BANK_ARTIFACT]))
        self.model = self.bank.model(hard=True).eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        missing = [c for c in (*PIXEL_COLUMNS, MODE_COLUMN) if c not in model_input.columns]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise MlflowException.invalid_parameter_value(f"input lacks the column(s) {shown}")
        modes = model_input[MODE_COLUMN].tolist()
        if unknown := sorted({m for m in modes if m not in self.bank}, key=str):
            raise MlflowException.invalid_parameter_value(
                f"mode {', '.join(repr(m) for m in unknown)} is not in the bank; modes: {', '.join(self.bank.names)}"
            )
        x = torch.from_numpy(model_input[PIXEL_COLUMNS].to_numpy(dtype=np.float32, copy=True))
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
              DIGEST_TAG: digest},
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
                pip_requirements=pip_requirements(),
            )
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return BankModel(info.model_uri, tracker.uri, logged_now=True)
