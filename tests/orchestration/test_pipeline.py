"""The whole pipeline under real Dagster runs: real Flink job, real DuckDB file."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    DagsterInvalidConfigError,
    PipesSubprocessClient,
    build_run_status_sensor_context,
    materialize,
)

from orchestration.automation import SOURCE_FILE_TAG, WAREHOUSE_TAG, failure_summary, window_freshness_checks
from orchestration.definitions import PIPELINE_ASSETS
from orchestration.settings import REPO_ROOT, PipelineSettings
from tests.conftest import LAB_EXAMPLE, SAMPLE, snapshot, venv_free_env
from warehouse import schema, synthetic

ASSETS = PIPELINE_ASSETS
DAGSTER = Path(REPO_ROOT) / ".venv" / "bin" / "dagster"

pytestmark = pytest.mark.flink


ALL_CHECKS_PASS = {
    "transactions.every_row_accounted_for": True,
    "transactions.event_times_plausible": True,
    "transactions.matches_contract": True,
    "rejected_rows.matches_contract": True,
    "rejected_rows.rejected_ratio_within_limit": True,
    "window_averages.transactions_conserved": True,
    "window_averages.matches_independent_replay": True,
    "window_averages.windows_aligned_and_bounded": True,
    "window_averages.matches_contract": True,
    "late_events.matches_contract": True,
    "late_events.late_ratio_within_limit": True,
    "replays.matches_contract": True,
    "custom_aggregates.matches_contract": True,
    "stream_files.matches_contract": True,
    "watermark_advice.matches_contract": True,
    "watermark_advice.file_in_time_order": True,
    "anomaly_thresholds.threshold_for_every_eligible_key": True,
    "anomaly_thresholds.matches_contract": True,
    "anomalies.no_new_anomalies": True,
    "anomalies.every_anomaly_above_its_threshold": True,
    "anomalies.matches_contract": True,
}


def run_pipeline(
    source: Path, warehouse: Path, instance: DagsterInstance | None = None, tags: dict | None = None, **settings
):
    return materialize(
        ASSETS,
        resources={
            "pipeline": PipelineSettings(source_csv=str(source), warehouse=str(warehouse), **settings),
            "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
        },
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=False,
        tags=tags,
    )


def published_with(warehouse: Path, alter_sql: str) -> Path:
    """A published warehouse with every contract table, then changed by another tool (`alter_sql`)."""
    con = duckdb.connect(str(warehouse))
    schema.create_tables(con)
    con.execute(alter_sql)
    con.close()
    return warehouse


def check_results(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}.{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def check_evaluation(result, name: str):
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if f"{e.asset_key.to_user_string()}.{e.check_name}" == name
    ]
    return evaluation


def step_keys(result, event_type: DagsterEventType) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type == event_type]


def failure_message(result) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "expected a failed step"
    return failures[0].step_failure_data.error.message


def failure_messages(result) -> list[str]:
    """Every failed step's error (with its cause), for an assertion's message: a run that should have
    succeeded says why it did not."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                messages.append(f"{event.step_key}: {error.message.strip()}")
                error = error.cause
    return messages or [e.message for e in result.all_events if e.is_failure]


