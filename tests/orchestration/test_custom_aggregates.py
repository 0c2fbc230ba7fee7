"""Your own AggregateFunction through real Dagster runs: published with its name and a preview, and
every failure stops the run with one sentence while the previous publish stays as it was."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, Definitions, PipesSubprocessClient

from orchestration.assets import ingest_transactions, replay_event_time_windows
from orchestration.settings import REPO_ROOT, PipelineSettings
from tests.conftest import LAB_EXAMPLE
from tests.flink_jobs.custom_aggregate_examples import weighted_sum
from warehouse import schema

pytestmark = pytest.mark.flink

# Up to the window step, which then publishes (the last table of the run's selection): the
# anomaly assets downstream do not read custom_aggregates.
ASSETS = [ingest_transactions, replay_event_time_windows]
SELECTION = [key for assets_def in ASSETS for key in assets_def.keys]
EX = "tests.flink_jobs.custom_aggregate_examples"
MEDIAN = "flink_jobs.aggregates.median:MedianAmount"
GOOD = f"{MEDIAN},{EX}:WeightedSum"
# the lab example: tx1 at 10:00:00/100, 10:00:03/200, 10:00:06/300 (5 s windows)
FIRST_WINDOW = "[2024-05-11 10:00:00.000, 2024-05-11 10:00:05.000) UTC"


def run(warehouse: Path, aggregates: str, instance: DagsterInstance | None = None):
    """A real run that records its selection, as `dagster asset materialize --select ...` does (the
    run's last selected table publishes; dagster.materialize records none)."""
    resources = {
        "pipeline": PipelineSettings(source_csv=str(LAB_EXAMPLE), warehouse=str(warehouse), aggregates=aggregates),
        "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
    }
    job = Definitions(assets=ASSETS, resources=resources).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance or DagsterInstance.ephemeral(), asset_selection=SELECTION, raise_on_error=False
    )


def snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in schema.TABLES}
    finally:
        con.close()


def failure(result) -> tuple[str, str]:
    """(step, description of the Failure it raised) of the run's one failed step."""
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1, [e.step_key for e in failures]
    data = failures[0].step_failure_data
    assert data.user_failure_data is not None, data.error.message  # a dagster.Failure, not a crash
    return failures[0].step_key, data.user_failure_data.description


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A warehouse with a good publish that has custom aggregates, and that run's result."""
    warehouse = tmp_path_factory.mktemp("published") / "warehouse.duckdb"
    result = run(warehouse, GOOD)
    assert result.success
    return warehouse, result


