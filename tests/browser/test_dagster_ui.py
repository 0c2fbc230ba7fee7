"""`dagster dev -w workspace.yaml` end to end: GraphQL listing, a materialization launched in headless
Chromium, and the incoming-folder sensor with the daemon running. Test order matters (one server)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pytest

from orchestration.automation import SOURCE_FILE_TAG
from orchestration.settings import PipelineSettings
from tests.browser.conftest import ARTIFACTS, SENSOR_INTERVAL_S, DagsterUI

pytestmark = [pytest.mark.flink, pytest.mark.browser]

CHROMIUM = Path(os.environ.get("TXN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
# Checks of each asset in the pipeline (the two freshness checks included).
EXPECTED_CHECKS = {
    "transactions": {"every_row_accounted_for", "matches_contract", "event_times_plausible"},
    "rejected_rows": {"matches_contract", "rejected_ratio_within_limit"},
    "window_averages": {"transactions_conserved", "matches_independent_replay", "windows_aligned_and_bounded",
                        "matches_contract", "freshness_check"},
    "late_events": {"matches_contract", "late_ratio_within_limit", "freshness_check"},
    "replays": {"matches_contract"},
    "custom_aggregates": {"matches_contract"},
    "stream_files": {"matches_contract"},
    "watermark_advice": {"matches_contract", "file_in_time_order"},
    "anomaly_thresholds": {"threshold_for_every_eligible_key", "matches_contract"},
    "anomalies": {"no_new_anomalies", "every_anomaly_above_its_threshold", "matches_contract"},
}  # fmt: skip

DEFINITIONS_QUERY = """{
  assetNodes { assetKey { path } groupName kinds owners { ... on TeamAssetOwner { team } }
    internalFreshnessPolicy { ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds } }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
  repositoriesOrError { ... on RepositoryConnection { nodes {
    schedules { name cronSchedule scheduleState { status } }
    sensors { name sensorState { status } } } } }
}"""

CHECK_STATUS_QUERY = """{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks {
  name executionForLatestMaterialization { status runId } } } } } }"""


def test_graphql_lists_assets_checks_schedule_and_sensors(dagster_ui: DagsterUI):
    data = dagster_ui.graphql(DEFINITIONS_QUERY)
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert len(nodes) >= 5 and "anomaly_thresholds" in nodes
    checks = {key: {c["name"] for c in n["assetChecksOrError"]["checks"]} for key, n in nodes.items()}
    assert checks == EXPECTED_CHECKS
    assert sum(1 for names in checks.values() if names) >= 3
    for key, node in nodes.items():
        assert node["groupName"] == "replay" and node["owners"] == [{"team": "data-engineering"}], key
        assert "duckdb" in node["kinds"], key
    assert "flink" in nodes["window_averages"]["kinds"] and "pandas" in nodes["transactions"]["kinds"]
    policies = {key: n["internalFreshnessPolicy"] for key, n in nodes.items() if n["internalFreshnessPolicy"]}
    day = 24 * 3600
    assert policies == {key: {"failWindowSeconds": day + 2 * 3600, "warnWindowSeconds": day}
                        for key in ("window_averages", "late_events")}  # fmt: skip
    (repo,) = data["repositoriesOrError"]["nodes"]
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]}
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    assert schedules == {"daily_replay": "STOPPED"}  # off by default
    assert sensors["incoming_csv_sensor"] == "RUNNING"
    assert {"pipeline_failure_summary", "freshness_checks_sensor"} <= set(sensors)


# What the launchpad's "Launch run" button sends (the UI shows a PythonError in its "Error" dialog).
LAUNCH_MUTATION = """mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) { __typename
    ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


def test_the_launchpad_refuses_a_slide_larger_than_the_size_before_a_run_exists(dagster_ui: DagsterUI):
    """The config passes the launchpad's schema check; the launch is refused by the code server's config
    mapping (orchestration/settings.py, checked_at_launch), so no run and no step exists."""
    config = PipelineSettings(warehouse=str(dagster_ui.warehouse)).as_metadata()
    config.update(window_kind="sliding", window_size_ms=1000, window_slide_ms=5000)
    before = [r for r in dagster_ui.runs() if r["jobName"] == "replay_transactions"]  # (not the sensors' runs)
    selector = {"repositoryLocationName": "orchestration", "repositoryName": "__repository__",
                "pipelineName": "replay_transactions"}  # fmt: skip
    data = dagster_ui.graphql_as_the_ui(
        LAUNCH_MUTATION,
        {"executionParams": {"selector": selector, "runConfigData": {"resources": {"pipeline": {"config": config}}}}},
    )["launchPipelineExecution"]
    assert data["__typename"] == "PythonError", data
    assert "DagsterInvalidConfigError: Invalid config of resource pipeline" in data["message"], data["message"]
    assert "TXN_WINDOW_SLIDE_MS (5000) must not exceed TXN_WINDOW_SIZE_MS (1000)" in data["message"]
    assert "[launchpad: window_size_ms, window_slide_ms]" in data["message"]
    assert [r for r in dagster_ui.runs() if r["jobName"] == "replay_transactions"] == before


@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("TXN_REQUIRE_BROWSER"),
    reason=f"{CHROMIUM} is not installed (apt-get install -y chromium); TXN_REQUIRE_BROWSER=1 makes this fail",
)
def test_materialize_in_the_browser_and_see_the_checks_pass(dagster_ui: DagsterUI):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{dagster_ui.url}/asset-groups")
            skip = page.get_by_role("button", name="Skip")  # the first-visit newsletter dialog
            try:
                skip.click(timeout=15_000)
            except Exception:
                pass
            for asset in EXPECTED_CHECKS:
                expect(page.get_by_text(asset, exact=True).first).to_be_visible(timeout=30_000)
            before = {r["runId"] for r in dagster_ui.runs()}
            page.get_by_role("button", name="Materialize all").click()
            expect(page.get_by_text("Launched run")).to_be_visible(timeout=30_000)
            launched = {
                r["runId"] for r in dagster_ui.runs() if not any(t["key"] == "dagster/sensor_name" for t in r["tags"])
            }
            (run_id,) = launched - before  # (the freshness sensor may launch check-only runs meanwhile)

            # The run's page in the UI shows its status; wait there until it reports success.
            page.goto(f"{dagster_ui.url}/runs/{run_id}")
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=240_000)
            assert dagster_ui.wait_for_run(run_id) == "SUCCESS", dagster_ui.log_tail()

            # The asset graph shows every asset after the run. With nine assets the graph opens zoomed
            # out, where it draws no per-asset check counts: that every check passed is asserted through
            # the UI's GraphQL API below, and on the checks tab of window_averages.
            page.goto(f"{dagster_ui.url}/asset-groups")
            for asset in EXPECTED_CHECKS:
                expect(page.get_by_text(asset, exact=True).first).to_be_visible(timeout=60_000)
            graph = ARTIFACTS / "asset_graph_checks_passed.png"
            page.screenshot(path=str(graph))

            # The checks tab of window_averages lists each of its checks as succeeded.
            page.goto(f"{dagster_ui.url}/assets/window_averages?view=checks")
            for name in EXPECTED_CHECKS["window_averages"]:
                expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Succeeded", exact=True)).to_have_count(5, timeout=30_000)
            checks_tab = ARTIFACTS / "window_averages_checks.png"
            page.screenshot(path=str(checks_tab))

            # The anomaly plot (an SVG data URI in markdown metadata) renders as an image. Long
            # markdown sits behind "[Show Markdown]", which opens it in a dialog.
            page.goto(f"{dagster_ui.url}/assets/anomaly_thresholds?view=events")
            page.get_by_role("row").filter(has_text="plot").first.get_by_text("[Show Markdown]").click(timeout=30_000)
            plot = page.locator('img[src^="data:image/svg+xml;base64,"]').first
            expect(plot).to_be_visible(timeout=30_000)
            assert plot.evaluate("img => img.complete && img.naturalWidth") == 720
            events = ARTIFACTS / "anomaly_thresholds_plot.png"
            page.screenshot(path=str(events))
            print(f"\nscreenshots: {graph} {checks_tab} {events}")
        finally:
            browser.close()

    # Cross-check with the UI's GraphQL API: every check of every asset passed in that run.
    data = dagster_ui.graphql(CHECK_STATUS_QUERY)
    for node in data["assetNodes"]:
        for check in node["assetChecksOrError"]["checks"]:
            execution = check["executionForLatestMaterialization"]
            assert execution and execution["status"] == "SUCCEEDED", (node["assetKey"], check)


