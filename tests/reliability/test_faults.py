"""Killed processes: the published warehouse survives, and the next run cleans up and converges.

(a) SIGKILL the Flink job's process in the middle of a real `dagster asset materialize` run.
(b) SIGKILL the whole pipeline (the dagster CLI and its step worker) while it writes the staging DuckDB.

Both must leave the previously published results in place (byte for byte, readable, consistent), and
a rerun must remove the dead run's staging files and publish tables identical to a clean run.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from tests.conftest import LAB_EXAMPLE, snapshot
from tests.reliability.common import (
    children,
    cmdline,
    find_flink_job,
    is_alive,
    kill_session_leftovers,
    processes_in_session,
    published_state,
    run_pipeline,
    staging_entries,
    start_cli_run,
    wait_for,
)
from warehouse import synthetic

pytestmark = pytest.mark.flink

RUN_TIMEOUT_S = 300  # safety net only


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """(base warehouse holding the lab example, 20k-row source, tables a clean run of it publishes)."""
    root = tmp_path_factory.mktemp("faults")
    base = root / "base.duckdb"
    assert run_pipeline(LAB_EXAMPLE, base).success
    source = root / "transactions_20k.csv"
    synthetic.write_transactions_csv(source, rows=20_000, keys=24, seed=404, late_fraction=0.03)
    clean = root / "clean.duckdb"
    shutil.copyfile(base, clean)
    assert run_pipeline(source, clean).success
    return base, source, snapshot(clean, run_columns=False)


def fresh_copy(base, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(base, warehouse)
    return warehouse


def assert_untouched_and_consistent(warehouse, before, before_bytes):
    assert warehouse.read_bytes() == before_bytes
    assert snapshot(warehouse) == before
    assert all(row[6] for row in published_state(warehouse))  # conserved, per source file


def assert_rerun_converges(source, warehouse, expected):
    leftovers = staging_entries(warehouse)
    assert leftovers, "the killed run left staging files behind (otherwise this test proves nothing)"
    result = run_pipeline(source, warehouse)
    assert result.success
    assert staging_entries(warehouse) == [], f"the rerun did not clean {leftovers}"
    assert snapshot(warehouse, run_columns=False) == expected  # the rerun's own id and clock aside


def test_sigkill_of_the_flink_job_mid_run(scenario, tmp_path):
    base, source, expected = scenario
    warehouse = fresh_copy(base, tmp_path)
    before, before_bytes = snapshot(warehouse), warehouse.read_bytes()
    log = tmp_path / "run.log"
    run = start_cli_run(source, warehouse, log, cwd=tmp_path)
    try:
        staging = str(warehouse.parent / ".staging" / warehouse.name)
        job = wait_for(lambda: find_flink_job(run.pid, staging), 180, 0.05, "the Flink job process")
        jvm = wait_for(
            lambda: [c for c in children(job) if "java" in " ".join(cmdline(c)[:1])], 120, 0.05, "the Flink job's JVM"
        )
        time.sleep(2.0)  # the JVM is up and the job is running
        assert run.poll() is None and find_flink_job(run.pid, staging) == job, "the job ended before the kill"
        os.kill(job, signal.SIGKILL)
        returncode = run.wait(RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    leaked = kill_session_leftovers(run.pid)
    output = log.read_text(errors="replace")

    failure = next((line for line in output.splitlines() if "STEP_FAILURE" in line), "")
    print(f"\nflink kill: job pid {job}, JVM {jvm}; step failure: {failure[-300:]}")
    assert returncode != 0
    assert "replay_event_time_windows" in output and "STEP_FAILURE" in output
    assert "-9" in output or "SIGKILL" in output or "signal" in output.lower(), output[-3000:]
    assert "Published warehouse" not in output
    assert leaked == [], f"processes of the killed job outlived it: {leaked} (JVM was {jvm})"
    assert_untouched_and_consistent(warehouse, before, before_bytes)
    assert_rerun_converges(source, warehouse, expected)


def test_sigkill_of_the_pipeline_while_it_writes_duckdb(scenario, tmp_path):
    base, source, expected = scenario
    warehouse = fresh_copy(base, tmp_path)
    before, before_bytes = snapshot(warehouse), warehouse.read_bytes()
    staging_dir = warehouse.parent / ".staging" / warehouse.name
    run = start_cli_run(source, warehouse, tmp_path / "run.log", cwd=tmp_path)
    try:
        staged = wait_for(
            lambda: [p.name for p in staging_dir.glob("*.duckdb*")] if staging_dir.is_dir() else [],
            180,
            0.002,
            "the run's staging DuckDB file",
        )
        os.killpg(run.pid, signal.SIGKILL)  # the CLI and its step worker: the whole pipeline dies
        run.wait(RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert kill_session_leftovers(run.pid) == []
    assert find_flink_job(run.pid, str(staging_dir)) is None  # it died before Flink was started
    assert not [p for p in processes_in_session(run.pid) if is_alive(p)]
    print(f"\npipeline kill: staging files at the kill: {staged}; after: {staging_entries(warehouse)}")
    assert staged, "killed while the staging copy was being written"
    assert run.returncode == -signal.SIGKILL
    assert_untouched_and_consistent(warehouse, before, before_bytes)
    assert_rerun_converges(source, warehouse, expected)
