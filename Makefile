# The two commands of the README: `make run` (the main job) and `make test` (the suite).
# Each installs what it needs into .venv first; a second call skips the install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Headless Chromium for the browser tests, from Debian (a test tool's own browser download fails offline).
BROWSER := /usr/bin/chromedriver
$(BROWSER):
	apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null

install: $(STAMP)

run: install
	$(BIN)/taugate run configs/paper.yaml

test: install $(BROWSER)
	$(BIN)/ruff check . && $(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports --no-cache

bench: install
	$(BIN)/python -m benchmarks.run

# The images of docker/ (podman, or docker where a Docker engine runs; docker/local/images.sh) and the
# compose cluster run as containers from them (tests/containers/, about 6 minutes, so not in `make test`).
PODMAN := /usr/bin/podman
$(PODMAN):
	apt-get update -qq && apt-get install -y -qq podman runc debootstrap >/dev/null

.PHONY: images test-containers
images: $(if $(shell docker info >/dev/null 2>&1 && echo docker),,$(PODMAN))
	docker/local/images.sh

test-containers: install images
	$(BIN)/python -m pytest -m containers tests/containers