def _runs_for(ui: DagsterUI, path: Path) -> list[dict]:
    return ui.runs({SOURCE_FILE_TAG: str(path)})


def _wait_for_runs(ui: DagsterUI, path: Path, count: int, timeout: float = 240) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs_for(ui, path)
        if len(runs) >= count and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return runs
        time.sleep(1)
    raise TimeoutError(f"no {count} finished run(s) for {path}: {_runs_for(ui, path)}\n{ui.log_tail()}")


def test_a_new_csv_in_the_incoming_folder_gives_exactly_one_run(dagster_ui: DagsterUI):
    dropped = dagster_ui.incoming / "2024-05-12.csv"
    staging = dagster_ui.incoming.parent / "2024-05-12.csv.part"
    staging.write_text(
        "transaction_id,timestamp,amount\ntx7,2024-05-12 09:00:00,10\ntx7,2024-05-12 09:00:01,30\n"
        "tx8,2024-05-12 09:00:07,5\n"
    )
    os.replace(staging, dropped)  # appears complete, as a file moved into the folder does
    runs = _wait_for_runs(dagster_ui, dropped, 1)
    assert [r["status"] for r in runs] == ["SUCCESS"], dagster_ui.log_tail()
    assert runs[0]["jobName"] == "replay_transactions"
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert tags.get("dagster/sensor_name") == "incoming_csv_sensor"
    # more sensor ticks see the same file version: still exactly one run
    time.sleep(2 * SENSOR_INTERVAL_S + 1)
    assert len(_runs_for(dagster_ui, dropped)) == 1

    # the file was replayed into the history next to the sample the browser test materialized
    con = duckdb.connect(str(dagster_ui.warehouse), read_only=True)
    try:
        per_file = dict(con.execute("SELECT source_file, count(*) FROM window_averages GROUP BY 1").fetchall())
    finally:
        con.close()
    assert per_file[str(dropped)] == 2

    # a changed file is a new version: exactly one more run
    dropped.write_text("transaction_id,timestamp,amount\ntx7,2024-05-12 09:00:00,10\n")
    runs = _wait_for_runs(dagster_ui, dropped, 2)
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"]
    time.sleep(SENSOR_INTERVAL_S + 2)
    assert len(_runs_for(dagster_ui, dropped)) == 2
