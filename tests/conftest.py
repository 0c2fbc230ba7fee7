"""Shared fixtures: real files, real DuckDB databases, real Flink runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from warehouse import schema, synthetic

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT / "data"
LAB_EXAMPLE = DATA / "lab_example.csv"
SAMPLE = DATA / "sample_transactions.csv"


def write_staged_input(path: Path, events) -> Path:
    """The Flink job's input format: source_row,key,event_time_ms,amount (CSV, no header)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for source_row, key, ts, amount in events:
            writer.writerow([source_row, key, ts, repr(float(amount))])
    return path


def run_flink_job(staged: Path, output: Path, *, parallelism: int, **options) -> dict:
    """Run `python -m flink_jobs.window_average` as a separate process, as the asset does."""
    command = [sys.executable, "-m", "flink_jobs.window_average", "--input", str(staged), "--output", str(output),
               "--parallelism", str(parallelism)]  # fmt: skip
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_job_output(output: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(windows, late) as DataFrames sorted like the warehouse tables."""

    def load(folder: str, columns: list[str], order: list[str]) -> pd.DataFrame:
        rows = []
        for path in sorted((output / folder).glob("*.jsonl")):
            with open(path, encoding="utf-8") as handle:
                rows += [json.loads(line) for line in handle]
        frame = pd.DataFrame(rows, columns=columns)
        return frame.sort_values(order).reset_index(drop=True)

    windows = load("windows", ["key", "window_start_ms", "window_end_ms", "avg_amount", "txn_count"],
                   ["key", "window_start_ms"])  # fmt: skip
    late = load("late", ["source_row", "key", "event_time_ms", "amount", "watermark_ms"], ["source_row"])
    return windows, late


def transactions_db(path: Path, events, source_file: str = "input.csv") -> duckdb.DuckDBPyConnection:
    """A real DuckDB file whose `transactions` table holds the given events."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    schema.create_tables(con)
    frame = pd.DataFrame(list(events), columns=["source_row", "key", "event_time_ms", "amount"])
    con.register("events", frame)
    con.execute(
        "INSERT INTO transactions SELECT ?, source_row, source_row, key, key, "
        "epoch_ms(event_time_ms)::TIMESTAMPTZ, event_time_ms, amount FROM events",
        [source_file],
    )
    con.unregister("events")
    return con


@pytest.fixture(scope="session")
def generated_20k(tmp_path_factory) -> Path:
    """20k rows with disorder and >= 5% late events under the default config (fixed seed)."""
    path = tmp_path_factory.mktemp("generated") / "transactions_20k.csv"
    synthetic.write_transactions_csv(path, **synthetic.TEST_SETTINGS)
    return path


def venv_free_env(**extra: str) -> dict[str, str]:
    """The environment of a shell where the venv is NOT activated."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(extra)
    return env
