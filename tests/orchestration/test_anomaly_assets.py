"""The anomaly assets under real Dagster runs (real Flink job, real DuckDB file) and the alert webhook
against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import logging
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from dagster import AssetCheckSeverity, DagsterInstance, PipesSubprocessClient, materialize

from orchestration import anomaly_assets
from orchestration.anomaly_assets import anomalies, anomaly_thresholds
from orchestration.assets import ingest_transactions, replay_event_time_windows
from orchestration.plots import anomaly_svg
from orchestration.settings import REPO_ROOT, PipelineSettings
from tests.conftest import snapshot
from tests.warehouse.test_alerts import Hook, closed_port, hook  # noqa: F401 - `hook` is a fixture
from warehouse import thresholds
from warehouse.alerts import DeliveryPolicy

ASSETS = [ingest_transactions, replay_event_time_windows, anomaly_thresholds, anomalies]
WINDOWS_PER_KEY = 60
PLANTED = {("acct-1", 10): 10.0, ("acct-2", 40): 8.0, ("acct-3", 25): 3.0}  # (key, window) -> factor

pytestmark = pytest.mark.flink


def write_csv(path: Path, planted: dict[tuple[str, int], float]) -> Path:
    """3 keys x 60 windows of 5 s, two in-order transactions per window, amounts within +-2 % of
    100, except the planted windows (both transactions multiplied). No late events."""
    lines = ["transaction_id,timestamp,amount"]
    for w in range(WINDOWS_PER_KEY):
        for offset_s in (1, 3):
            for k, key in enumerate(("acct-1", "acct-2", "acct-3")):
                amount = (100 + (w + offset_s + k) % 5 - 2) * planted.get((key, w), 1.0)
                second = w * 5 + offset_s
                lines.append(f"{key},2024-05-11 10:{second // 60:02d}:{second % 60:02d}.{k:03d},{amount:.2f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(source: Path, warehouse: Path, instance: DagsterInstance | None = None, assets=ASSETS, **settings):
    return materialize(
        assets,
        resources={
            "pipeline": PipelineSettings(source_csv=str(source), warehouse=str(warehouse), **settings),
            "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
        },
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def data(warehouse: Path) -> dict[str, list[tuple]]:
    """Every table without the run columns; `replays` logs every replay, so it is left out."""
    tables = snapshot(warehouse, run_columns=False)
    del tables["replays"]
    return tables


def metadata(result, asset: str) -> dict[str, object]:
    (materialization,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def check(result, name: str):
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if f"{e.asset_key.to_user_string()}.{e.check_name}" == name
    ]
    return evaluation


def warnings(instance: DagsterInstance, result) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level >= logging.WARNING and "alert" in entry.user_message.lower()
    ]


@pytest.fixture(autouse=True)
def fast_alerts(monkeypatch: pytest.MonkeyPatch) -> None:
    # the 5 s default would make the failure cases take ~18 s each
    monkeypatch.setattr(anomaly_assets, "ALERT_POLICY", DeliveryPolicy(timeout_s=0.5, attempts=3, backoff_s=0.01))


@pytest.fixture(scope="module")
def planted_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("input") / "planted.csv", PLANTED)


@pytest.fixture(scope="module")
def baseline(planted_csv: Path, tmp_path_factory) -> tuple[Path, object]:
    """A run without a webhook: the data every other run must reproduce."""
    warehouse = tmp_path_factory.mktemp("baseline") / "warehouse.duckdb"
    result = run(planted_csv, warehouse)
    assert result.success
    return warehouse, result


def test_run_without_webhook_writes_anomalies_and_warns(baseline) -> None:
    warehouse, result = baseline
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = con.execute(
        "SELECT key, window_start_ms, txn_count, avg_amount > threshold, score FROM anomalies ORDER BY score DESC"
    ).fetchall()
    con.close()
    start = int(datetime(2024, 5, 11, 10, tzinfo=UTC).timestamp() * 1000)  # the file's first window
    # x10 and x8 are found; x3 is too (+200 % against a spread of +-2 %)
    assert [(key, (ms - start) // 5000, n, above) for key, ms, n, above, _ in rows] == [
        ("acct-1", 10, 2, True), ("acct-2", 40, 2, True), ("acct-3", 25, 2, True),
    ]  # fmt: skip
    assert rows[0][4] > rows[1][4] > rows[2][4] > 3.5
    no_new = check(result, "anomalies.no_new_anomalies")
    assert not no_new.passed and no_new.severity == AssetCheckSeverity.WARN
    table = no_new.metadata["top"].value
    assert table.splitlines()[0].startswith("| key") and "acct-1" in table.splitlines()[2]
    assert check(result, "anomalies.every_anomaly_above_its_threshold").passed
    assert check(result, "anomalies.matches_contract").passed
    assert check(result, "anomaly_thresholds.threshold_for_every_eligible_key").passed
    meta = metadata(result, "anomalies")
    assert (
        meta["dagster/row_count"] == 3 and meta["rows_from_this_file"] == 3 and meta["published_by_this_step"] is True
    )
    assert meta["alert"] == "off (TXN_ALERT_WEBHOOK_URL is not set)"
    assert meta["method"] == "robust_log_z_sqrt_n_binned" and meta["params"]["z"] == 3.5
    svg = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)\)", meta["plot"]).group(1)).decode()
    assert svg.count('class="anomaly"') == 3
    thresholds_meta = metadata(result, "anomaly_thresholds")
    assert thresholds_meta["dagster/row_count"] == 3 and thresholds_meta["anomalous_windows"] == 3


def test_webhook_gets_the_runs_anomalies(planted_csv: Path, tmp_path: Path, hook: Hook) -> None:  # noqa: F811
    warehouse = tmp_path / "warehouse.duckdb"
    result = run(planted_csv, warehouse, alert_webhook_url=hook.url + "?token=s3cret", alert_max_items=2)
    assert result.success
    (body,) = hook.json_bodies()  # exactly one POST
    assert set(body) == {"source_file", "run_id", "count", "anomalies"}
    assert body["source_file"] == str(planted_csv.resolve())
    assert body["run_id"] == result.run_id
    assert body["count"] == 3 and len(body["anomalies"]) == 2
    con = duckdb.connect(str(warehouse), read_only=True)
    top = con.execute(
        "SELECT key, window_start_ms, window_end_ms, avg_amount, threshold, score FROM anomalies "
        "ORDER BY score DESC LIMIT 2"
    ).fetchall()
    con.close()
    names = ("key", "window_start", "window_end", "avg_amount", "threshold", "score")
    assert body["anomalies"] == [dict(zip(names, row, strict=True)) for row in top]
    assert all(
        isinstance(a["window_start"], int) and a["window_end"] - a["window_start"] == 5000 for a in body["anomalies"]
    )
    meta = metadata(result, "anomalies")
    assert (meta["alert"], meta["alert_items"], meta["alert_attempts"], meta["alert_http_status"]) == (
        "sent",
        2,
        1,
        200,
    )
    assert meta["alert_target"] == f"http://127.0.0.1:{hook.port}/…"


def test_no_post_when_the_file_has_no_anomalies(tmp_path: Path, hook: Hook) -> None:  # noqa: F811
    clean = write_csv(tmp_path / "clean.csv", {})
    result = run(clean, tmp_path / "warehouse.duckdb", alert_webhook_url=hook.url)
    assert result.success
    assert hook.received == []
    assert check(result, "anomalies.no_new_anomalies").passed
    meta = metadata(result, "anomalies")
    assert meta["alert"] == "nothing to report" and meta["dagster/row_count"] == 0


@pytest.mark.parametrize("failure", ["closed port", "HTTP 500", "no answer"])
def test_a_failing_webhook_never_fails_the_run_nor_changes_the_data(
    failure: str,
    planted_csv: Path,
    baseline,
    tmp_path: Path,
    hook: Hook,  # noqa: F811
) -> None:
    """A real run of the two anomaly steps on a copy of the baseline's warehouse (the earlier steps
    run before the alert exists, so only these two can be affected; this keeps a Flink start per
    case out of the suite), with a webhook that fails three ways."""
    if failure == "closed port":
        url = f"http://alice:pa55word@127.0.0.1:{closed_port()}/services/T0K3N?token=qu3ry"
    else:
        hook.script = [("status", 500)] if failure == "HTTP 500" else [("sleep", 3.0)]
        url = f"http://alice:pa55word@127.0.0.1:{hook.port}/services/T0K3N?token=qu3ry"
    instance = DagsterInstance.ephemeral()
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(baseline[0], warehouse)
    result = run(
        planted_csv, warehouse, instance=instance, assets=[anomaly_thresholds, anomalies], alert_webhook_url=url
    )
    assert result.success
    assert data(warehouse) == data(baseline[0])
    assert metadata(result, "anomalies")["published_by_this_step"] is True
    (line,) = warnings(instance, result)  # ONE WARN line
    assert "NOT delivered" in line and "after 3 attempt(s)" in line
    expected = {"closed port": "could not connect", "HTTP 500": "HTTP 500", "no answer": "no answer within 0.5 s"}
    assert expected[failure] in line
    every_message = " ".join(entry.user_message for entry in instance.all_logs(result.run_id))
    for secret in ("alice", "pa55word", "T0K3N", "qu3ry"):
        assert secret not in every_message
    meta = metadata(result, "anomalies")
    assert meta["alert"] == "failed" and meta["alert_attempts"] == 3 and expected[failure] in meta["alert_error"]
    assert all(secret not in str(meta) for secret in ("alice", "pa55word", "T0K3N", "qu3ry"))
    if failure != "closed port":
        assert len(hook.received) == 3


def test_replaying_the_same_file_twice_does_not_duplicate_anomalies(
    planted_csv: Path, baseline, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(baseline[0], warehouse)
    result = run(planted_csv, warehouse)
    assert result.success
    assert data(warehouse) == data(baseline[0])
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT (key, window_start_ms)), min(run_id), max(run_id) "
                       "FROM anomalies").fetchall() == [(3, 3, result.run_id, result.run_id)]  # fmt: skip
    assert con.execute("SELECT count(*) FROM replays").fetchall() == [(2,)]  # both replays are logged
    con.close()


def test_invalid_webhook_url_stops_the_run_before_anything_is_written(planted_csv: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    result = run(planted_csv, warehouse, alert_webhook_url="ftp://bob:s3cret@files.example.com/drop")
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "TXN_ALERT_WEBHOOK_URL must be an http:// or https:// URL (scheme: 'ftp')" in message
    assert "s3cret" not in message and "bob" not in message
    assert not warehouse.exists()


def test_plot_marks_the_given_windows_not_just_those_above_the_line() -> None:
    points = [(0, 10.0), (5000, 11.0), (10000, 30.0), (15000, 10.5)]
    default = anomaly_svg({"k": (points, 20.0)}, "t")
    assert default.count('class="anomaly"') == 1 and "1 anomalous" in default
    given = anomaly_svg({"k": (points, 20.0, [5000, 10000])}, "t")
    assert given.count('class="anomaly"') == 2 and "2 anomalous" in given
    assert "no key has a threshold yet" in anomaly_svg({}, "t")


def test_thresholds_after_a_replay_into_history_equal_a_full_refit(planted_csv: Path, baseline, tmp_path: Path) -> None:
    """A run refits only the keys its file changed; the table must be what a full refit gives."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(baseline[0], warehouse)

    def day(amounts: tuple[float, float]) -> Path:
        lines = ["transaction_id,timestamp,amount"]
        for w in range(WINDOWS_PER_KEY):
            for offset_s, amount in zip((1, 3), amounts, strict=True):
                second = w * 5 + offset_s
                lines.append(f"acct-1,2024-05-12 10:{second // 60:02d}:{second % 60:02d},{amount + w % 3:.2f}")
                lines.append(f"acct-9,2024-05-12 10:{second // 60:02d}:{second % 60:02d}.5,{amount:.2f}")
        path = tmp_path / "day.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    assert run(day((90.0, 110.0)), warehouse).success
    # replayed again with other amounts but the same counts and maxima per key
    result = run(day((95.0, 110.0)), warehouse)
    assert result.success
    refit = tmp_path / "refit.duckdb"
    shutil.copy(warehouse, refit)
    con = duckdb.connect(str(refit))
    before = con.execute("SELECT * FROM anomaly_thresholds ORDER BY key").fetchall()
    method = anomaly_assets._method(PipelineSettings())
    thresholds.replace_thresholds(con, min_windows=method.min_windows, z=method.z)
    assert con.execute("SELECT * FROM anomaly_thresholds ORDER BY key").fetchall() == before
    assert {row[0] for row in before} == {"acct-1", "acct-2", "acct-3", "acct-9"}
    con.close()
