"""`make run`, then `make dev`, as a new user runs them: the UI started afterwards shows the CLI runs'
materializations (one shared Dagster instance), the column descriptions, the table's true row count after
a second file, and flags a typo in the launchpad's window kind before launch."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import duckdb
import pytest
import yaml

from orchestration.automation import SOURCE_FILE_TAG, WAREHOUSE_TAG
from orchestration.settings import PipelineSettings
from tests.browser.conftest import ARTIFACTS, DagsterUI, free_port
from tests.browser.test_dagster_ui import CHROMIUM, CHROMIUM_FLAGS
from tests.conftest import LAB_EXAMPLE, REPO_ROOT
from warehouse import schema

pytestmark = [
    pytest.mark.flink,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("TXN_REQUIRE_BROWSER"),
        reason=f"{CHROMIUM} is not installed (apt-get install -y chromium); TXN_REQUIRE_BROWSER=1 makes this fail",
    ),
]

SECOND_FILE = "transaction_id,timestamp,amount\ntx9,2024-05-12 00:00:01,10\ntx9,2024-05-12 00:00:12,20\n"

LATEST = """query Latest($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetMaterializations(limit: 1) { runId metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""


def make(target: str, env: dict[str, str], log: Path, timeout: float = 600) -> None:
    with open(log, "ab") as out:
        done = subprocess.run(["make", target], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"make {target} failed (exit {done.returncode}); see {log}"


@pytest.fixture(scope="module")
def after_make_run(tmp_path_factory):
    """`make run` on one file and `make check` on a second, then `make dev`: all on one DAGSTER_HOME."""
    base = tmp_path_factory.mktemp("shared_instance")
    home, warehouse, incoming = base / "dagster_home", base / "warehouse.duckdb", base / "incoming"
    second = base / "second.csv"
    second.write_text(SECOND_FILE)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),  # the Makefile's default is .dagster_home; created by make itself
        "TXN_WAREHOUSE": str(warehouse),
        "TXN_SOURCE_CSV": str(LAB_EXAMPLE),
        "TXN_INCOMING_DIR": str(incoming),
        "TXN_ANOMALY_Z": "1000",
    }
    log = base / "make.log"
    make("run", env, log)
    assert (home / "dagster.yaml").read_text() == (REPO_ROOT / "orchestration" / "dagster.yaml").read_text()
    make("check", {**env, "TXN_SOURCE_CSV": str(second)}, log)

    port = free_port()
    dev_log = base / "make_dev.log"
    with open(dev_log, "wb") as out:
        process = subprocess.Popen(
            ["make", "dev", "HOST=127.0.0.1", f"PORT={port}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown stops exactly this tree
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", home, incoming, warehouse, dev_log)
    try:
        ui.wait_until_serving(process, "make dev")
        yield ui, second
    finally:
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def page(after_make_run):
    from playwright.sync_api import sync_playwright

    ui, _ = after_make_run
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.goto(f"{ui.url}/asset-groups")
            try:
                page.get_by_role("button", name="Skip").click(timeout=15_000)  # the first-visit dialog
            except Exception:
                pass
            yield page
        finally:
            browser.close()


def test_make_runs_results_are_what_make_dev_shows_first(after_make_run, page):
    from playwright.sync_api import expect

    ui, second = after_make_run
    runs = ui.runs()
    assert len(runs) == 2 and {r["status"] for r in runs} == {"SUCCESS"}, f"the UI lists {runs}, not the 2 CLI runs"
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}  # newest first: the second file's run
    assert tags[SOURCE_FILE_TAG] == str(second) and tags[WAREHOUSE_TAG] == str(ui.warehouse)
    page.goto(f"{ui.url}/assets/window_averages")
    expect(page.get_by_text("Never materialized")).to_have_count(0, timeout=30_000)
    # "Latest materialization" links to make check's run
    expect(page.locator(f'a[href*="/runs/{runs[0]["runId"]}"]').first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "make_run_in_make_dev.png"))
    for asset in schema.TABLES:
        data = ui.graphql(LATEST, {"key": {"path": [asset]}})["assetNodeOrError"]["assetMaterializations"]
        assert data and data[0]["runId"] == runs[0]["runId"], f"{asset}: the UI does not show make check's run"


def test_an_asset_page_shows_the_column_descriptions(after_make_run, page):
    from playwright.sync_api import expect

    ui, _ = after_make_run
    page.goto(f"{ui.url}/assets/transactions")
    for column in schema.CONTRACT["transactions"]:
        expect(page.get_by_text(column.description, exact=True).first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "transactions_columns.png"), full_page=True)


def test_the_row_count_is_the_tables_after_the_second_file(after_make_run, page):
    from playwright.sync_api import expect

    ui, second = after_make_run
    con = duckdb.connect(str(ui.warehouse), read_only=True)
    (total,) = con.execute("SELECT count(*) FROM transactions").fetchone()
    (own,) = con.execute("SELECT count(*) FROM transactions WHERE source_file = ?", [str(second)]).fetchone()
    con.close()
    assert (total, own) == (5, 2)  # 3 rows of the lab example and the second file's 2
    data = ui.graphql(LATEST, {"key": {"path": ["transactions"]}})["assetNodeOrError"]["assetMaterializations"]
    entries = {e["label"]: e.get("intValue") for e in data[0]["metadataEntries"]}
    assert entries["dagster/row_count"] == total and entries["rows_from_this_file"] == own
    page.goto(f"{ui.url}/assets/transactions")
    expect(page.get_by_text("Row count", exact=True).first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "transactions_row_count.png"), full_page=True)
    # the overview's "Row count" reads the table's 5, not the file's 2
    shown = re.search(r"Row count\W*(?:table_rows\W*)?([\d,]+)", page.locator("body").inner_text())
    assert shown and int(shown.group(1).replace(",", "")) == total, (
        f"the asset page's Row count is {shown and shown.group(1)}, not the table's {total} rows"
    )


def test_the_launchpad_flags_a_window_kind_typo_before_launch(after_make_run, page):
    from playwright.sync_api import expect

    ui, _ = after_make_run
    config = PipelineSettings.from_env().as_metadata()
    config = {k: v for k, v in config.items() if v is not None}
    config.update(source_csv=str(LAB_EXAMPLE), warehouse=str(ui.warehouse), window_kind="slidng")
    before = len(ui.runs())
    page.goto(f"{ui.url}/locations/orchestration/jobs/replay_transactions/playground")
    editor = page.locator(".CodeMirror").first
    expect(editor).to_be_visible(timeout=60_000)
    text = yaml.safe_dump({"resources": {"pipeline": {"config": config}}}, sort_keys=False)
    editor.evaluate("(element, text) => element.CodeMirror.setValue(text)", text)
    expect(page.get_by_text("slidng").first).to_be_visible(timeout=30_000)
    error = page.get_by_text("window_kind", exact=False).filter(has_text="slidng")
    page.wait_for_timeout(2_000)  # the launchpad validates the config after a short pause
    page.screenshot(path=str(ARTIFACTS / "launchpad_window_kind_typo.png"), full_page=True)
    body = page.locator("body").inner_text()
    assert "Value at path root:resources:pipeline:config:window_kind not in enum type" in body or error.count(), (
        f"the launchpad does not flag window_kind: slidng; see {ARTIFACTS / 'launchpad_window_kind_typo.png'}"
    )
    launch = page.get_by_role("button", name="Launch run")
    expect(launch).to_be_disabled(timeout=30_000)
    assert len(ui.runs()) == before
