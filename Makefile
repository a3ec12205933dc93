# Observer: two commands for a newcomer — `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OBSERVER_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test deploy-test lint format deps install sim calendar settings datadoc bench clean

## the exact versions in uv.lock (`uv lock` after editing pyproject.toml's dependencies); pip only brings in uv.
## --compile-bytecode as pip does: else the first import of each library compiles it, and in a fresh checkout the
## processes of the rate-limit acceptance tests did that mid-test, stalled, and sent late permits in a burst (EGW00201)
UV_VERSION := 0.13.9
$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv sync -q --frozen --inexact --extra test --compile-bytecode --system-certs
	touch $(STAMP)

install: $(STAMP)

## the pipeline on embedded defaults: local exchange + Dagster UI on 127.0.0.1:3000
run: $(STAMP)
	mkdir -p $(OBSERVER_DATA_DIR) $(DAGSTER_HOME)
	$(BIN)/python -m observer_assets.run_local

## the whole test suite (what CI runs): the bulk on four workers (its tests mostly wait on the servers they start;
## four keep the two cores about 81 % busy and took 4:02-4:49 against two's 5:39-5:46: docs/benchmarks.md); then
## the two rate-limit acceptance tests (SQLite, PostgreSQL) alone, on a machine nothing else is using; then the
## end-to-end runs, which mostly wait on servers they start (dagster dev, Prometheus), three at a time, handed out
## one by one so the longest (the day in the life, put first by tests/conftest.py) has a worker to itself while
## the others share the rest (four at a time was tried: the day took 394 s instead of 340 and the stage 7:52
## instead of 6:55)
RATE_TESTS := tests/shared/test_rate_limit.py tests/shared/test_pg_stores.py
test: $(STAMP) deps lint
	$(BIN)/pytest -q -p no:cacheprovider -n 4 -m "not slow and not deploy" --durations=15
	$(BIN)/pytest -q -p no:cacheprovider -m slow $(RATE_TESTS)
	$(BIN)/pytest -q -p no:cacheprovider -n 3 --maxschedchunk=1 -m "slow and not deploy" --durations=8 $(addprefix --ignore=,$(RATE_TESTS))

## the Docker deployment and the S3 lake, run for real (CI's stage after `make test`; docs/deploy.md): Docker's
## engine, Debian's docker-compose and debootstrap installed and started by .ci/docker (root or passwordless
## sudo), a base image made from Debian's packages, then the images built and the stack and the S3 lake tested
deploy-test: $(STAMP)
	bash .ci/docker
	bash deploy/docker/base-image.sh
	$(BIN)/pytest -q -p no:cacheprovider -m deploy --timeout 3600 tests/deploy

## lint, format and the lock file checked, and every Dagster definition loaded the way the code server loads it
## (`dagster definitions validate`; its successor `dg check defs` needs the dg project layout)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/uv lock --check --system-certs -q
	DAGSTER_HOME=$$(mktemp -d) $(BIN)/dagster definitions validate -w workspace.yaml

## rewrite the code as the linter and formatter want it
format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## the servers the tests start (PostgreSQL, Prometheus/promtool, amtool): probes only when all are present; installs
## the missing ones with apt-get as root or with passwordless sudo; otherwise says what is missing and how to get it
deps:
	@bash .ci/deps

## the local exchange alone, in the foreground (Ctrl-C stops it)
sim: $(STAMP)
	$(BIN)/observer-sim --clock open

## regenerate the KRX calendar (and check the venues' phases) after editing observer_resources/calendar/overrides.toml
## or phases.toml
calendar: $(STAMP)
	$(BIN)/python -m observer_resources.calendar.build

## rewrite docs/data.md's column tables from the schemas and observer_assets/catalog.py after changing a dataset
datadoc: $(STAMP)
	$(BIN)/python -m observer_assets.datadoc --write docs/data.md

## rewrite README.md's settings table from observer_resources/settings.py after adding or changing a setting
settings: $(STAMP)
	$(BIN)/python -m observer_resources.settings --write README.md

## benchmarks (results go to docs/benchmarks.md by hand, with the machine)
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
