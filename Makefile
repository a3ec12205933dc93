# Observer: two commands for a newcomer — `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OBSERVER_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test install sim calendar bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## the pipeline on embedded defaults: local exchange + Dagster UI on 127.0.0.1:3000
run: $(STAMP)
	mkdir -p $(OBSERVER_DATA_DIR) $(DAGSTER_HOME)
	$(BIN)/python -m observer_assets.run_local

## the whole test suite (what CI runs): the bulk on two workers, then the load-sensitive acceptance tests alone,
## the rate-limit acceptance test first, on a machine nothing else is using
test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n 2 -m "not slow" --durations=15
	$(BIN)/pytest -q -p no:cacheprovider -m slow tests/shared/test_rate_limit.py
	$(BIN)/pytest -q -p no:cacheprovider -m slow --durations=5 --ignore=tests/shared/test_rate_limit.py

## the local exchange alone, in the foreground (Ctrl-C stops it)
sim: $(STAMP)
	$(BIN)/observer-sim --clock open

## regenerate the KRX calendar after editing observer_resources/calendar/overrides.toml
calendar: $(STAMP)
	$(BIN)/python -m observer_resources.calendar.build

## benchmarks (results go to docs/benchmarks.md by hand, with the machine)
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
