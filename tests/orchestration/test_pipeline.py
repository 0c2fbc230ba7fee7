"""The whole pipeline under real Dagster runs: real Flink job, real DuckDB file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, PipesSubprocessClient, materialize

from orchestration.assets import anomaly_thresholds, ingest_transactions, replay_event_time_windows
from orchestration.settings import REPO_ROOT, PipelineSettings
from tests.conftest import LAB_EXAMPLE, SAMPLE, venv_free_env
from warehouse import schema

ASSETS = [ingest_transactions, replay_event_time_windows, anomaly_thresholds]
DAGSTER = Path(REPO_ROOT) / ".venv" / "bin" / "dagster"

pytestmark = pytest.mark.flink


def run_pipeline(source: Path, warehouse: Path, **settings):
    return materialize(
        ASSETS,
        resources={
            "pipeline": PipelineSettings(source_csv=str(source), warehouse=str(warehouse), **settings),
            "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
        },
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    """Every table of the contract, fully sorted."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {
            table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in schema.TABLES
        }
    finally:
        con.close()


def check_results(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def failure_message(result) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "expected a failed step"
    return failures[0].step_failure_data.error.message


def test_lab_example_end_to_end(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    result = run_pipeline(LAB_EXAMPLE, warehouse)
    assert result.success
    assert check_results(result) == {
        "every_row_accounted_for": True,
        "transactions_conserved": True,
        "matches_independent_replay": True,
        "threshold_for_every_eligible_key": True,
    }
    con = duckdb.connect(str(warehouse), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(
        "SELECT key, strftime(window_start, '%Y-%m-%d %H:%M:%S%z'), strftime(window_end, '%H:%M:%S'), "
        "avg_amount, txn_count FROM window_averages ORDER BY window_start"
    ).fetchall()
    assert rows == [
        ("tx1", "2024-05-11 10:00:00+00", "10:00:05", 150.0, 2),
        ("tx1", "2024-05-11 10:00:05+00", "10:00:10", 300.0, 1),
    ]
    assert con.execute("SELECT count(*) FROM transactions").fetchall() == [(3,)]
    assert con.execute("SELECT count(*) FROM late_events").fetchall() == [(0,)]
    for table in schema.TABLES:
        assert schema.contract_mismatches(con, table) == []
    con.close()
    assert not any((tmp_path / ".staging" / "warehouse.duckdb").iterdir()), "a successful run leaves no staging files"


def test_materializing_twice_gives_identical_tables(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    assert run_pipeline(SAMPLE, warehouse).success
    first = snapshot(warehouse)
    assert run_pipeline(SAMPLE, warehouse, flink_parallelism=4).success
    second = snapshot(warehouse)
    assert first == second
    assert len(first["transactions"]) == 12_000
    assert len(first["late_events"]) > 0 and len(first["anomaly_thresholds"]) >= 20
    counted = sum(row[5] for row in first["window_averages"])  # txn_count column
    assert counted + len(first["late_events"]) == len(first["transactions"])


def test_bad_file_fails_clearly_and_keeps_the_previous_results(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    assert run_pipeline(LAB_EXAMPLE, warehouse).success
    before = snapshot(warehouse)

    no_amount = tmp_path / "no_amount.csv"
    no_amount.write_text("transaction_id,timestamp\ntx1,2024-05-11 10:00:00\n")
    result = run_pipeline(no_amount, warehouse)
    assert not result.success
    message = failure_message(result)
    assert str(no_amount) in message and "amount" in message
    assert snapshot(warehouse) == before

    not_utf8 = tmp_path / "latin1.csv"
    not_utf8.write_bytes("transaction_id,timestamp,amount\ncafé,2024-05-11 10:00:00,1\n".encode("latin-1"))
    result = run_pipeline(not_utf8, warehouse)
    assert not result.success
    assert "UTF-8" in failure_message(result)
    assert snapshot(warehouse) == before


def test_flink_failure_after_ingest_keeps_the_previous_results(tmp_path):
    """Ingest has already written the run's staging copy when the Flink job fails."""
    warehouse = tmp_path / "warehouse.duckdb"
    assert run_pipeline(LAB_EXAMPLE, warehouse).success
    before = snapshot(warehouse)
    result = run_pipeline(SAMPLE, warehouse, flink_jobmanager="127.0.0.1:1")  # nothing listens there
    assert not result.success
    assert [e.step_key for e in result.all_events if e.is_step_failure] == ["replay_event_time_windows"]
    assert snapshot(warehouse) == before
    # the next good run clears the failed run's leftovers and succeeds
    assert run_pipeline(SAMPLE, warehouse).success
    assert list((tmp_path / ".staging" / "warehouse.duckdb").iterdir()) == []


def test_rejected_rows_and_header_only_file(tmp_path):
    messy = tmp_path / "messy.csv"
    messy.write_text(
        "\ufeffAmount, Timestamp ,transaction_id,note\r\n"
        "100,2024-05-11 10:00:00,tx1,ok\r\n"
        "abc,2024-05-11 10:00:01,tx1,bad amount\r\n"
        "5,not a time,tx2,bad time\r\n"
        '7,2024-05-11T10:00:02+09:00,"a,b",offset\r\n'
        "1,2,3\r\n",
        encoding="utf-8",
    )
    warehouse = tmp_path / "warehouse.duckdb"
    result = run_pipeline(messy, warehouse)
    assert result.success, failure_message(result)
    tables = snapshot(warehouse)
    assert len(tables["transactions"]) == 2 and len(tables["rejected_rows"]) == 3
    reasons = " | ".join(row[4] for row in tables["rejected_rows"])
    assert "amount" in reasons and "timestamp" in reasons and "fields" in reasons

    header_only = tmp_path / "header_only.csv"
    header_only.write_text("transaction_id,timestamp,amount\n")
    other = tmp_path / "other.duckdb"
    result = run_pipeline(header_only, other)
    assert result.success
    assert all(rows == [] for rows in snapshot(other).values())


def test_files_accumulate_and_replaying_one_replaces_only_its_rows(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    assert run_pipeline(LAB_EXAMPLE, warehouse).success
    second = tmp_path / "second.csv"
    second.write_text("transaction_id,timestamp,amount\ntx9,2024-05-12 00:00:01,10\ntx9,2024-05-12 00:00:02,20\n")
    assert run_pipeline(second, warehouse).success
    assert run_pipeline(LAB_EXAMPLE, warehouse).success
    con = duckdb.connect(str(warehouse), read_only=True)
    per_file = dict(con.execute("SELECT source_file, count(*) FROM window_averages GROUP BY 1").fetchall())
    con.close()
    assert per_file == {str(LAB_EXAMPLE): 2, str(second): 1}


def test_cli_materializes_without_an_activated_venv(tmp_path):
    warehouse = tmp_path / "cli.duckdb"
    done = subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", "orchestration", "--select", "*"],
        cwd=REPO_ROOT,
        env=venv_free_env(TXN_SOURCE_CSV=str(LAB_EXAMPLE), TXN_WAREHOUSE=str(warehouse)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT avg_amount, txn_count FROM window_averages ORDER BY window_start_ms").fetchall() == [
        (150.0, 2),
        (300.0, 1),
    ]
    con.close()
