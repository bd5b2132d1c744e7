"""One validating reader for every file of a study folder.

Each reader returns the file's content or raises `DamagedFile` (`<file>: <what is wrong>; <what to do>`);
`check_folder` runs them all and lists every damaged file without changing anything (`taugate status
--check`). What a damaged file costs:

- study.json, spec.yaml, plan.json, optuna.db: the command stops (exit 2) naming the file and the fix;
- mlflow.db (the study's own MLflow store): `taugate track` and `taugate ui` stop naming it and the fix, every
  other command warns (tracking is best effort: the folder holds every result);
- a ledger entry (trials/<key>/config.json, metrics.json): the trial counts as not run, so `resume`
  trains it again (`analysis.table.load.ledger_entry` decides, for the study and its report alike);
- a history or firing statistics (trials/<key>/history.json, gate_stats.json): that trial's learning curve or
  firing map is missing, with a warning;
- a foundation (foundations/<key>.safetensors): set aside as `<name>.damaged-<time>` by the trial that
  needs it, which trains it again (`study.folder.storage.FoundationStore.get`);
- a bank's bank.json: named, with the command that builds it again.
"""

from __future__ import annotations

import shlex
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from analysis.table.load import TRIALS_DIR, gate_stats_damage, history_damage, ledger_damage, read_plan
from study.folder.filenames import OPTUNA_DB, SPEC_FILE, STUDY_FILE
from study.spec.loader import SpecError, parse_spec
from study.spec.study_spec import StudySpec
from trainables.files import DamagedFile, read_json

FOUNDATIONS_DIR, BANK_DIR, BANK_INDEX = "foundations", "bank", "bank.json"
MLFLOW_DB = "mlflow.db"  # the study's own MLflow store (study.tracking.mlflow_store.default_tracking_uri)
STUDY_FIELDS = ("name",)  # what every command reads (an Optuna study's also needs OPTUNA_FIELD)
OPTUNA_FIELD = "optuna_study_name"

__all__ = ["DamagedFile", "check_folder", "quarantine", "read_plan"]


def _quoted(study_dir: Path) -> str:
    return shlex.quote(str(Path(study_dir).resolve()))


def read_study_json(study_dir: Path) -> dict[str, Any]:
    path = Path(study_dir) / STUDY_FILE
    fix = ("it is written once, when the study starts: restore it from a copy or backup of the study "
           "(the ledger in trials/ keeps every finished trial)")  # fmt: skip
    try:
        study = read_json(path, ValueError)
    except ValueError as err:
        raise DamagedFile(path, str(err).removeprefix(f"{path}: "), fix) from None
    missing = [name for name in STUDY_FIELDS if not isinstance(study.get(name), str)]
    if missing:
        raise DamagedFile(path, f"no {', '.join(missing)}", fix)
    return study


def read_spec(study_dir: Path) -> StudySpec:
    path = Path(study_dir) / SPEC_FILE
    fix = ("restore the spec the study ran: a copy or backup of the study, or the `spec.yaml` artifact of "
           "its MLflow parent run")  # fmt: skip
    try:
        text = path.read_text()
        return parse_spec(yaml.safe_load(text), source=str(path))
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedFile(path, f"unreadable ({err})", fix) from None
    except yaml.YAMLError as err:
        raise DamagedFile(path, f"YAML syntax error ({' '.join(str(err).split())})", fix) from None
    except SpecError as err:
        raise DamagedFile(path, f"not a valid spec ({str(err).removeprefix(f'{path}: ')})", fix) from None


def check_optuna(study_dir: Path, study: dict[str, Any]) -> None:
    """An Optuna study's name in study.json, then `<study>/optuna.db` (its storage) and that study in it;
    raise `DamagedFile` if either is damaged."""
    if not isinstance(study_name := study.get(OPTUNA_FIELD), str):
        raise DamagedFile(Path(study_dir) / STUDY_FILE, f"no {OPTUNA_FIELD} (an Optuna study's name)",
                          "restore it from a copy or backup of the study")  # fmt: skip
    path = Path(study_dir) / OPTUNA_DB
    if not path.is_file():
        return
    problem = optuna_problem(path, study_name)
    if problem is not None:
        raise DamagedFile(path, problem, optuna_fix(study_dir))


def optuna_fix(study_dir: Path) -> str:
    return (
        "restore it from a copy or backup of the study; or move it aside and "
        f"`taugate resume {_quoted(study_dir)}` starts the search afresh (configurations it draws again "
        "are answered from trials/)"
    )


