"""A mode bank as a servable MLflow model (issue 13, item 4): logged to the study's parent run in a real
SQLite tracking store, loaded with `mlflow.pyfunc.load_model`, and served by a real
`mlflow models serve --env-manager local` process on 127.0.0.1 answering real HTTP requests.

One tiny study folder and bank (built without Ray, as tests/trainables/bank/test_bank.py builds them), logged once;
one served model answers every HTTP assertion and is stopped by its PID. Then `taugate bank` on the same study,
twice: the second logs nothing new, and the `serve:` line the first printed, pasted into a shell from another
folder without this environment on PATH, serves the bank (issue 27, items 3 and 7). Garbage in is a 400 whose
message is one line naming the problem, in process and served, and the server goes on answering (issue 28, item 5)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking._tracking_service import utils as tracking_utils
from mlflow.types import Schema

from study.folder.metadata import load_study, prepare
from study.pipeline.mode_banks import build_bank
from study.serving import (
    CLASS_COLUMN,
    DIGEST_TAG,
    MAX_ROWS,
    PIXEL_COLUMNS,
    PROB_COLUMNS,
    InputError,
    bank_digest,
    log_bank_model,
    request_frame,
    use_tracking_uri,
)
from study.spec.loader import parse_spec
from study.tracking.tracker import KIND_TAG, STUDY_TAG, Tracker
from tests.support.bank_study import TINY, make_study
from tests.support.cli import taugate
from tests.support.raycluster import free_port
from trainables.bank.disk import load_bank
from trainables.config import parse_config
from trainables.data import load_modes

TRIALS = (("t0", "taugate", 0, 0.0), ("t45", "taugate", 45, 0.0), ("g45", "gain_only", 45, 0.0))
MODES = ["taugate@0", "taugate@45", "gain_only@45"]
UNKNOWN = "taugate@30"
START_WAIT, REQUEST_WAIT, STOP_WAIT = 180.0, 60.0, 20.0  # seconds (a loaded 2-core machine)


@dataclass
class Logged:
    study: Path
    bank: Path
    tracking_uri: str
    experiment_id: str
    parent: str
    uri: str  # what log_bank_model returned
    global_uri_before: str | None
    global_uri_after: str | None


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Logged:
    """A study folder (spec.yaml, study.json as `taugate run` writes them; foundations and trials as a
    finished study leaves them), its parent run created and finished, its bank logged once."""
    study = tmp_path_factory.mktemp("serving") / "study"
    spec = parse_spec({"name": "serving", "dataset": "mnist5k", "methods": {"taugate": {}}})
    record = prepare(spec, study)
    make_study(study, TRIALS, second_seed=False)
    bank = build_bank(study, study / "bank" / "only", ("taugate", "gain_only"), compact=False)
    tracking_uri = f"sqlite:///{study / 'mlflow.db'}"  # explicit: never MLFLOW_TRACKING_URI
    tracker = Tracker(study, tracking_uri, record["experiment_name"])
    parent = tracker.parent(record)
    tracker.finish(record)  # the study finished before its bank was built
    before = tracking_utils._tracking_uri
    model = log_bank_model(bank, study, tracking_uri)
    assert model.logged_now and model.tracking_uri == tracking_uri
    uri = model.uri
    return Logged(study, bank, tracking_uri, tracker.experiment_id, parent, uri, before, tracking_utils._tracking_uri)


@pytest.fixture(scope="module")
def data():
    return load_modes(parse_config(TINY), torch.device("cpu"))


def mixed(data, per_mode: int | None, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Test digits of each mode's own angle (all of them when per_mode is None), shuffled together."""
    parts = [(data[float(name.split("@")[1])].test_x[:per_mode], name) for name in MODES]
    x = torch.cat([digits for digits, _ in parts])
    names = [name for digits, name in parts for _ in range(len(digits))]
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))
    return x[order], [names[i] for i in order]