@pytest.fixture
def previous(published, tmp_path) -> tuple[Path, dict]:
    """A copy of the good publish, and its contents."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(published[0], warehouse)
    before = snapshot(warehouse)
    assert before["custom_aggregates"], "the previous publish must have custom aggregates to keep"
    return warehouse, before


def test_custom_aggregates_are_published_with_their_name_and_a_preview(published):
    warehouse, result = published
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = con.execute(
        "SELECT aggregate, key, window_start_ms - 1715421600000, window_end_ms - window_start_ms, value, "
        "epoch_ms(window_start) = window_start_ms, epoch_ms(window_end) = window_end_ms "
        "FROM custom_aggregates ORDER BY ALL"
    ).fetchall()
    assert schema.contract_mismatches(con, "custom_aggregates") == []
    con.close()
    expected_weighted = [weighted_sum("tx1", [(1715421600000, 100), (1715421603000, 200)]),
                         weighted_sum("tx1", [(1715421606000, 300)])]  # fmt: skip
    assert rows == [
        (MEDIAN, "tx1", 0, 5000, statistics.median([100.0, 200.0]), True, True),
        (MEDIAN, "tx1", 5000, 5000, 300.0, True, True),
        (f"{EX}:WeightedSum", "tx1", 0, 5000, expected_weighted[0], True, True),
        (f"{EX}:WeightedSum", "tx1", 5000, 5000, expected_weighted[1], True, True),
    ]
    checks = {f"{e.asset_key.to_user_string()}.{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}
    assert checks["custom_aggregates.matches_contract"] is True
    (materialization,) = [
        m for m in result.asset_materializations_for_node("replay_event_time_windows")
        if m.asset_key.to_user_string() == "custom_aggregates"
    ]  # fmt: skip
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["aggregates"] == f"{MEDIAN}, {EX}:WeightedSum" and metadata["aggregate_count"] == 2
    assert metadata["dagster/row_count"] == 4
    preview = metadata["preview"]
    assert "MedianAmount" in preview and "WeightedSum" in preview and "150" in preview and "tx1" in preview


def test_without_aggregates_a_replay_drops_the_files_previous_custom_rows(previous):
    warehouse, before = previous
    result = run(warehouse, "")
    assert result.success
    after = snapshot(warehouse)
    assert after["custom_aggregates"] == [] and after["window_averages"] == before["window_averages"]


@pytest.mark.parametrize(
    "aggregates,expected",
    [
        (
            "no_such_package.agg:Median",
            "TXN_AGGREGATE entry 'no_such_package.agg:Median': module "
            "'no_such_package.agg' was not found on PYTHONPATH",
        ),
        (
            "flink_jobs.aggregates.median:Mean",
            "TXN_AGGREGATE entry 'flink_jobs.aggregates.median:Mean': module "
            f"'flink_jobs.aggregates.median' ({REPO_ROOT / 'flink_jobs' / 'aggregates' / 'median.py'}) has no "
            "attribute 'Mean'",
        ),
        (f"{EX}:LacksMerge", f"TXN_AGGREGATE entry '{EX}:LacksMerge': LacksMerge lacks merge"),
        (
            "flink_jobs.aggregates.median.MedianAmount",
            "TXN_AGGREGATE entry 'flink_jobs.aggregates.median.MedianAmount' is not package.module:ClassName",
        ),
        (f"{MEDIAN},", f"TXN_AGGREGATE='{MEDIAN},' has an empty entry"),
    ],
    ids=["missing-module", "missing-class", "lacks-merge", "malformed", "empty-entry"],
)
def test_a_bad_setting_stops_the_run_before_the_flink_job(previous, aggregates, expected):
    warehouse, before = previous
    result = run(warehouse, aggregates)
    assert not result.success
    step, message = failure(result)
    assert step == "ingest_transactions"  # the first step: nothing staged, no Flink job started
    assert message.startswith("Invalid configuration: ") and expected in message
    assert snapshot(warehouse) == before


@pytest.mark.parametrize(
    "aggregate,sentence",
    [
        ("RaisesInAdd", "RaisesInAdd.add raised ValueError('amount 100.0 is not welcome')"),
        ("ReturnsText", "ReturnsText.get_result returned '300.00 EUR' (a str), not a number or None,"),
    ],
    ids=["method-raises", "result-not-a-number"],
)
def test_a_failing_aggregate_fails_the_run_with_one_sentence(previous, aggregate, sentence):
    warehouse, before = previous
    instance = DagsterInstance.ephemeral()
    result = run(warehouse, f"{MEDIAN},{EX}:{aggregate}", instance=instance)
    assert not result.success
    step, message = failure(result)
    full = (
        f"custom aggregate {EX}:{aggregate} failed in the Flink job: {sentence} for key 'tx1' in window {FIRST_WINDOW}"
    )
    assert step == "replay_event_time_windows"
    assert message == (
        f"The Flink job for {LAB_EXAMPLE} failed ({full}). The published warehouse {warehouse} keeps its "
        "previous results; rerun once the cause is fixed."
    )
    assert "\tat " not in message  # no Java stack trace
    # the job's own log line (Dagster Pipes) carries the same sentence
    assert any(full in (entry.user_message or "") for entry in instance.all_logs(result.run_id))
    assert snapshot(warehouse) == before
