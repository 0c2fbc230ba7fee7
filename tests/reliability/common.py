"""Helpers for the reliability tests: real pipeline runs, process control via /proc, warehouse state."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb
from dagster import DagsterInstance, PipesSubprocessClient, materialize

from orchestration.definitions import PIPELINE_ASSETS
from orchestration.settings import REPO_ROOT, PipelineSettings
from tests.conftest import venv_free_env

ASSETS = PIPELINE_ASSETS  # a full run, as `dagster asset materialize --select "*"` does
DAGSTER = Path(REPO_ROOT) / ".venv" / "bin" / "dagster"
FLINK_JOB_MODULE = "flink_jobs.window_job"
BLOCKING_CHECKS = (
    "every_row_accounted_for",
    "transactions_conserved",
    "matches_independent_replay",
    "windows_aligned_and_bounded",
)

# One statement, so one snapshot: per source file, the conservation law and the counts that identify
# a published state. A reader can judge consistency without trusting two separate queries.
# `conserved` is the law of tumbling and session windows (the default): one window per on-time
# transaction; sliding windows count a transaction once per window that holds it.
STATE_SQL = """
WITH t AS (SELECT source_file, count(*) AS n FROM transactions GROUP BY ALL),
     r AS (SELECT source_file, count(*) AS n FROM rejected_rows GROUP BY ALL),
     w AS (SELECT source_file, count(*) AS n, sum(txn_count) AS counted FROM window_averages GROUP BY ALL),
     l AS (SELECT source_file, count(*) AS n FROM late_events GROUP BY ALL),
     f AS (SELECT source_file FROM t UNION SELECT source_file FROM r UNION SELECT source_file FROM w
           UNION SELECT source_file FROM l)
SELECT f.source_file,
       coalesce(t.n, 0) AS transactions,
       coalesce(r.n, 0) AS rejected,
       coalesce(w.n, 0) AS windows,
       coalesce(w.counted, 0)::BIGINT AS counted,
       coalesce(l.n, 0) AS late,
       coalesce(t.n, 0) = coalesce(w.counted, 0) + coalesce(l.n, 0) AS conserved,
       (SELECT count(*) FROM anomaly_thresholds) AS threshold_keys
FROM f LEFT JOIN t USING (source_file) LEFT JOIN r USING (source_file) LEFT JOIN w USING (source_file)
       LEFT JOIN l USING (source_file)
ORDER BY f.source_file
"""


def run_pipeline(source: Path, warehouse: Path, **settings):
    """One in-process Dagster run of every table asset of the definitions."""
    return materialize(
        ASSETS,
        resources={
            "pipeline": PipelineSettings(source_csv=str(source), warehouse=str(warehouse), **settings),
            "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
        },
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def check_results(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def failure_message(result) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "expected a failed step"
    return failures[0].step_failure_data.error.message


def state(con: duckdb.DuckDBPyConnection) -> tuple[tuple, ...]:
    return tuple(con.execute(STATE_SQL).fetchall())


def published_state(warehouse: Path) -> tuple[tuple, ...]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return state(con)
    finally:
        con.close()


def staging_entries(warehouse: Path) -> list[str]:
    folder = warehouse.parent / ".staging" / warehouse.name
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --- processes -----------------------------------------------------------------------------------


def start_cli_run(source: Path, warehouse: Path, log: Path, cwd: Path, **env: str) -> subprocess.Popen:
    """`dagster asset materialize -m orchestration --select '*'` in its own session (process group).

    *cwd* should be a scratch folder: without DAGSTER_HOME the CLI keeps a temporary instance folder
    in its working directory, which a SIGKILL leaves behind."""
    handle = open(log, "wb")
    try:
        return subprocess.Popen(
            [str(DAGSTER), "asset", "materialize", "-m", "orchestration", "--select", "*"],
            cwd=cwd,
            env=venv_free_env(TXN_SOURCE_CSV=str(source), TXN_WAREHOUSE=str(warehouse), **env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        handle.close()


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[3])  # fields after "(comm)": state ppid pgrp session ...
    except (OSError, IndexError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def processes_in_session(session: int) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and session_of(int(e)) == session]


def children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(c) for c in handle.read().split()]
        except OSError:
            pass
    return found


def find_flink_job(session: int, input_marker: str) -> int | None:
    """The Python process of the Flink job of *our* run (by session and by its --input path)."""
    for pid in processes_in_session(session):
        args = cmdline(pid)
        if FLINK_JOB_MODULE in args and any(input_marker in a for a in args):
            return pid
    return None


def wait_for(predicate, timeout: float, interval: float = 0.005, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def kill_session_leftovers(session: int, grace: float = 30.0) -> list[int]:
    """Wait for the processes of a session we started to exit; SIGKILL (by pid) those that do not.

    Returns the pids that had to be killed (a non-empty list means something leaked)."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        alive = [p for p in processes_in_session(session) if is_alive(p)]
        if not alive:
            return []
        time.sleep(0.2)
    alive = [p for p in processes_in_session(session) if is_alive(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive
