#!/bin/sh
# Entry point of the MLflow server image. When PGPASSWORD_FILE names a file (a compose or Kubernetes
# secret), its content becomes PGPASSWORD, which libpq uses whenever the backend-store URI carries no
# password (postgresql://mlflow@postgres:5432/mlflow): the password then never appears in the URI,
# the process list or MLflow's logs. Everything else is passed through unchanged.
set -eu
if [ -n "${PGPASSWORD_FILE:-}" ]; then
    PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
    export PGPASSWORD
fi
exec "$@"
