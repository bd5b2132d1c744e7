# syntax=docker/dockerfile:1
#
# MLflow tracking server of the TauGate study service: Postgres backend store, artifacts proxied
# through the server (--serve-artifacts), so Ray nodes need only http://mlflow:5000.
#
# Build context is this folder:
#   docker build -f docker/mlflow.Dockerfile -t taugate-mlflow:3.17.2 docker
#
# MLFLOW_VERSION must equal the study image's (docker/Dockerfile): client and server move together.

# BASE_IMAGE: any Debian-based image with Python 3.11 (and its pip) first on PATH; `make images`
# passes a locally made one (docker/local/base.Containerfile) where no registry can be pulled from.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# mlflow[auth] brings what `--app-name basic-auth` needs, so basic auth is an opt-in flag, not a rebuild.
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}"

COPY --chmod=0755 mlflow-entrypoint.sh /usr/local/bin/mlflow-entrypoint

# A fixed uid/gid, so volume ownership is predictable; the artifact folder is created here, owned by
# that user, so that an empty named volume mounted on it starts out writable.
RUN groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --home-dir /mlflow --create-home --shell /usr/sbin/nologin mlflow \
    && mkdir -p /mlflow/artifacts \
    && chown -R 10001:10001 /mlflow

USER 10001:10001
WORKDIR /mlflow
EXPOSE 5000

ENTRYPOINT ["mlflow-entrypoint"]
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--artifacts-destination", "/mlflow/artifacts", "--serve-artifacts"]