def test_lab_example_end_to_end(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    result = run_pipeline(LAB_EXAMPLE, warehouse)
    assert result.success
    assert check_results(result) == ALL_CHECKS_PASS
    con = duckdb.connect(str(warehouse), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(
        "SELECT key, strftime(window_start, '%Y-%m-%d %H:%M:%S%z'), strftime(window_end, '%H:%M:%S'), "
        "avg_amount, txn_count, sum_amount::VARCHAR, min_amount::VARCHAR, max_amount::VARCHAR "
        "FROM window_averages ORDER BY window_start"
    ).fetchall()
    assert rows == [
        ("tx1", "2024-05-11 10:00:00+00", "10:00:05", 150.0, 2, "300.0000", "100.0000", "200.0000"),
        ("tx1", "2024-05-11 10:00:05+00", "10:00:10", 300.0, 1, "300.0000", "300.0000", "300.0000"),
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
    first = snapshot(warehouse, run_columns=False)
    result = run_pipeline(SAMPLE, warehouse, flink_parallelism=4, max_late_ratio=0.01)
    assert result.success  # the late-event check only warns
    second = snapshot(warehouse, run_columns=False)
    late_check = check_evaluation(result, "late_events.late_ratio_within_limit")
    assert not late_check.passed and late_check.severity == AssetCheckSeverity.WARN
    metadata = {k: v.value for k, v in late_check.metadata.items()}
    assert metadata["late_events"] == len(second["late_events"]) and metadata["limit"] == 0.01
    recommended = metadata["recommended_out_of_orderness_ms"]
    assert recommended > 1000 and f"out-of-orderness of {recommended} ms" in late_check.description
    assert metadata["recommended_late_events"] <= 0.01 * 12_000  # the advice meets the limit
    windows = result.asset_materializations_for_node("replay_event_time_windows")[0].metadata
    assert windows["flink_records_in"].value == 12_000
    assert windows["flink_records_out"].value == len(second["window_averages"]) + len(second["late_events"])
    plot = result.asset_materializations_for_node("anomaly_thresholds")[0].metadata["plot"].value
    assert plot.startswith("![") and "data:image/svg+xml;base64," in plot
    # identical at parallelism 2 and 4, the run columns aside; replays logs every replay, and the
    # advice has a row for the late-ratio limit, which the second run changed
    changed = {"replays", "watermark_advice"}
    assert {t: rows for t, rows in first.items() if t not in changed} == {
        t: rows for t, rows in second.items() if t not in changed
    }
    assert len(second["replays"]) == 2 and len(first["replays"]) == 1
    assert len(first["transactions"]) == 12_000
    assert len(first["late_events"]) > 0 and len(first["anomaly_thresholds"]) >= 20
    counted = sum(row[5] for row in first["window_averages"])  # txn_count column (tumbling: one window each)
    assert counted + len(first["late_events"]) == len(first["transactions"])


def test_replaying_a_new_file_leaves_every_other_files_rows_unchanged(tmp_path):
    """Daily files accumulate: a run changes its own file's rows and nothing of the others, byte for byte
    (their run ids and clocks included); only the history-wide thresholds are refitted."""
    warehouse = tmp_path / "warehouse.duckdb"
    for source in (LAB_EXAMPLE, SAMPLE):
        assert run_pipeline(source, warehouse).success
    new_file = tmp_path / "day3.csv"
    synthetic.write_transactions_csv(new_file, rows=3000, keys=24, seed=3, late_fraction=0.05)
    new_name = str(new_file.resolve())

    def other_files_rows() -> dict[str, list[tuple]]:
        tables = {}
        for table, rows in snapshot(warehouse).items():
            names = [c.name for c in schema.CONTRACT[table]]
            if "source_file" in names:
                at = names.index("source_file")
                tables[table] = [row for row in rows if row[at] != new_name]
        return tables

    before = other_files_rows()
    assert set(before) == set(schema.TABLES) - {"anomaly_thresholds"}
    assert len(before["transactions"]) == 12_003 and len(before["window_averages"]) > 2_000
    assert run_pipeline(new_file, warehouse).success
    assert other_files_rows() == before
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM transactions WHERE source_file = ?", [new_name]).fetchone() == (3000,)
        assert con.execute("SELECT count(DISTINCT source_file) FROM replays").fetchone() == (3,)
    finally:
        con.close()


def test_bad_file_fails_clearly_and_keeps_the_previous_results(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    assert run_pipeline(LAB_EXAMPLE, warehouse).success
    before = snapshot(warehouse)

    no_amount = tmp_path / "no_amount.csv"
    no_amount.write_text("transaction_id,timestamp\ntx1,2024-05-11 10:00:00\n")
    instance = DagsterInstance.ephemeral()
    result = run_pipeline(no_amount, warehouse, instance=instance)
    assert not result.success
    message = failure_message(result)
    assert str(no_amount) in message and "amount" in message
    # the run-failure sensor's one-line summary names the step and the file
    run = instance.get_run_by_id(result.run_id)
    failure = [e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE]
    context = build_run_status_sensor_context(
        sensor_name="pipeline_failure_summary", dagster_event=failure[0], dagster_instance=instance, dagster_run=run
    ).for_run_failure()
    # this run got its file from the resource, not from run config: the summary names the configured one
    summary = failure_summary(context, configured_source=str(no_amount))
    assert "\n" not in summary and "FAILED" in summary and "ingest_transactions" in summary
    assert f"for file {no_amount} at step" in summary
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
    message = failure_message(result)  # the job's own sentence, not just its exit code
    assert "Flink jobmanager 127.0.0.1:1 is unreachable" in message and "keeps its previous results" in message
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
    rejected_check = check_evaluation(result, "rejected_rows.rejected_ratio_within_limit")
    assert not rejected_check.passed and rejected_check.severity == AssetCheckSeverity.WARN
    assert "3 of 5 data rows are rejected rows (60.00%)" in rejected_check.description
    reasons = " | ".join(row[4] for row in tables["rejected_rows"])
    assert "amount" in reasons and "timestamp" in reasons and "fields" in reasons

    header_only = tmp_path / "header_only.csv"
    header_only.write_text("transaction_id,timestamp,amount\n")
    other = tmp_path / "other.duckdb"
    result = run_pipeline(header_only, other)
    assert result.success
    tables = snapshot(other)
    # the run is recorded (with 0 transactions); every data table is empty
    assert [row[9:] for row in tables["replays"]] == [(0, 0, 0)]
    assert all(rows == [] for table, rows in tables.items() if table not in ("replays", "watermark_advice"))
    assert all(row[6] == 0 for row in tables["watermark_advice"])  # transactions column


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


def test_cli_refuses_a_slide_larger_than_the_size_before_any_run(tmp_path):
    # `dagster asset materialize` with run config, as from the launchpad: a config error, no run in the instance
    warehouse, home = tmp_path / "cli.duckdb", tmp_path / "dagster_home"
    home.mkdir()
    config = PipelineSettings(source_csv=str(LAB_EXAMPLE), warehouse=str(warehouse)).as_metadata()
    config.update(window_kind="sliding", window_size_ms=1000, window_slide_ms=5000)
    done = subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", "orchestration", "--select", "*",
         "--config-json", json.dumps({"resources": {"pipeline": {"config": config}}})],
        cwd=REPO_ROOT,
        env=venv_free_env(TXN_SOURCE_CSV=str(LAB_EXAMPLE), TXN_WAREHOUSE=str(warehouse), DAGSTER_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert "DagsterInvalidConfigError: Invalid config of resource pipeline" in done.stderr, done.stderr[-4000:]
    assert "TXN_WINDOW_SLIDE_MS (5000) must not exceed TXN_WINDOW_SIZE_MS (1000)" in done.stderr
    assert "[launchpad: window_size_ms, window_slide_ms]" in done.stderr
    assert "STEP_START" not in done.stderr + done.stdout
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []
    assert not warehouse.exists()


def test_contract_broken_by_another_writer_blocks_the_run(tmp_path):
    """Another tool changed a column type in the published warehouse: the contract check blocks the run."""
    warehouse = published_with(
        tmp_path / "warehouse.duckdb", "ALTER TABLE transactions ALTER amount TYPE DECIMAL(18, 2)"
    )
    before = snapshot(warehouse)
    result = run_pipeline(LAB_EXAMPLE, warehouse)
    assert not result.success
    contract = check_evaluation(result, "transactions.matches_contract")
    assert not contract.passed and contract.severity == AssetCheckSeverity.ERROR
    assert "transactions.amount is DECIMAL(18,2), expected DECIMAL(18,4)" in contract.description
    assert step_keys(result, DagsterEventType.STEP_FAILURE) == ["ingest_transactions"]
    assert "blocking asset check" in failure_message(result)
    # downstream never ran: no Flink job, no thresholds
    assert step_keys(result, DagsterEventType.STEP_START) == ["ingest_transactions"]
    assert snapshot(warehouse) == before


def test_history_with_another_window_size_blocks_thresholds_and_freshness(tmp_path):
    """A file replayed with 3 s windows, then one with 5 s windows: the mixed history must not be published."""
    warehouse = tmp_path / "warehouse.duckdb"
    instance = DagsterInstance.ephemeral()
    assert run_pipeline(LAB_EXAMPLE, warehouse, instance=instance, window_size_ms=3000).success
    before = snapshot(warehouse)

    # freshness: the window assets were just materialized, so a 26 h freshness check passes ...
    def freshness(fail_after: timedelta) -> dict[str, bool]:
        checks = window_freshness_checks(fail_after)
        done = materialize(
            [*ASSETS, *checks],
            selection=AssetSelection.checks(*checks),
            instance=instance,
            resources={"pipeline": PipelineSettings(), "pipes_subprocess_client": PipesSubprocessClient()},
        )
        return {e.asset_key.to_user_string(): e.passed for e in done.get_asset_check_evaluations()}

    assert freshness(timedelta(hours=26)) == {"window_averages": True, "late_events": True}
    # ... and one whose window has passed fails
    time.sleep(1.5)
    assert freshness(timedelta(seconds=1)) == {"window_averages": False, "late_events": False}

    second = tmp_path / "second.csv"
    second.write_text("transaction_id,timestamp,amount\ntx9,2024-05-12 00:00:01,10\ntx9,2024-05-12 00:00:02,20\n")
    for other_config in ({"window_size_ms": 5000}, {"window_kind": "session", "session_gap_ms": 3000}):
        result = run_pipeline(second, warehouse, instance=instance, **other_config)
        assert not result.success
        message = failure_message(result)
        # one sentence naming both configs and the way out, before anything is written
        assert "tumbling 3000 ms" in message and "TXN_WAREHOUSE" in message
        assert ("tumbling 5000 ms" in message) or ("session gap 3000 ms" in message)
        assert step_keys(result, DagsterEventType.STEP_FAILURE)[0] == "ingest_transactions"
        assert "replay_event_time_windows" not in step_keys(result, DagsterEventType.STEP_START)
        assert snapshot(warehouse) == before
        assert list((tmp_path / ".staging" / "warehouse.duckdb").glob("*.duckdb")) == []


@pytest.mark.parametrize(
    "config",
    [
        {"window_kind": "sliding", "window_size_ms": 10_000, "window_slide_ms": 5000},
        {"window_kind": "session", "session_gap_ms": 3000, "allowed_lateness_ms": 500},
    ],
)
def test_sliding_and_session_runs_pass_every_check(tmp_path, config):
    warehouse = tmp_path / "warehouse.duckdb"
    result = run_pipeline(SAMPLE, warehouse, **config)
    assert result.success
    checks = check_results(result)
    assert {k: v for k, v in checks.items() if k != "anomalies.no_new_anomalies"} == {
        k: v for k, v in ALL_CHECKS_PASS.items() if k != "anomalies.no_new_anomalies"
    }
    tables = snapshot(warehouse)
    (replay_row,) = tables["replays"]
    assert replay_row[3] == config["window_kind"]
    counted = sum(row[5] for row in tables["window_averages"])
    if config["window_kind"] == "sliding":  # every on-time event is in up to two 10 s windows
        assert len(tables["transactions"]) - len(tables["late_events"]) < counted <= 2 * len(tables["transactions"])
    else:  # one session per on-time event
        assert counted + len(tables["late_events"]) == len(tables["transactions"])


@pytest.mark.parametrize(
    "settings, variable",
    [
        ({"window_kind": "tumbling", "window_slide_ms": 1000}, "TXN_WINDOW_SLIDE_MS"),
        ({"window_kind": "sliding", "window_size_ms": 1000, "window_slide_ms": 5000}, "TXN_WINDOW_SLIDE_MS"),
        ({"window_kind": "session", "session_gap_ms": -5}, "TXN_SESSION_GAP_MS"),
    ],
)
def test_window_config_that_makes_no_sense_fails_before_any_write(tmp_path, settings, variable):
    warehouse = tmp_path / "warehouse.duckdb"
    assert run_pipeline(LAB_EXAMPLE, warehouse).success
    before = snapshot(warehouse)
    result = run_pipeline(LAB_EXAMPLE, warehouse, **settings)
    assert not result.success
    assert variable in failure_message(result)
    assert snapshot(warehouse) == before


def test_a_window_kind_typo_in_the_run_config_is_a_config_error_before_any_step(tmp_path):
    # the launchpad's path: the run config overrides the resource; window_kind is an Enum in its schema
    warehouse = tmp_path / "warehouse.duckdb"
    config = {**PipelineSettings(source_csv=str(LAB_EXAMPLE), warehouse=str(warehouse)).as_metadata()}
    with pytest.raises(DagsterInvalidConfigError) as error:
        materialize(
            ASSETS,
            resources={
                "pipeline": PipelineSettings.configure_at_launch(),
                "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
            },
            run_config={"resources": {"pipeline": {"config": {**config, "window_kind": "slidng"}}}},
            instance=DagsterInstance.ephemeral(),
        )
    assert "window_kind" in str(error.value) and "slidng" in str(error.value)
    assert not warehouse.exists()


def test_row_count_is_the_whole_tables_and_the_files_own_count_is_beside_it(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    instance = DagsterInstance.ephemeral()
    assert run_pipeline(LAB_EXAMPLE, warehouse, instance).success
    second = tmp_path / "second.csv"
    second.write_text("transaction_id,timestamp,amount\ntx9,2024-05-12 00:00:01,10\ntx9,2024-05-12 00:00:12,20\n")
    # launched with a warehouse tag that is not where its config writes (a stale tag): the first step corrects it
    result = run_pipeline(second, warehouse, instance, tags={WAREHOUSE_TAG: "/somewhere/else.duckdb"})
    assert result.success
    con = duckdb.connect(str(warehouse), read_only=True)
    for table in ("transactions", "window_averages", "late_events", "replays", "watermark_advice", "anomalies"):
        (materialization,) = [m for m in result.get_asset_materialization_events() if m.asset_key.path == [table]]
        metadata = {k: v.value for k, v in materialization.materialization.metadata.items()}
        (total,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        (own,) = con.execute(f"SELECT count(*) FROM {table} WHERE source_file = ?", [str(second)]).fetchone()
        assert metadata["dagster/row_count"] == total, f"{table}: dagster/row_count is not the table's row count"
        assert metadata["rows_from_this_file"] == own, f"{table}: rows_from_this_file is not the file's rows"
        assert metadata["warehouse"] == str(warehouse) and metadata["source_file"] == str(second), table
        assert isinstance(metadata["published_by_this_step"], bool) and metadata["publish_note"], table
    # the second file's rows are fewer than the table's: the counts tell the two apart
    (transactions,) = con.execute("SELECT count(*) FROM transactions").fetchone()
    con.close()
    assert transactions == 5
    # a run started without a file tag of ours (as the UI's "Materialize" does) is tagged by its first step
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[SOURCE_FILE_TAG] == str(second) and tags[WAREHOUSE_TAG] == str(warehouse)


def test_reconciliation_fails_when_results_are_altered_and_blocks_downstream(tmp_path):
    """Another tool narrowed window_averages.avg_amount to DECIMAL(18,2) in the published warehouse.

    The Flink job is right, but what lands in the table is no longer the exact mean, so the
    independent recomputation disagrees: the blocking reconciliation check fails, anomaly_thresholds
    never runs and nothing is published.
    """
    warehouse = published_with(
        tmp_path / "warehouse.duckdb", "ALTER TABLE window_averages ALTER avg_amount TYPE DECIMAL(18, 2)"
    )
    before = snapshot(warehouse)
    thirds = tmp_path / "thirds.csv"
    thirds.write_text(
        "transaction_id,timestamp,amount\n"
        "tx1,2024-05-11 10:00:00,100\ntx1,2024-05-11 10:00:01,100\ntx1,2024-05-11 10:00:02,101\n"
        "tx2,2024-05-11 10:00:03,10\n"
    )
    result = run_pipeline(thirds, warehouse)
    assert not result.success
    replay_check = check_evaluation(result, "window_averages.matches_independent_replay")
    assert not replay_check.passed and replay_check.severity == AssetCheckSeverity.ERROR
    metadata = replay_check.metadata
    assert metadata["window_value_mismatches"].value == 1  # 301/3 is not 100.33; tx2's 10.0 survives the cast
    assert metadata["windows_compared"].value == 2
    assert metadata["max_abs_avg_diff"].value > 0
    assert step_keys(result, DagsterEventType.STEP_FAILURE) == ["replay_event_time_windows"]
    assert "anomaly_thresholds" not in step_keys(result, DagsterEventType.STEP_START)
    assert snapshot(warehouse) == before


INGEST_IN_ZONE = """
import sys
from dagster import DagsterInstance, materialize
import duckdb
from orchestration.assets import ingest_transactions
from orchestration.settings import PipelineSettings
source, warehouse = sys.argv[1], sys.argv[2]
result = materialize([ingest_transactions], resources={"pipeline": PipelineSettings(source_csv=source,
                     warehouse=warehouse)}, instance=DagsterInstance.ephemeral())
assert result.success
con = duckdb.connect(warehouse, read_only=True)
con.execute("SET TimeZone = 'UTC'")
print(con.execute("SELECT count(*) FILTER (WHERE epoch_ms(event_time) <> event_time_ms), count(*) FROM transactions").fetchall()[0])
"""


def test_event_time_is_the_instant_of_event_time_ms_whatever_the_hosts_time_zone(tmp_path):
    # Chunks are inserted through a second DuckDB connection: it must use UTC too (a host in Tokyo
    # would otherwise shift every event_time by 9 hours).
    env = {**os.environ, "TZ": "Asia/Tokyo"}
    done = subprocess.run([sys.executable, "-c", INGEST_IN_ZONE, str(LAB_EXAMPLE), str(tmp_path / "w.duckdb")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    shifted, rows = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert rows == 3 and shifted == 0


def test_a_file_that_breaks_after_its_first_chunk_fails_with_its_sentence(tmp_path):
    # The error comes while the first chunk is still being inserted by the ingest's worker thread.
    source = tmp_path / "late_break.csv"
    with open(source, "wb") as out:
        out.write(b"transaction_id,timestamp,amount\n")
        out.write(b"".join(b"k%d,2024-05-11 10:00:00,1\n" % (i % 7) for i in range(200_010)))
        out.write("café,2024-05-11 10:00:01,2\n".encode("latin-1"))
    result = run_pipeline(source, tmp_path / "warehouse.duckdb")
    assert not result.success
    assert "UTF-8" in failure_message(result) and str(source) in failure_message(result)
