"""The names of the files and folders a study folder holds (study/folder/storage.py shows the layout)."""

STUDY_FILE, SPEC_FILE = "study.json", "spec.yaml"  # the study's metadata and the spec as run
PLAN_FILE = "plan.json"  # a grid study's planned trials (study.spec.plan.planned_trials)
OPTUNA_DB = "optuna.db"  # an Optuna study's storage
TUNE_DIR = "tune"  # the Ray Tune experiments, one `run-N` per run or resume
METRICS_FILE, CONFIG_FILE = "metrics.json", "config.json"  # a finished trial's ledger entry
