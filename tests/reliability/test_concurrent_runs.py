"""Two runs publishing into one warehouse at once must not silently lose each other's results.

Each run copies the published file when it starts and publishes its copy at its end, so the second
publish would drop the first run's file. warehouse.store refuses that publish with a retryable error;
a rerun of the refused run then publishes both files.
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from tests.conftest import LAB_EXAMPLE
from tests.reliability.common import kill_session_leftovers, published_state, run_pipeline, start_cli_run

pytestmark = pytest.mark.flink


def test_overlapping_runs_never_lose_a_result_silently(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    assert run_pipeline(LAB_EXAMPLE, warehouse).success
    sources = []
    for name, key in (("a.csv", "acct-a"), ("b.csv", "acct-b")):
        path = tmp_path / name
        path.write_text(
            "transaction_id,timestamp,amount\n" + "".join(f"{key},2024-05-12 00:00:0{i},{i + 1}\n" for i in range(6))
        )
        sources.append(path)

    # One Dagster instance for both, as under `dagster dev`: each run then knows the other is in
    # progress and leaves its staging files alone (see the report: separate instances do not).
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.from_config(str(home)) as instance:  # create its SQLite storage once, up front
        instance.get_runs()
    for source in sources:
        (tmp_path / source.stem).mkdir()
    runs = [
        start_cli_run(src, warehouse, tmp_path / f"{src.stem}.log", cwd=tmp_path / src.stem, DAGSTER_HOME=str(home))
        for src in sources
    ]
    codes = [run.wait(600) for run in runs]
    for run in runs:
        kill_session_leftovers(run.pid)
    logs = [(tmp_path / f"{src.stem}.log").read_text(errors="replace") for src in sources]

    files = {row[0] for row in published_state(warehouse)}
    for source, code, log in zip(sources, codes, logs):
        if code == 0:
            assert str(source) in files, f"{source.name} succeeded but its results were lost"
        else:
            assert "ConcurrentPublishError" in log and "retryable" in log, log[-3000:]
    # Both started from the same published file and Flink keeps them busy for seconds: they overlap.
    assert sorted(codes, key=bool)[0] == 0 and sum(code != 0 for code in codes) == 1, codes

    refused = next(src for src, code in zip(sources, codes) if code != 0)
    assert run_pipeline(refused, warehouse).success  # the retry
    assert {row[0] for row in published_state(warehouse)} == {str(LAB_EXAMPLE), *map(str, sources)}
    assert all(row[6] for row in published_state(warehouse))
