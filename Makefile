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

## Lint and format check (ruff, configured in pyproject.toml); `make format` rewrites the files.
.PHONY: lint format
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## The test suite (real Flink, real DuckDB, real Dagster runs).
test: venv
	$(BIN)/python -m pytest

## The Dagster instance that `make run`, `make check` and `make dev` share (DAGSTER_HOME, default .dagster_home/):
## a CLI run's materializations, checks and logs are what the UI shows next. Created with orchestration/dagster.yaml.
.PHONY: instance
instance:
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp orchestration/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

## The Dagster UI on http://$(HOST):$(PORT) (loopback only unless HOST is changed). The default incoming folder of
## the file sensor (data/incoming/, TXN_INCOMING_DIR overrides it) is created if missing.
dev: venv instance
	$(if $(TXN_INCOMING_DIR),,mkdir -p data/incoming)
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

## Materialize every asset with its checks, exactly as a user would from the CLI (TXN_* settings apply).
## Fails (non-zero exit) when a blocking check fails; the published warehouse is then left untouched.
## Records the run in the shared instance (DAGSTER_HOME), so `make dev` shows it.
check: venv instance
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster asset materialize -m orchestration --select '*'

## Regenerate the bundled sample (fixed seed: byte-identical output).
sample: venv
	$(BIN)/python -m warehouse.synthetic --rows 12000 --keys 24 --seed 20240511 --out data/sample_transactions.csv

## Benchmark (bench/run.py, ~15-25 min on a quiet 2-core machine): full pipeline per window kind, each stage, a plain Flink
## SQL baseline, key cardinality (24 / 500 / one key per row), DuckDB and the lab's job, at 100k and 1M rows -> bench/results/.
## Opt-in: BENCH_ARGS="--history" (12k sample on a 30M-row warehouse), "--rows 10000000 --kinds tumbling --repeat 1 ...".
BENCH_ARGS ?= --rows 100000 1000000 --repeat 3
.PHONY: bench
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## A Flink session cluster on 127.0.0.1 from the wheel, in the background (workdir, pid file and logs in
## $(FLINK_CLUSTER_DIR)); one slot per TXN_FLINK_PARALLELISM (default 2). Prints the TXN_FLINK_JOBMANAGER to use.
FLINK_CLUSTER_DIR ?= .flink-cluster
FLINK_REST_PORT ?= 8081
FLINK_CLUSTER_SLOTS ?= $(or $(TXN_FLINK_PARALLELISM),2)
.PHONY: cluster-up cluster-down
cluster-up: venv
	$(BIN)/python -m flink_jobs.cluster --workdir $(FLINK_CLUSTER_DIR) --rest-port $(FLINK_REST_PORT) --slots $(FLINK_CLUSTER_SLOTS) --background

cluster-down:
	$(BIN)/python -m flink_jobs.cluster --workdir $(FLINK_CLUSTER_DIR) --stop

clean:
	rm -rf data/warehouse.duckdb data/warehouse.duckdb.wal data/warehouse.duckdb.segments data/.staging data/.warehouse.duckdb.lock .pytest_cache build
