# txn-window-pipeline: every command sets up .venv itself (pinned dependencies from pyproject.toml).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: venv run test dev check sample clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## Materialize every asset on the configured source (default: the bundled sample) and print a summary.
run: check
	$(BIN)/python -m warehouse.summary

## The test suite (real Flink, real DuckDB, real Dagster runs).
test: venv
	$(BIN)/python -m pytest

## The Dagster UI on http://$(HOST):$(PORT) (loopback only unless HOST is changed).
dev: venv
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp orchestration/dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

## Materialize every asset with its checks, exactly as a user would from the CLI (TXN_* settings apply).
## Fails (non-zero exit) when a blocking check fails; the published warehouse is then left untouched.
check: venv
	$(BIN)/dagster asset materialize -m orchestration --select '*'

## Regenerate the bundled sample (fixed seed: byte-identical output).
sample: venv
	$(BIN)/python -m warehouse.synthetic --rows 12000 --keys 24 --seed 20240511 --out data/sample_transactions.csv

## Benchmark: full pipeline, each stage, both engines, the lab's job and DuckDB (BENCH_ARGS="--rows 100000 1000000 10000000").
BENCH_ARGS ?= --rows 100000 1000000
.PHONY: bench
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf data/warehouse.duckdb data/warehouse.duckdb.wal data/.staging data/.warehouse.duckdb.lock .pytest_cache
