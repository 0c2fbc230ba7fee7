"""A representative part of the bad-input corpus end to end: real Dagster runs, real Flink, real DuckDB.

Each case starts from a published warehouse that already holds the lab example (the "previous good
results"). A fatal case must fail the run with the corpus message and leave that file byte-for-byte
alone; a row case must publish exactly the corpus counts with every blocking check passing.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import LAB_EXAMPLE, snapshot
from tests.corpus.corpus import case_path, load_cases
from tests.reliability.common import (
    BLOCKING_CHECKS,
    check_results,
    failure_message,
    published_state,
    run_pipeline,
)

pytestmark = pytest.mark.flink

PIPELINE_CASES = [pytest.param(c, id=c["case"]) for c in load_cases() if c.get("pipeline")]


@pytest.fixture(scope="module")
def base_warehouse(tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("base") / "warehouse.duckdb"
    result = run_pipeline(LAB_EXAMPLE, warehouse)
    assert result.success
    return warehouse


def test_enough_pipeline_cases():
    kinds = {p.values[0]["expect"] for p in PIPELINE_CASES}
    assert len(PIPELINE_CASES) >= 8 and kinds == {"fatal", "rows"}


@pytest.mark.parametrize("case", PIPELINE_CASES)
def test_corpus_case_end_to_end(case, base_warehouse, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(base_warehouse, warehouse)
    before_bytes = warehouse.read_bytes()
    before = snapshot(warehouse)
    lab_before = {row[0]: row for row in published_state(warehouse)}[str(LAB_EXAMPLE)]
    source = case_path(case, tmp_path)
    result = run_pipeline(source, warehouse, source_timezone=case.get("timezone", "UTC"))

    if case["expect"] == "fatal":
        assert not result.success
        message = failure_message(result)
        for fragment in case["message"]:
            assert fragment in message
        assert warehouse.read_bytes() == before_bytes, "a fatal error leaves the published file untouched"
        assert snapshot(warehouse) == before
        return

    assert result.success, failure_message(result)
    checks = check_results(result)
    assert all(checks[name] for name in BLOCKING_CHECKS), checks
    rows = {row[0]: row for row in published_state(warehouse)}
    _, transactions, rejected, windows, counted, late, conserved, _ = rows[str(source.resolve())]
    assert (transactions, rejected) == (case["valid"], case["rejected"])
    assert conserved and counted + late == transactions
    assert rows[str(LAB_EXAMPLE)][:7] == lab_before[:7], "the other file's results are untouched"
