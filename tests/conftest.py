"""Shared fixtures: real files, real DuckDB databases, real Flink runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from warehouse import flink_output, schema, synthetic
from warehouse.windows import WindowSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT / "data"
LAB_EXAMPLE = DATA / "lab_example.csv"
SAMPLE = DATA / "sample_transactions.csv"


def transactions_db(path: Path, events, source_file: str = "input.csv") -> duckdb.DuckDBPyConnection:
    """A real DuckDB file whose `transactions` table holds the given (source_row, key, ts, amount)
    events (amounts as Decimal, str or int; stored exactly as DECIMAL(18,4))."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    schema.create_tables(con)
    frame = pd.DataFrame(
        [(row, key, ts, str(amount)) for row, key, ts, amount in events],
        columns=["source_row", "key", "event_time_ms", "amount"],
    )
    con.register("events", frame)
    con.execute(
        "INSERT INTO transactions SELECT ?, source_row, source_row, key, key, "
        "epoch_ms(event_time_ms)::TIMESTAMPTZ, event_time_ms, amount::DECIMAL(18,4) FROM events",
        [source_file],
    )
    con.unregister("events")
    return con


def run_window_job(con: duckdb.DuckDBPyConnection, workdir: Path, spec: WindowSpec, *, parallelism: int,
                   source_file: str = "input.csv") -> dict:  # fmt: skip
    """Stage the file's transactions, run `python -m flink_jobs.window_job` as a separate process
    (as the asset does) and load its output into window_averages and late_events."""
    staged = workdir / "staged.csv"
    output = workdir / "output"
    flink_output.stage_input(con, source_file, staged)
    command = [sys.executable, "-m", "flink_jobs.window_job", "--input", str(staged), "--output", str(output),
               "--parallelism", str(parallelism), *spec.job_arguments()]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    con.execute("DELETE FROM window_averages WHERE source_file = ?", [source_file])
    con.execute("DELETE FROM late_events WHERE source_file = ?", [source_file])
    flink_output.load_output(con, output, source_file, spec)
    return json.loads(done.stdout.strip().splitlines()[-1])


def job_windows(con: duckdb.DuckDBPyConnection, source_file: str = "input.csv") -> list[tuple]:
    """(key, start, end, count, sum, min, max) of window_averages, sorted like the reference."""
    return con.execute(
        "SELECT key, window_start_ms, window_end_ms, txn_count, sum_amount, min_amount, max_amount "
        "FROM window_averages WHERE source_file = ? ORDER BY ALL",
        [source_file],
    ).fetchall()


def job_late(con: duckdb.DuckDBPyConnection, source_file: str = "input.csv") -> list[tuple]:
    """(source_row, key, ts, amount, watermark_ms) of late_events, sorted by source_row."""
    return con.execute(
        "SELECT source_row, key, event_time_ms, amount, watermark_ms FROM late_events "
        "WHERE source_file = ? ORDER BY source_row",
        [source_file],
    ).fetchall()


@pytest.fixture(scope="session")
def generated_20k(tmp_path_factory) -> Path:
    """20k rows with disorder and >= 5% late events under the default config (fixed seed)."""
    path = tmp_path_factory.mktemp("generated") / "transactions_20k.csv"
    synthetic.write_transactions_csv(path, **synthetic.TEST_SETTINGS)
    return path


def snapshot(warehouse: Path, *, run_columns: bool = True) -> dict[str, list[tuple]]:
    """Every table of the contract, fully sorted (read-only connection).

    `run_columns=False` leaves out schema.RUN_COLUMNS (which run wrote a row): what is left must be
    identical for the same files and config, whatever the run.
    """
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = {}
        for table, columns in schema.TABLES.items():
            kept = [name for name, _ in columns if run_columns or name not in schema.RUN_COLUMNS]
            tables[table] = con.execute(f"SELECT {', '.join(kept)} FROM {table} ORDER BY ALL").fetchall()
        return tables
    finally:
        con.close()


def venv_free_env(**extra: str) -> dict[str, str]:
    """The environment of a shell where the venv is NOT activated."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(extra)
    return env
