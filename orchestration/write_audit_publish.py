"""Write-audit-publish: the one way a pipeline step changes the warehouse.

A run never writes the published DuckDB file. Every pipeline asset body runs inside a
`PipelineStep`, which makes the three steps named things:

1. **stage** (`with PipelineStep(context, pipeline) as step`): validated settings, the run's lease,
   and `step.staging()`, the run's private staging copy of the warehouse (warehouse/store.py).
2. **audit** (`step.audit(checks)`): the step's blocking checks judge what it staged; one that fails
   discards the staging copy, so nothing of the run can be published.
3. **publish** (`step.publish()`): the run's last pipeline step (in `PIPELINE_TABLES` order) writes
   the run's rows as Parquet segments and atomically replaces the published file with the audited copy.

A step that leaves its `with` block without having audited fails and publishes nothing, and
`require_pipeline_tables` refuses an asset whose table is not in `PIPELINE_TABLES`, so an asset added
later cannot skip the audit or the publish. Details, readers and concurrent runs: docs/atomic-runs.md.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Sequence

import duckdb
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Failure,
    MetadataValue,
    RunsFilter,
)

from orchestration.automation import run_tags
from orchestration.dagster_compat import RUNS_IN_PROGRESS, set_run_tags
from orchestration.settings import PipelineSettings, with_launchpad_keys
from warehouse import replays, stream
from warehouse.store import WarehouseStore

# Tables in the order a full run writes them (the assets' deps enforce it); the last one of the run's
# selection publishes the warehouse.
PIPELINE_TABLES = (
    "transactions", "rejected_rows", "watermark_advice", "window_averages", "late_events", "replays",
    "custom_aggregates", "stream_files", "anomaly_thresholds", "anomalies",
)  # fmt: skip


def freeze_long_lived_objects() -> None:
    """Move every object that exists now (Dagster, pandas, DuckDB, the definitions: some 270k objects
    that live as long as the process) out of the cyclic GC's reach (`gc.freeze`), once per process.
    Full collections and the exit then no longer scan them; a run's own objects are collected as
    before. Called when a step starts, so that importing the package has no side effect."""
    if not gc.get_freeze_count():
        gc.freeze()


class PipelineStep:
    """One pipeline step's stage, audit and publish (see the module docstring)."""

    def __init__(self, context: AssetExecutionContext, pipeline: PipelineSettings):
        self.context = context
        self.run_id = context.run.run_id
        self._pipeline = pipeline
        self._lease: contextlib.ExitStack | None = None
        self._audited = False
        self.blocked = False  # a blocking check failed: nothing of the run is published
        self.settings: PipelineSettings
        self.store: WarehouseStore

    # --- 1. stage ---------------------------------------------------------------------------

    def __enter__(self) -> PipelineStep:
        freeze_long_lived_objects()
        # The definitions refuse such a config at launch (settings.checked_at_launch); this catches a run whose
        # resource is a bare PipelineSettings (materialize() in tests, another Definitions).
        problems = self._pipeline.problems()
        if problems:
            raise Failure(
                description="Invalid configuration: "
                + "; ".join(with_launchpad_keys(p) for p in problems)
                + ". Fix the environment variable, or the [launchpad] key under resources: pipeline: config:; "
                "nothing was written."
            )
        self.settings = self._pipeline
        self.store = WarehouseStore(self.settings.warehouse_path, memory_limit=self.settings.duckdb_memory_limit)
        # The lease (a shared flock the kernel drops even on SIGKILL) keeps other Dagster instances
        # (a CLI run beside `dagster dev`) from deleting this run's staging files.
        self._lease = contextlib.ExitStack()
        self._lease.enter_context(self.store.run_lease(self.run_id))
        try:
            if not self.store.staging_path(self.run_id).exists():  # the run's first step
                # every run, manual ones too: tagged with the file and warehouse its config names
                set_run_tags(
                    self.context.instance,
                    self.context.run,
                    run_tags(self.settings.source_path, self.store.path),
                )
                self._refuse_other_window_config()
                active = {
                    run.run_id
                    for run in self.context.instance.get_runs(filters=RunsFilter(statuses=list(RUNS_IN_PROGRESS)))
                }
                removed = self.store.discard_all_except(active | {self.run_id})
                if removed:
                    self.context.log.info(f"Removed staging leftovers of finished runs: {', '.join(removed)}")
                savepoints = self.store.remove_unlisted_savepoints(active | {self.run_id})
                if savepoints:
                    self.context.log.info(
                        f"Removed {len(savepoints)} stream savepoint(s) no longer listed by the warehouse"
                    )
                unlisted = self.store.remove_unlisted_segments()
                if unlisted:
                    self.context.log.info(f"Removed {len(unlisted)} segment file(s) no longer listed by the warehouse")
        except BaseException:
            self._lease.close()
            raise
        return self

    def staging(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A connection to the run's staging copy (made from the published file on first use)."""
        return self.store.connect_staging(self.run_id)

    def _refuse_other_window_config(self) -> None:
        """Fail before anything is written when the published warehouse holds another window config."""
        if not self.store.path.exists():
            return
        with self.store.connect_published() as con:
            conflict = replays.config_conflict(con, self.settings.window_spec(), str(self.store.path))
            if conflict is None:
                conflict = stream.mode_conflict(con, self.settings.replay_mode.value, str(self.store.path))
        if conflict:
            raise Failure(description=conflict)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._lease is not None
        self._lease.close()
        if exc_type is None and not self._audited:
            self.store.discard(self.run_id)
            raise Failure(
                description=f"Pipeline step {self.context.op_def.name} ended without auditing what it staged, so "
                f"the run publishes nothing; the asset must call step.audit_and_publish(checks) "
                f"(orchestration/write_audit_publish.py). The published warehouse {self.store.path} is unchanged."
            )

    # --- 2. audit ---------------------------------------------------------------------------

    def audit(self, checks: Iterable[AssetCheckResult]) -> list[str]:
        """The step's failed blocking checks (discarding the run's staging copy if there are any)."""
        self._audited = True
        blocking = {(spec.asset_key, spec.name) for spec in self.context.assets_def.check_specs if spec.blocking}
        failures = [
            f"{c.asset_key.to_user_string()}.{c.check_name}"
            for c in checks
            if not c.passed and c.severity == AssetCheckSeverity.ERROR and (c.asset_key, c.check_name) in blocking
        ]
        self.blocked = bool(failures)
        if failures:
            self.context.log.error(
                f"Blocking check(s) failed: {', '.join(failures)}. The published warehouse "
                f"{self.store.path} keeps its previous contents."
            )
            self.store.discard(self.run_id)
        return failures

    # --- 3. publish -------------------------------------------------------------------------

    def publishing_table(self) -> str:
        """The last pipeline table of the run's selection: the step that materializes it publishes."""
        context = self.context
        run = context.instance.get_run_by_id(self.run_id)
        # a CLI or UI run records its selection; dagster.materialize([...]) records none and runs all
        # the assets it was given, which are then the assets of its job
        keys = run.asset_selection or context.job_def.asset_layer.asset_graph.get_all_asset_keys()
        selected = {key.to_user_string() for key in keys} & set(PIPELINE_TABLES) or set(PIPELINE_TABLES)
        return max(selected, key=PIPELINE_TABLES.index)

    def publishes_here(self) -> bool:
        """True when this step materializes the last pipeline table of the run's selection."""
        return AssetKey(self.publishing_table()) in self.context.selected_asset_keys

    def _publish_metadata(self, by_this_step: bool, note: str) -> dict[str, object]:
        # "published: false" read as "not published": the key says whose publish it is, the note says who does
        return {
            "published_by_this_step": by_this_step,
            "publish_note": MetadataValue.text(note),
            "warehouse": MetadataValue.path(str(self.store.path)),
        }

    def publish(self) -> dict[str, object]:
        """Publish the audited staging copy if this is the run's last pipeline step; its metadata."""
        if not self._audited:
            raise RuntimeError("publish() before audit(): call audit_and_publish(checks)")
        if not self.publishes_here():
            return self._publish_metadata(
                False,
                f"Staged and audited; the run's last step ({self.publishing_table()}) publishes every table of "
                "the run at once, so these rows are in the warehouse when that step succeeds.",
            )
        published = self.store.publish(self.run_id)
        self.context.log.info(f"Published warehouse {published}")
        return self._publish_metadata(True, "This step, the run's last, published every table of the run at once.")

    def table_metadata(self, con: duckdb.DuckDBPyConnection, table: str, file_rows: int | None) -> dict[str, object]:
        """`dagster/row_count`: the whole table's rows as this run publishes it (every file's, counted on the
        staging copy, which the publish makes the warehouse); `rows_from_this_file`: the replayed file's own."""
        from warehouse import segments

        metadata: dict[str, object] = {"dagster/row_count": int(segments.row_count(con, table))}
        if file_rows is not None:
            metadata["rows_from_this_file"] = int(file_rows)
        return metadata

    def audit_and_publish(self, checks: Iterable[AssetCheckResult]) -> dict[str, object]:
        """Audit, then publish unless a blocking check failed; the materialization's metadata."""
        if self.audit(checks):
            return self._publish_metadata(
                False, "Not published: a blocking check failed, so the warehouse keeps its previous contents."
            )
        return self.publish()


def require_pipeline_tables(assets: Sequence[AssetsDefinition]) -> None:
    """Refuse pipeline assets whose table has no place in PIPELINE_TABLES (they could never publish)."""
    outside = sorted(
        key.to_user_string()
        for assets_def in assets
        for key in assets_def.keys
        if key.to_user_string() not in PIPELINE_TABLES
    )
    if outside:
        raise ValueError(
            f"pipeline asset(s) {', '.join(outside)} are not in PIPELINE_TABLES "
            "(orchestration/write_audit_publish.py): add each table where a full run writes it, so "
            "that the run's last step publishes it"
        )
