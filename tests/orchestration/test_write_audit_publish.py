"""Write-audit-publish (orchestration/write_audit_publish.py): every table has its place in the order,
and a step that skips the audit fails and publishes nothing (a real Dagster run, no Flink job)."""

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from dagster import AssetExecutionContext, DagsterInstance, MaterializeResult, asset, materialize

from orchestration.assets import ingest_transactions
from orchestration.definitions import PIPELINE_ASSETS
from orchestration.settings import PipelineSettings
from orchestration.write_audit_publish import PIPELINE_TABLES, PipelineStep, require_pipeline_tables
from tests.conftest import LAB_EXAMPLE, SAMPLE, snapshot
from warehouse import schema, segments


def test_every_table_of_the_contract_has_its_place_and_an_asset() -> None:
    require_pipeline_tables(PIPELINE_ASSETS)
    assert set(PIPELINE_TABLES) == set(schema.TABLES)
    assert {key.to_user_string() for a in PIPELINE_ASSETS for key in a.keys} == set(PIPELINE_TABLES)


def test_an_asset_outside_the_order_is_refused() -> None:
    @asset(name="merchant_totals")
    def merchant_totals() -> None:
        return None

    with pytest.raises(ValueError, match=r"merchant_totals are not in PIPELINE_TABLES .*add each table"):
        require_pipeline_tables([*PIPELINE_ASSETS, merchant_totals])


@asset(name="anomalies", deps=["transactions"])
def anomalies_that_forget_the_audit(context: AssetExecutionContext, pipeline: PipelineSettings) -> Iterator:
    """A later asset's bug: it stages a change and never audits it."""
    with PipelineStep(context, pipeline) as step:
        with step.staging() as con:
            for (source_file,) in con.execute("SELECT DISTINCT source_file FROM transactions").fetchall():
                segments.replace_file(con, "transactions", source_file)  # every file's rows, staged away
        yield MaterializeResult(asset_key="anomalies")


def test_a_step_that_skips_the_audit_fails_and_publishes_nothing(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"

    def run(source: Path, *assets):
        return materialize(
            list(assets),
            resources={"pipeline": PipelineSettings(source_csv=str(source), warehouse=str(warehouse))},
            instance=DagsterInstance.ephemeral(),
            raise_on_error=False,
        )

    assert run(LAB_EXAMPLE, ingest_transactions).success  # transactions is then the last table: it publishes
    before = snapshot(warehouse)
    assert before["transactions"], "the first run published the lab example"
    result = run(SAMPLE, ingest_transactions, anomalies_that_forget_the_audit)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "anomalies"
    message = failure.step_failure_data.error.message
    assert "ended without auditing what it staged" in message and "step.audit_and_publish(checks)" in message
    assert snapshot(warehouse) == before  # neither the ingest nor the deletion was published
    assert not any((tmp_path / ".staging" / "warehouse.duckdb").glob("*.duckdb")), "the staged copy is discarded"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM transactions").fetchone() == (3,)