def sqlite_problem(path: Path, tables: set[str], kind: str) -> str | None:
    """What is wrong with a SQLite store that must hold `tables` (None: it reads, passes SQLite's quick check and
    has them, or a live driver holds it locked: busy, not damaged). Read only: a damaged file is never "repaired"
    by a library creating its tables in it."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            result = db.execute("PRAGMA quick_check").fetchone()
            found = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        db.close()
    except sqlite3.OperationalError as err:
        return None if "locked" in str(err) else f"not a readable SQLite database ({err})"
    except sqlite3.DatabaseError as err:
        return f"not a readable SQLite database ({err})"
    if result is None or result[0] != "ok":
        return f"SQLite integrity check failed ({result[0] if result else 'no answer'})"
    if not tables <= found:
        return f"not {kind} (no {' and '.join(sorted(tables))} tables)"
    return None


def optuna_problem(path: Path, study_name: str) -> str | None:
    """What is wrong with an Optuna SQLite store (None: it opens and holds `study_name`)."""
    if problem := sqlite_problem(path, {"studies", "trials"}, "an Optuna storage"):
        return problem
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            found = db.execute("SELECT 1 FROM studies WHERE study_name = ?", (study_name,)).fetchone()
        db.close()
    except sqlite3.DatabaseError as err:
        return f"not a readable Optuna storage ({err})"
    return None if found else f"holds no Optuna study {study_name!r}"


def mlflow_damage(study_dir: Path) -> DamagedFile | None:
    """The study's own MLflow store (`<study>/mlflow.db`) when it exists and is damaged: not a readable SQLite
    database, or one without MLflow's tables."""
    path = Path(study_dir) / MLFLOW_DB
    if not path.is_file() or (problem := sqlite_problem(path, {"experiments", "runs"}, "an MLflow store")) is None:
        return None
    aside = shlex.quote(str(path.resolve())) + " " + shlex.quote(str(path.resolve()) + ".damaged")
    return DamagedFile(path, problem, f"the study folder holds every result: `mv {aside}`, then "
                       f"`taugate track {_quoted(study_dir)}` logs the study to a new store from it "
                       f"(and `taugate report {_quoted(study_dir)}` its report)")  # fmt: skip


def foundation_damage(study_dir: Path) -> list[DamagedFile]:
    """Every foundation that cannot be loaded (truncated, corrupted, not a foundation)."""
    from trainables.formats.checkpoints import CheckpointError, load_foundation  # torch: only to load them

    damage = []
    for path in sorted((Path(study_dir) / FOUNDATIONS_DIR).glob("*.safetensors")):
        try:
            load_foundation(path)
        except CheckpointError as err:
            problem = str(err).removeprefix(f"{path}: ")
            damage.append(DamagedFile(path, problem, foundation_fix(path, study_dir)))
    return damage


def foundation_fix(path: Path, study_dir: Path) -> str:
    return (
        f"`taugate resume {_quoted(study_dir)}` sets it aside as {path.name}.damaged-<time> and trains it again "
        "for the trials still to run (finished trials keep their results); to train it again for finished "
        "trials too, delete their metrics.json as well"
    )


def quarantine(path: Path) -> Path:
    """Rename a damaged file to `<name>.damaged-<UTC time>` beside it (kept for inspection, never read)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    path.rename(target)
    return target


def bank_damage(study_dir: Path) -> list[DamagedFile]:
    damage = []
    for path in sorted((Path(study_dir) / BANK_DIR).glob(f"*/{BANK_INDEX}")):
        try:
            read_json(path, ValueError)
        except ValueError as err:
            fix = f"build the banks again: `taugate bank {_quoted(study_dir)}` writes {path.parent.name}/ anew"
            damage.append(DamagedFile(path, str(err).removeprefix(f"{path}: "), fix))
    return damage


def description_warnings(study_dir: Path) -> list[DamagedFile]:
    """Damaged histories and firing statistics: a trial's curve or firing map is missing, its results stay."""
    folders = sorted(Path(study_dir, TRIALS_DIR).glob("*/"))
    return [d for folder in folders for check in (history_damage, gate_stats_damage) if (d := check(folder))]


def entry_warnings(study_dir: Path) -> list[DamagedFile]:
    """The ledger's damaged entries, histories, firing statistics and banks' indexes: each is a warning (the
    trial counts as not run; a curve or map is missing; a bank is built again), never a stop."""
    return ledger_damage(study_dir) + description_warnings(study_dir) + bank_damage(study_dir)


def check_folder(study_dir: Path) -> list[DamagedFile]:
    """Every damaged file of the study folder, changing nothing."""
    study_dir = Path(study_dir)
    damage: list[DamagedFile] = []
    study: dict[str, Any] | None = None
    try:
        study = read_study_json(study_dir)
    except DamagedFile as err:
        damage.append(err)
    try:
        read_spec(study_dir)
    except DamagedFile as err:
        damage.append(err)
    try:
        read_plan(study_dir)
    except DamagedFile as err:
        damage.append(err)
    if study is not None and (Path(study_dir) / OPTUNA_DB).is_file():
        try:
            check_optuna(study_dir, study)
        except DamagedFile as err:
            damage.append(err)
    if (store := mlflow_damage(study_dir)) is not None:
        damage.append(store)
    return damage + entry_warnings(study_dir) + foundation_damage(study_dir)
