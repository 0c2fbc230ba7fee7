"""What every asset module shares: asset and check specs in the project's style, check results from the
plain validators (warehouse/quality.py), and the metadata every materialization carries (previews, row counts).
"""

from collections.abc import Sequence

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DagsterEventType,
    FreshnessPolicy,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from orchestration.write_audit_publish import PipelineStep
from warehouse import quality, schema

GROUP = "replay"
OWNERS = ["team:data-engineering"]
PREVIEW_ROWS = 10


def column_schema(table: str) -> TableSchema:
    """The table's columns, types and descriptions from the data contract (warehouse/schema.py)."""
    return TableSchema(
        columns=[
            TableColumn(column.name, column.type, description=column.description) for column in schema.CONTRACT[table]
        ]
    )


def materialized_in_this_run(context: AssetExecutionContext, asset: str) -> bool:
    """Whether an earlier step of this run materialized `asset` (read from the run's event log)."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    key = AssetKey(asset)
    return any(r.event_log_entry.dagster_event.asset_key == key for r in records if r.event_log_entry.dagster_event)


def table_counts(step: PipelineStep, counts: dict[str, object]) -> dict[str, object]:
    """A table's row counts (PipelineStep.table_metadata), without the table total when a blocking check failed
    (the warehouse then keeps its previous rows, which this run did not count)."""
    return {k: v for k, v in counts.items() if not (step.blocked and k == "dagster/row_count")}


def asset_spec(
    name: str,
    description: str,
    kinds: set[str],
    deps: Sequence[str] = (),
    freshness_policy: FreshnessPolicy | None = None,
) -> AssetSpec:
    return AssetSpec(
        name,
        description=description,
        group_name=GROUP,
        kinds=kinds,
        owners=OWNERS,
        deps=list(deps),
        metadata={"dagster/column_schema": column_schema(name), "table": name},
        freshness_policy=freshness_policy,
    )


def contract_spec(table: str) -> AssetCheckSpec:
    return AssetCheckSpec(
        "matches_contract",
        asset=table,
        blocking=True,
        description=f"The columns and types of {table} equal the data contract (warehouse/schema.py).",
    )


def check_result(
    asset: str, check_name: str, outcome: quality.CheckOutcome, severity: AssetCheckSeverity
) -> AssetCheckResult:
    metadata = {k: MetadataValue.json(v) if isinstance(v, (list, dict)) else v for k, v in outcome.metadata.items()}
    return AssetCheckResult(
        asset_key=asset,
        check_name=check_name,
        passed=bool(outcome.passed),
        severity=severity,
        metadata=metadata,
        description=outcome.description,
    )


def contract_result(con, table: str) -> AssetCheckResult:
    return check_result(table, "matches_contract", quality.contract_check(con, table), AssetCheckSeverity.ERROR)


# --- materialization metadata ---------------------------------------------------------------


def markdown_preview(df: pd.DataFrame) -> MetadataValue:
    if df.empty:
        return MetadataValue.md("_no rows_")
    return MetadataValue.md(df.head(PREVIEW_ROWS).to_markdown(index=False))


def fetch_df(con, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
    return con.execute(sql, list(params)).fetchdf()