def in_process(bank_dir: Path, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    """The bank's hard-gated BankedMLP on the whole mixed batch: softmax probabilities."""
    bank = load_bank(bank_dir)
    with torch.no_grad():
        return torch.softmax(bank.model(hard=True)(x, bank.indices(names)), dim=1)


def load(logged: Logged, uri: str | None = None):
    with use_tracking_uri(logged.tracking_uri):
        return mlflow.pyfunc.load_model(uri or logged.uri)


# --- the logged model, in process -----------------------------------------------------------------


def test_the_logged_model_predicts_as_the_bank_in_one_mixed_batch(logged: Logged, data):
    model = load(logged)
    x, names = mixed(data, None, seed=1)
    assert len(names) == sum(len(data[a].test_x) for a in (0.0, 45.0, 45.0)) and len(set(names)) == 3
    calls = []
    first = model.unwrap_python_model().model.layers[0]
    hook = first.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    try:
        out = model.predict(request_frame(x, names))
    finally:
        hook.remove()
    assert calls == [len(names)]  # every row at once: one forward, one gather, no loop over modes
    assert list(out.columns) == [CLASS_COLUMN, *PROB_COLUMNS] and len(out) == len(names)
    assert out[CLASS_COLUMN].dtype == np.int64 and all(out[c].dtype == np.float64 for c in PROB_COLUMNS)

    expected = in_process(logged.bank, x, names)
    assert np.array_equal(out[CLASS_COLUMN].to_numpy(), expected.argmax(1).numpy())  # every digit
    np.testing.assert_allclose(out[PROB_COLUMNS].to_numpy(), expected.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[PROB_COLUMNS].sum(axis=1).to_numpy(), 1.0, atol=1e-5)

    with pytest.raises(MlflowException, match=f"mode '{UNKNOWN}' is not in the bank; modes: {', '.join(MODES)}"):
        model.predict(request_frame(x[:3], [MODES[0], UNKNOWN, MODES[1]]))


def test_the_model_carries_its_signature_and_an_input_example(logged: Logged):
    model = load(logged)
    signature = model.metadata.signature
    assert signature is not None
    # no input schema in the signature: MLflow would enforce it before `predict` and drop an unexpected
    # column without a word; the model checks its input itself, and its metadata documents it
    assert signature.inputs is None
    documented = model.metadata.metadata
    inputs = {spec.name: spec.type.name for spec in Schema.from_json(documented["taugate.input_schema"]).inputs}
    assert list(inputs) == [*PIXEL_COLUMNS, "mode"] and len(PIXEL_COLUMNS) == 784
    assert inputs["mode"] == "string" and {inputs[c] for c in PIXEL_COLUMNS} == {"double"}
    assert documented["taugate.max_rows"] == MAX_ROWS == 4096
    assert f"1 to {MAX_ROWS} rows a request" in documented["taugate.input"]
    outputs = {spec.name: spec.type.name for spec in signature.outputs.inputs}
    assert outputs == {"class": "long"} | {f"prob_{c}": "double" for c in range(10)}
    assert list(outputs) == [CLASS_COLUMN, *PROB_COLUMNS]

    example = model.input_example
    assert list(example.columns) == [*PIXEL_COLUMNS, "mode"] and list(example["mode"]) == [MODES[0], MODES[-1]]
    predicted = model.predict(example)
    assert list(predicted.columns) == [CLASS_COLUMN, *PROB_COLUMNS] and len(predicted) == 2


# --- garbage in: refused, each with one line naming the problem -------------------------------------------------


def good_rows(data) -> tuple[list, list[list]]:
    """Three digits of three modes as the JSON `dataframe_split` of a request: its columns and rows."""
    frame = request_frame(data[45.0].test_x[:3], MODES)
    return list(frame.columns), frame.to_numpy().tolist()


def with_cell(rows: list[list], row: int, column: int, value) -> list[list]:
    changed = [list(r) for r in rows]
    changed[row][column] = value
    return changed


MODES_NAMED = ", ".join(MODES)
EXACTLY = "the input is exactly pixel_0 .. pixel_783 and mode"
# each bad request: (columns, rows) from the good ones -> the whole message the model answers with
BAD = {
    "nan-pixel": (lambda c, r: (c, with_cell(r, 1, 5, float("nan"))),
                  "pixel_5 of row 1 is NaN or null: a pixel is a finite number (1 such value(s) in 1 row(s))"),
    "inf-pixel": (lambda c, r: (c, with_cell(with_cell(r, 0, 7, float("inf")), 2, 3, float("-inf"))),
                  "pixel_7 of row 0 is Infinity: a pixel is a finite number (2 such value(s) in 2 row(s))"),
    "null-pixel": (lambda c, r: (c, with_cell(r, 2, 0, None)),  # a column of numbers: pandas makes it NaN
                   "pixel_0 of row 2 is NaN or null: a pixel is a finite number (1 such value(s) in 1 row(s))"),
    "null-pixel-among-strings": (lambda c, r: (c, with_cell(with_cell(r, 0, 4, None), 1, 4, "x")),
                                 "pixel_4 of row 0 is null: a pixel is a number"),
    "huge-pixel": (lambda c, r: (c, with_cell(r, 0, 9, 1e30)),
                   "pixel_9 of row 0 is 1e+30: a pixel is a number within +-1,000,000 (1 such value(s) in 1 row(s))"),
    "string-pixel": (lambda c, r: (c, with_cell(r, 1, 783, "0.5")),
                     "pixel_783 of row 1 is '0.5' (str): a pixel is a number"),
    "boolean-pixel": (lambda c, r: (c, with_cell(r, 0, 0, True)),
                      "pixel_0 of row 0 is True (bool): a pixel is a number"),
    "number-mode": (lambda c, r: (c, with_cell(r, 1, 784, 45)),
                    f"mode of row 1 is 45 (int): a mode is a string, one of {MODES_NAMED}"),
    "null-mode": (lambda c, r: (c, with_cell(r, 0, 784, None)),
                  f"mode of row 0 is null: a mode is a string, one of {MODES_NAMED}"),
    "extra-column": (lambda c, r: ([*c, "pixel_784"], [[*row, 0.0] for row in r]),
                     f"unexpected column(s) pixel_784: {EXACTLY}"),
    "missing-mode": (lambda c, r: (c[:-1], [row[:-1] for row in r]), f"missing column(s) mode: {EXACTLY}"),
    "700-pixels": (lambda c, r: ([*c[:700], "mode"], [[*row[:700], row[-1]] for row in r]),
                   f"missing column(s) pixel_700, pixel_701, pixel_702, ..., pixel_783 (84 columns): {EXACTLY}"),
    "renamed-column": (lambda c, r: ([*c[:-1], "Mode"], r),
                       f"missing column(s) mode; unexpected column(s) Mode: {EXACTLY}"),
    "repeated-column": (lambda c, r: ([*c, "mode"], [[*row, row[-1]] for row in r]),
                        f"column(s) given more than once: mode: {EXACTLY}"),
    "no-rows": (lambda c, r: (c, []), "the request has no rows"),
    "over-the-batch-limit": (lambda c, r: (c, [[0] * 784 + [MODES[0]]] * (MAX_ROWS + 1)),
                             f"the request has {MAX_ROWS + 1} rows; a request holds at most {MAX_ROWS}: split it"),
    "unknown-mode": (lambda c, r: (c, with_cell(r, 1, 784, UNKNOWN)),
                     f"mode '{UNKNOWN}' is not in the bank; modes: {MODES_NAMED}"),
}  # fmt: skip


@pytest.fixture(scope="module")
def model(logged: Logged):
    return load(logged)


@pytest.mark.parametrize("case", list(BAD))
def test_garbage_is_refused_in_process_naming_the_problem(model, data, case: str):
    """The table as MLflow's scoring server builds it from a JSON `dataframe_split` (pandas, no schema)."""
    columns, rows = BAD[case][0](*good_rows(data))
    with pytest.raises(InputError) as refused:
        model.predict(pd.DataFrame(data=rows, columns=columns))
    assert refused.value.message == str(refused.value) == BAD[case][1]
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE" and refused.value.get_http_status_code() == 400


def test_a_full_batch_and_values_inside_the_limits_are_answered(model, data):
    columns, rows = good_rows(data)
    rows = with_cell(with_cell(rows, 0, 0, 1_000_000.0), 1, 1, -1_000_000)  # at the limit: a (silly) number
    full = pd.DataFrame(data=(rows * MAX_ROWS)[:MAX_ROWS], columns=columns)
    out = model.predict(full)
    assert len(out) == MAX_ROWS and np.isfinite(out[PROB_COLUMNS].to_numpy()).all()


def test_the_model_belongs_to_the_study_parent_run(logged: Logged):
    client = mlflow.MlflowClient(logged.tracking_uri)
    _, study = load_study(logged.study)
    runs = client.search_runs([logged.experiment_id], f"tags.`{KIND_TAG}` = 'study'")
    assert [r.info.run_id for r in runs] == [logged.parent]  # logging found the study's parent, made none
    parent = client.get_run(logged.parent)
    assert parent.data.tags[STUDY_TAG] == study["study_id"]
    assert parent.info.status == "FINISHED"  # left as the study left it

    digest = bank_digest(logged.bank, MODES)
    query = f"source_run_id = '{logged.parent}' AND tags.`{DIGEST_TAG}` = '{digest}'"
    models = client.search_logged_models([logged.experiment_id], filter_string=query)
    assert len(models) == 1
    (model,) = models
    assert logged.uri == f"models:/{model.model_id}"
    assert (model.name, model.source_run_id, str(model.status)) == ("mode_bank", logged.parent, "READY")
    assert model.tags["taugate.modes"] == ", ".join(MODES) and model.tags[STUDY_TAG] == study["study_id"]
    assert model.model_id in [o.model_id for o in parent.outputs.model_outputs]  # an output of the parent run
    # the files live in the study folder's own artifact store, the bank folder among them
    location = Path(model.artifact_location.removeprefix("file://"))
    assert location.is_relative_to(logged.study / "mlartifacts")
    bank = location / Model.load(location / "MLmodel").flavors["python_function"]["artifacts"]["bank"]["path"]
    for name in ("bank.json", "bank.safetensors", "foundation.safetensors"):
        assert (bank / name).read_bytes() == (logged.bank / name).read_bytes()
    assert "MLmodel" in [a.path for a in client.list_logged_model_artifacts(model.model_id)]
    # the run's own URI names the same model
    assert load(logged, f"runs:/{logged.parent}/mode_bank").metadata.model_id == model.model_id
    # logging set MLflow's process-wide tracking URI only for its own block
    assert logged.global_uri_after == logged.global_uri_before


# --- the served model -----------------------------------------------------------------------------


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def http(method: str, url: str, body: dict | None = None, timeout: float = REQUEST_WAIT) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def group_members(group: int) -> list[int]:
    """PIDs of the live processes in a process group (from /proc/<pid>/stat: field 5 is the group)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM to the process group the server leads (its PID: start_new_session), then SIGKILL."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_WAIT)
        if group_members(self.process.pid):  # a uvicorn worker outliving the server that started it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def serving(command: list[str], port: int, log: Path, env: dict, cwd: Path | None = None) -> Server:
    """Start a model server (its own process group) and wait until it answers /ping; stopped by the caller."""
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                   cwd=cwd)  # fmt: skip
    served = Server(process, port, log)
    try:
        deadline = time.monotonic() + START_WAIT
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {process.returncode}:\n{served.output()}")
            try:
                if http("GET", f"{served.url}/ping", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not answer /ping within {START_WAIT:.0f} s:\n{served.output()}")
            time.sleep(0.5)
    except BaseException:
        served.stop()
        raise
    return served


@pytest.fixture(scope="module")
def server(logged: Logged, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", logged.uri,
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]  # fmt: skip
    bin_dir = str(Path(sys.executable).parent)  # mlflow runs `exec uvicorn` from PATH: this venv's
    env = os.environ | {"MLFLOW_TRACKING_URI": logged.tracking_uri,  # the child's own environment only
                        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}  # fmt: skip
    served = serving(command, port, log, env)
    try:
        yield served
    finally:
        served.stop()


def test_the_served_model_answers_a_mixed_batch_and_names_an_unknown_mode(server: Server, logged: Logged, data):
    x, names = mixed(data, 4, seed=2)
    frame = request_frame(x, names)
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}
    status, text = http("POST", f"{server.url}/invocations", body)
    assert status == 200, text[:2000]
    rows = json.loads(text)["predictions"]
    assert len(rows) == len(names) and list(rows[0]) == [CLASS_COLUMN, *PROB_COLUMNS]
    expected = in_process(logged.bank, x, names)
    assert [row[CLASS_COLUMN] for row in rows] == expected.argmax(1).tolist()
    served = np.array([[row[c] for c in PROB_COLUMNS] for row in rows])
    np.testing.assert_allclose(served, expected.numpy(), rtol=0, atol=1e-6)

    bad = frame.iloc[:3].copy()
    bad["mode"] = [MODES[0], UNKNOWN, MODES[2]]
    body = {"dataframe_split": {"columns": list(bad.columns), "data": bad.to_numpy().tolist()}}
    status, text = http("POST", f"{server.url}/invocations", body)
    assert status == 400, (status, text[:2000])
    answer = json.loads(text)
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    message = answer["message"]
    assert f"mode '{UNKNOWN}' is not in the bank; modes: {', '.join(MODES)}" in message
    assert http("GET", f"{server.url}/ping")[0] == 200  # a refused request leaves the server serving


def strict_json(text: str):
    """JSON as a strict parser reads it: NaN and Infinity (which Python's json accepts) are refused."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_the_served_model_refuses_garbage_with_a_400_naming_the_problem_and_keeps_serving(server: Server, data):
    """NaN, Inf, an extra column, a missing column, wrong types and a batch over the limit (and the rest of BAD):
    each a 400 whose body is JSON and whose message's first line is the problem; a good request after each
    is answered."""
    columns, rows = good_rows(data)
    good = {"dataframe_split": {"columns": columns, "data": rows}}
    for case, (make, message) in BAD.items():
        bad_columns, bad_rows = make(columns, rows)
        status, text = http("POST", f"{server.url}/invocations",
                            {"dataframe_split": {"columns": bad_columns, "data": bad_rows}})  # fmt: skip
        assert status == 400, (case, status, text[:2000])
        answer = strict_json(text)
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE", case
        assert answer["message"].splitlines()[0] == message, case  # the whole message, one line
        status, text = http("POST", f"{server.url}/invocations", good)
        assert status == 200, (case, text[:2000])
        predictions = strict_json(text)["predictions"]
        assert len(predictions) == 3 and all(np.isfinite(row[c]) for row in predictions for c in PROB_COLUMNS)


def test_the_server_stops_by_its_pid_and_frees_its_port(server: Server):
    assert listening(server.port)
    server.stop()
    assert server.process.returncode is not None
    deadline = time.monotonic() + STOP_WAIT
    while listening(server.port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not listening(server.port)
    while group_members(server.process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_members(server.process.pid) == []  # nothing it started lives on (the uvicorn worker)


# --- `taugate bank` on the study: logged once, and its printed serve line --------------------------------


@dataclass
class Banked:
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    before: set[str]  # READY model ids of the parent run before `taugate bank`
    after_first: set[str]
    after_second: set[str]


def ready_models(logged: Logged) -> set[str]:
    client = mlflow.MlflowClient(logged.tracking_uri)
    found = client.search_logged_models([logged.experiment_id], filter_string=f"source_run_id = '{logged.parent}'")
    return {m.model_id for m in found if str(m.status) == "READY"}


@pytest.fixture(scope="module")
def banked(logged: Logged) -> Banked:
    """`taugate bank STUDY` twice (its TauGate modes: a bank other than the one `logged` logged)."""
    before = ready_models(logged)
    first = taugate("bank", str(logged.study), "--no-compact")
    assert first.returncode == 0, first.stderr[-3000:]
    after_first = ready_models(logged)
    second = taugate("bank", str(logged.study), "--no-compact")
    assert second.returncode == 0, second.stderr[-3000:]
    return Banked(first, second, before, after_first, ready_models(logged))


def test_taugate_bank_twice_logs_the_bank_once(banked: Banked):
    (new,) = banked.after_first - banked.before  # one foundation: one bank model
    assert f"  logged to MLflow as models:/{new}\n" in banked.first.stderr
    assert banked.after_second == banked.after_first  # the second run logged nothing
    assert f"  already logged to MLflow (nothing new logged) as models:/{new}\n" in banked.second.stderr
    assert "  logged to MLflow as" not in banked.second.stderr


def test_the_printed_serve_line_serves_the_bank_from_any_folder(banked: Banked, logged: Logged, data, tmp_path):
    (line,) = [line.split("serve: ", 1)[1] for line in banked.first.stderr.splitlines() if "serve: " in line]
    (model_id,) = banked.after_first - banked.before
    assert f"MLFLOW_TRACKING_URI=sqlite:///{logged.study / 'mlflow.db'} " in line  # the study's store, absolute
    assert f" -m models:/{model_id} --env-manager local -h 127.0.0.1 -p 5001" in line
    port = free_port()
    pasted = line.replace(" -p 5001", f" -p {port}")  # a free port: 5001 may be taken on a shared machine
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a shell as a user's, without this environment on PATH or a tracking URI set
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    served = serving(["bash", "-c", pasted], port, tmp_path / "serve.log", env, cwd=elsewhere)
    try:
        x = data[45.0].test_x[:1]
        frame = request_frame(x, ["taugate@45"])
        body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}
        status, text = http("POST", f"{served.url}/invocations", body)
        assert status == 200, text[:2000]
        (row,) = json.loads(text)["predictions"]
        expected = in_process(logged.study / "bank" / load_bank(logged.bank).foundation_id, x, ["taugate@45"])
        assert row[CLASS_COLUMN] == int(expected.argmax(1)[0])
    finally:
        served.stop()
    assert list(elsewhere.iterdir()) == []  # no stray mlflow.db (nor anything else) in the shell's folder
