"""The pipeline's assets, one per DuckDB table, and the checks that run inside them.

Every step is a write-audit-publish step (orchestration/write_audit_publish.py): it writes the run's
staging copy of the warehouse, its blocking checks audit what it wrote, and the run's last step
publishes the copy atomically. Checks run inside the step that produces their table, against the
staging copy, so they judge exactly what is about to be published.
"""

import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    PipesSubprocessClient,
    multi_asset,
)

from orchestration.asset_helpers import (
    PREVIEW_ROWS,
    asset_spec,
    check_result,
    contract_result,
    contract_spec,
    fetch_df,
    markdown_preview,
    materialized_in_this_run,
    table_counts,
)
from orchestration.dagster_compat import is_pipes_execution_error
from orchestration.settings import REPO_ROOT, PipelineSettings, ReplayMode
from orchestration.write_audit_publish import PipelineStep
from warehouse import advice, bulk_ingest, quality, reconcile, schema, segments, stream, time_outliers
from warehouse import flink_output as flink_output_files
from warehouse.ingest import InputFileError

# The assets whose FreshnessPolicy comes from AutomationSettings (set in orchestration/definitions.py).
WINDOW_ASSETS = ("window_averages", "late_events")
# The tables the replay step writes (its assets), in the order their contract checks run.
REPLAY_TABLES = ("window_averages", "late_events", "replays", "custom_aggregates", "stream_files")


# --- transactions + rejected_rows -----------------------------------------------------------


@multi_asset(
    name="ingest_transactions",
    specs=[
        asset_spec(
            "transactions",
            "Valid rows of the source CSV: key, UTC event time (TIMESTAMPTZ and epoch ms) and amount.",
            {"pandas", "duckdb"},
        ),
        asset_spec(
            "rejected_rows",
            "Rows of the source CSV that failed validation, with the raw text and the reason.",
            {"pandas", "duckdb"},
        ),
    ],
    check_specs=[
        AssetCheckSpec(
            "every_row_accounted_for",
            asset="transactions",
            blocking=True,
            description="Every data row of the file is in transactions or rejected_rows, exactly once.",
        ),
        contract_spec("transactions"),
        contract_spec("rejected_rows"),
        AssetCheckSpec(
            "event_times_plausible",
            asset="transactions",
            description="No row's event time jumps more than TXN_MAX_TIME_JUMP_MS ahead of the stream without the "
            "rows after it confirming the jump (warns, non-blocking; such rows are quarantined to rejected_rows).",
        ),
        AssetCheckSpec(
            "rejected_ratio_within_limit",
            asset="rejected_rows",
            description="Rejected rows / data rows of the file <= TXN_MAX_REJECTED_RATIO (warns, non-blocking).",
        ),
    ],
)
def ingest_transactions(context: AssetExecutionContext, pipeline: PipelineSettings) -> Iterator:
    """Read and validate the CSV (DuckDB's reader where provably exact) and normalize timestamps to UTC epoch ms."""
    with PipelineStep(context, pipeline) as step:
        yield from _ingest_transactions(context, step)


def _ingest_transactions(context: AssetExecutionContext, step: PipelineStep) -> Iterator:
    started = time.monotonic()
    pipeline = step.settings
    source = pipeline.source_path
    source_file = str(source)
    with step.staging() as con:
        con.execute("BEGIN")
        transactions_table = segments.replace_file(con, "transactions", source_file)
        rejected_table = segments.replace_file(con, "rejected_rows", source_file)
        con.execute("COMMIT")
        # DuckDB's CSV reader where it provably gives the exact parser's records, the exact parser for the
        # rest (warehouse/bulk_ingest.py). One commit per statement or chunk: the staging copy is private
        # to this run and published only if the run succeeds.
        try:
            loaded = bulk_ingest.load_file(
                con, source, source_file, (transactions_table, rejected_table), key_column=pipeline.key_column,
                timezone=pipeline.source_timezone, log=context.log.info,
            )  # fmt: skip
        except InputFileError as error:
            raise Failure(description=str(error)) from None
        records = loaded.records
        context.log.info(
            f"Ingested {records:,} rows of {source.name} ({time.monotonic() - started:.1f} s, "
            + ("DuckDB's CSV reader)" if loaded.fast else f"exact parser: {loaded.fallback_reason})")
        )
        stream_time = (
            stream.stream_time_before(con, source_file, loaded.event_time_ms)
            if pipeline.replay_mode == ReplayMode.stream
            else None
        )
        n_quarantined = time_outliers.quarantine_file(
            con, source, source_file, (transactions_table, rejected_table), loaded.event_time_ms,
            loaded.source_rows, pipeline.max_time_jump_ms, pipeline.time_jump_confirm_rows, stream_time,
        )  # fmt: skip
        del loaded
        if n_quarantined:
            context.log.warning(
                f"Quarantined {n_quarantined:,} row(s) of {source.name} whose event time jumps more than "
                f"TXN_MAX_TIME_JUMP_MS={pipeline.max_time_jump_ms} ms ahead of the stream (see rejected_rows)"
            )

        # the file's rows only (`file_rows`): a query on the view opens every file's segments
        txns, rejects = (segments.file_rows(con, t, source_file) for t in ("transactions", "rejected_rows"))
        n_valid, n_rejected, distinct_rows, min_row, max_row = schema.fetch_one(
            con,
            f"SELECT (SELECT count(*) FROM {txns} AS t WHERE source_file = $f), "
            f"(SELECT count(*) FROM {rejects} AS r WHERE source_file = $f), count(DISTINCT source_row), "
            "coalesce(min(source_row), 1), coalesce(max(source_row), 0) FROM ("
            f"SELECT source_row FROM {txns} AS t WHERE source_file = $f UNION ALL "
            f"SELECT source_row FROM {rejects} AS r WHERE source_file = $f)",
            {"f": source_file},
        )
        accounted = n_valid + n_rejected == records == distinct_rows and (min_row, max_row) == (1, records)
        check = AssetCheckResult(
            asset_key="transactions",
            check_name="every_row_accounted_for",
            passed=bool(accounted),
            metadata={
                "data_rows_in_file": records,
                "transactions": n_valid,
                "rejected_rows": n_rejected,
                "distinct_source_rows": distinct_rows,
            },
            description=None
            if accounted
            else f"{records} data rows in the file but {n_valid} transactions + {n_rejected} rejected rows",
        )
        checks = [
            check,
            contract_result(con, "transactions"),
            contract_result(con, "rejected_rows"),
            _time_quarantine_check(n_quarantined, pipeline.max_time_jump_ms),
            check_result(
                "rejected_rows",
                "rejected_ratio_within_limit",
                quality.ratio_check(n_rejected, records, pipeline.max_rejected_ratio, "rejected rows", "data rows"),
                AssetCheckSeverity.WARN,
            ),
        ]
        transactions_preview = fetch_df(
            con,
            f"SELECT source_row, transaction_id, key, event_time, amount FROM {txns} AS t "
            "WHERE source_file = ? ORDER BY source_row LIMIT ?",
            [source_file, PREVIEW_ROWS],
        )
        rejected_preview = fetch_df(
            con,
            f"SELECT source_row, line, reason, left(raw, 120) AS raw FROM {rejects} AS r "
            "WHERE source_file = ? ORDER BY source_row LIMIT ?",
            [source_file, PREVIEW_ROWS],
        )
        quarantine_preview = fetch_df(
            con,
            f"SELECT source_row, line, left(raw, 120) AS raw, reason FROM {rejects} AS r "
            "WHERE source_file = ? AND starts_with(reason, ?) ORDER BY source_row LIMIT ?",
            [source_file, time_outliers.REASON_PREFIX, PREVIEW_ROWS],
        )
        transactions_counts = step.table_metadata(con, "transactions", n_valid)
        rejected_counts = step.table_metadata(con, "rejected_rows", n_rejected)
        top_reasons = fetch_df(
            con,
            f"SELECT split_part(reason, ':', 1) AS reason, count(*) AS rows FROM {rejects} AS r "
            "WHERE source_file = ? GROUP BY 1 ORDER BY rows DESC, reason LIMIT 10",
            [source_file],
        )
    published = step.audit_and_publish(checks)
    seconds = round(time.monotonic() - started, 3)
    common = {"source_file": MetadataValue.path(source_file), "duration_s": seconds, **published}
    yield MaterializeResult(
        asset_key="transactions",
        metadata={
            **table_counts(step, transactions_counts),
            "data_rows_in_file": records,
            "preview": markdown_preview(transactions_preview),
            "config": MetadataValue.json(pipeline.as_metadata()),
            **common,
        },
    )
    yield MaterializeResult(
        asset_key="rejected_rows",
        metadata={
            **table_counts(step, rejected_counts),
            "rejected_ratio": round(n_rejected / records, 6) if records else 0.0,
            "implausible_time_rows": n_quarantined,
            "implausible_time_preview": markdown_preview(quarantine_preview),
            "top_reasons": markdown_preview(top_reasons),
            "preview": markdown_preview(rejected_preview),
            **common,
        },
    )
    yield from checks


# --- window_averages + late_events + replays ---------------------------------------------------


@multi_asset(
    name="replay_event_time_windows",
    specs=[
        asset_spec(
            "window_averages",
            "Count, exact sum, min, max and average amount per key and event-time window (tumbling, "
            "sliding or session), computed by Flink's own window operator in the PyFlink job. The windows do "
            "not read watermark_advice: the edge from it orders the advice first in every run (only the run's "
            "last step publishes), and the late_ratio_within_limit check cites the advised bound.",
            {"flink", "duckdb"},
            deps=["transactions", "watermark_advice"],
        ),
        asset_spec(
            "late_events",
            "Transactions that arrived behind the watermark for all their windows (Flink's late side output). "
            "The edge from watermark_advice is an ordering, not an input: see window_averages.",
            {"flink", "duckdb"},
            deps=["transactions", "watermark_advice"],
        ),
        asset_spec(
            "replays",
            "One row per replayed file and run: the window config that produced its rows, and its counts.",
            {"duckdb"},
            deps=["transactions"],
        ),
        asset_spec(
            "custom_aggregates",
            "Your own AggregateFunction(s) (TXN_AGGREGATE=package.module:ClassName) per key and event-time "
            "window: get_result over exactly the window's on-time events, run inside the Flink job.",
            {"flink", "python", "duckdb"},
            deps=["transactions"],
        ),
        asset_spec(
            "stream_files",
            "Stream mode (TXN_REPLAY_MODE=stream): the warehouse's files in stream order (median event time), "
            "each with the stream's watermark after it and the savepoint of Flink's state after it; empty in "
            "file mode.",
            {"flink", "duckdb"},
            deps=["transactions"],
        ),
    ],
    check_specs=[
        AssetCheckSpec(
            "transactions_conserved",
            asset="window_averages",
            blocking=True,
            description="Every transaction of the file is counted in a window or is a late event, and "
            "sum(txn_count) equals the (event, window) pairs the replay rule counts.",
        ),
        AssetCheckSpec(
            "matches_independent_replay",
            asset="window_averages",
            blocking=True,
            description="window_averages and late_events equal a DuckDB recomputation of the replay rule "
            "(count, exact sum, min, max, average; every late-event column).",
        ),
        AssetCheckSpec(
            "windows_aligned_and_bounded",
            asset="window_averages",
            blocking=True,
            description="The file's windows have the configured kind's shape (tumbling: start a multiple of the "
            "size; sliding: of the slide; session: at least one gap long), and min * count <= sum <= max * count.",
        ),
        contract_spec("window_averages"),
        contract_spec("late_events"),
        contract_spec("replays"),
        contract_spec("custom_aggregates"),
        contract_spec("stream_files"),
        AssetCheckSpec(
            "late_ratio_within_limit",
            asset="late_events",
            description="Late events / transactions of the file <= TXN_MAX_LATE_RATIO (warns, non-blocking); "
            "when it fails it cites the watermark advice: the smallest out-of-orderness within the limit.",
        ),
    ],
)
def replay_event_time_windows(
    context: AssetExecutionContext, pipeline: PipelineSettings, pipes_subprocess_client: PipesSubprocessClient
) -> Iterator:
    """Submit the PyFlink window job (through Dagster Pipes) and load its output into DuckDB."""
    with PipelineStep(context, pipeline) as step:
        if step.settings.replay_mode == ReplayMode.stream:
            yield from _replay_stream(context, step, pipes_subprocess_client)
        else:
            yield from _replay_event_time_windows(context, step, pipes_subprocess_client)


def _replay_event_time_windows(
    context: AssetExecutionContext, step: PipelineStep, pipes_subprocess_client: PipesSubprocessClient
) -> Iterator:
    from flink_jobs.custom_aggregates import parse_spec
    from warehouse import custom_aggregates

    started = time.monotonic()
    pipeline, store = step.settings, step.store
    source_file = str(pipeline.source_path)
    spec = pipeline.window_spec()
    aggregates = parse_spec(pipeline.aggregates)  # imported and checked by pipeline.problems() already
    run_dir = store.run_dir(context.run.run_id)
    staged_input = run_dir / "flink_input.csv"
    flink_output = run_dir / "flink_output"
    run_dir.mkdir(parents=True, exist_ok=True)
    with step.staging() as con:
        n_transactions = flink_output_files.stage_input(con, source_file, staged_input)
        staged_s = time.monotonic() - started
        # The recomputation needs only the staged transactions: it runs while the Flink job does.
        with reconcile.OverlappedRecomputation(con, spec, source_file) as recomputation:
            figures = _run_window_job(context, step, pipes_subprocess_client, aggregates, staged_input,
                                      flink_output, n_transactions)  # fmt: skip
            flink_s = time.monotonic() - started - staged_s

            con.execute("BEGIN")
            for table in ("window_averages", "late_events", "custom_aggregates"):
                segments.replace_file(con, table, source_file)
            flink_output_files.load_output(con, flink_output, source_file, spec)
            n_custom = custom_aggregates.load_output(con, flink_output, source_file)
            windows, lates, customs = (
                segments.file_rows(con, t, source_file) for t in ("window_averages", "late_events", "custom_aggregates")
            )
            n_windows, n_late, max_lateness_ms = schema.fetch_one(
                con,
                f"SELECT (SELECT count(*) FROM {windows} AS w WHERE source_file = $f), "
                f"(SELECT count(*) FROM {lates} AS l WHERE source_file = $f), "
                f"(SELECT max(watermark_ms - event_time_ms) FROM {lates} AS l WHERE source_file = $f)",
                {"f": source_file},
            )
            con.execute(
                "INSERT INTO replays VALUES ($f, $run, now(), $kind, $size, $slide, $gap, $ooo, $lateness, $tx, $w, $late)",
                {"f": source_file, "run": context.run.run_id, "kind": spec.kind, "size": spec.size_ms,
                 "slide": spec.slide_ms, "gap": spec.gap_ms, "ooo": spec.out_of_orderness_ms,
                 "lateness": spec.allowed_lateness_ms, "tx": n_transactions, "w": n_windows, "late": n_late},
            )  # fmt: skip
            con.execute("COMMIT")
            loaded = time.monotonic()
            context.log.info(
                f"Loaded {n_windows:,} windows and {n_late:,} late events ({loaded - started:.1f} s); comparing them "
                "with the DuckDB recomputation built while the Flink job ran"
            )
            windows_report, late_report = recomputation.compare()
            context.log.info(f"Reconciled in {time.monotonic() - loaded:.1f} s after the load")
        # The advice this run's watermark_advice step wrote (the edge from it orders it first): the check
        # cites it instead of computing it again. Rows an earlier run left are not trusted.
        advised = (
            advice.stored_advice(con, source_file, spec, pipeline.max_late_ratio, n_transactions)
            if materialized_in_this_run(context, "watermark_advice")
            else None
        )
        checks = [
            check_result(
                "window_averages",
                "transactions_conserved",
                quality.conservation_check(
                    con, spec, source_file, windows_report["expected_pairs"], late_report["expected"]
                ),
                AssetCheckSeverity.ERROR,
            ),
            _reconciliation_check(windows_report, late_report),
            check_result(
                "window_averages",
                "windows_aligned_and_bounded",
                quality.window_shape_check(con, spec, source_file),
                AssetCheckSeverity.ERROR,
            ),
            *(contract_result(con, table) for table in REPLAY_TABLES),
            check_result(
                "late_events",
                "late_ratio_within_limit",
                advice.late_ratio_check(
                    con, source_file, spec, pipeline.max_late_ratio, n_late, n_transactions, advised
                ),  # fmt: skip
                AssetCheckSeverity.WARN,
            ),
        ]
        windows_preview = fetch_df(
            con,
            "SELECT key, window_start, window_end, avg_amount, txn_count, sum_amount, min_amount, max_amount "
            f"FROM {windows} AS w WHERE source_file = ? ORDER BY key, window_start_ms, window_end_ms LIMIT ?",
            [source_file, PREVIEW_ROWS],
        )
        late_preview = fetch_df(
            con,
            "SELECT source_row, key, event_time, amount, watermark_ms - event_time_ms AS behind_watermark_ms "
            f"FROM {lates} AS l WHERE source_file = ? ORDER BY source_row LIMIT ?",
            [source_file, PREVIEW_ROWS],
        )
        replays_preview = fetch_df(
            con, "SELECT * FROM replays ORDER BY replayed_at DESC, source_file LIMIT ?", [PREVIEW_ROWS]
        )
        (n_replays,) = schema.fetch_one(con, "SELECT count(*) FROM replays WHERE source_file = ?", [source_file])
        window_counts = {
            "window_averages": step.table_metadata(con, "window_averages", n_windows),
            "late_events": step.table_metadata(con, "late_events", n_late),
            "replays": step.table_metadata(con, "replays", n_replays),
            "custom_aggregates": step.table_metadata(con, "custom_aggregates", n_custom),
            "stream_files": step.table_metadata(con, "stream_files", 0),
        }
        custom_preview = fetch_df(
            con,
            f"SELECT aggregate, key, window_start, window_end, value FROM {customs} AS c WHERE source_file = ? "
            "ORDER BY aggregate, key, window_start_ms, window_end_ms LIMIT ?",
            [source_file, PREVIEW_ROWS],
        )
    published = step.audit_and_publish(checks)
    common = {
        "source_file": MetadataValue.path(source_file),
        "window_spec": spec.describe(),
        "duration_s": round(time.monotonic() - started, 3),
        "stage_input_s": round(staged_s, 3),
        "flink_s": round(flink_s, 3),
        "config": MetadataValue.json(pipeline.as_metadata()),
        **{f"flink_{k}" if not k.startswith("flink_") else k: v for k, v in figures.items()},
        "flink_records_in": n_transactions,
        "flink_records_out": int(n_windows + n_late),
        "watermark_lag_ms": int(max_lateness_ms or 0),
        **published,
    }
    yield MaterializeResult(
        asset_key="window_averages",
        metadata={
            **table_counts(step, window_counts["window_averages"]),
            "transactions_in": n_transactions,
            "preview": markdown_preview(windows_preview),
            **common,
        },
    )
    yield MaterializeResult(
        asset_key="late_events",
        metadata={
            **table_counts(step, window_counts["late_events"]),
            "late_ratio": round(n_late / n_transactions, 6) if n_transactions else 0.0,
            "max_behind_watermark_ms": int(max_lateness_ms or 0),
            "preview": markdown_preview(late_preview),
            **common,
        },
    )
    yield MaterializeResult(
        asset_key="replays",
        metadata={
            **table_counts(step, window_counts["replays"]),
            "preview": markdown_preview(replays_preview),
            **common,
        },
    )
    yield MaterializeResult(
        asset_key="custom_aggregates",
        metadata={
            **table_counts(step, window_counts["custom_aggregates"]),
            "aggregates": MetadataValue.text(", ".join(aggregates) if aggregates else "none (TXN_AGGREGATE is empty)"),
            "aggregate_count": len(aggregates),
            "preview": markdown_preview(custom_preview),
            **common,
        },
    )
    yield MaterializeResult(
        asset_key="stream_files",
        metadata={**table_counts(step, window_counts["stream_files"]), "replay_mode": "file", **common},
    )
    yield from checks


def _replay_stream(
    context: AssetExecutionContext, step: PipelineStep, pipes_subprocess_client: PipesSubprocessClient
) -> Iterator:
    """Stream mode (warehouse/stream.py): replay the file, and every file after it in stream order, after
    the state Flink saved for the files before it; the windows still open stay provisional."""
    from flink_jobs.custom_aggregates import parse_spec

    started = time.monotonic()
    pipeline, store = step.settings, step.store
    source_file = str(pipeline.source_path)
    spec = pipeline.window_spec()
    aggregates = parse_spec(pipeline.aggregates)
    run_id = context.run.run_id
    run_dir = store.run_dir(run_id)
    flink_output = run_dir / "flink_output"
    run_dir.mkdir(parents=True, exist_ok=True)
    with step.staging() as con:
        plan = stream.plan(con, source_file, spec)
        reopened = stream.reopen(con, plan)
        inputs, n_transactions = stream.stage_inputs(con, plan, run_dir)
        context.log.info(stream.describe_plan(plan, reopened.carried))
        figures: dict[str, object] = {}
        if plan.replay:
            figures = _run_window_job(context, step, pipes_subprocess_client, aggregates, inputs, flink_output,
                                      n_transactions, store.savepoint_dir / run_id, plan.restore_from)  # fmt: skip
            stream.load_output(con, flink_output, plan, spec)
        savepoints = list(figures.get("savepoints") or [])  # type: ignore[call-overload]
        stream.record(con, plan, savepoints, run_id)
        for f in plan.replay:
            n_w, n_l = (
                schema.fetch_one(
                    con,
                    f"SELECT count(*) FROM {segments.file_rows(con, t, f.source_file)} AS x WHERE source_file = ?",
                    [f.source_file],
                )[0]  # fmt: skip
                for t in ("window_averages", "late_events")
            )
            con.execute(
                "INSERT INTO replays VALUES ($f, $run, now(), $kind, $size, $slide, $gap, $ooo, $lateness, $tx, $w, $late)",
                {"f": f.source_file, "run": run_id, "kind": spec.kind, "size": spec.size_ms, "slide": spec.slide_ms,
                 "gap": spec.gap_ms, "ooo": spec.out_of_orderness_ms, "lateness": spec.allowed_lateness_ms,
                 "tx": f.transactions, "w": n_w, "late": n_l},
            )  # fmt: skip
        loaded = time.monotonic()
        if plan.replay:
            reconcile.build_expected_stream(con, spec, reopened.start_max, plan.closed_up_to)
            windows_report, late_report = reconcile.compare_with_expected(
                con, stream.run_rows_sql(con, "window_averages", plan), stream.run_late_sql(con, plan)
            )
            con.execute("DROP TABLE IF EXISTS _expected_windows; DROP TABLE IF EXISTS _expected_late")
            windows_report["finality_mismatches"] = stream.finality_mismatches(con, plan, spec)
            windows_report["equal"] = windows_report["equal"] and not windows_report["finality_mismatches"]
        else:
            windows_report, late_report = stream.empty_reports()
        context.log.info(f"Reconciled the stream run in {time.monotonic() - loaded:.1f} s")
        con.execute("DROP TABLE IF EXISTS _stream_events")
        counts = stream.run_counts(con, plan)
        conservation = stream.conservation_check(con, plan, spec, reopened.carried, counts,
                                                 windows_report["expected_pairs"], late_report["expected"])  # fmt: skip
        shapes = [quality.window_shape_check(con, spec, f.source_file) for f in plan.replay]
        checks = [
            check_result("window_averages", "transactions_conserved", conservation, AssetCheckSeverity.ERROR),
            _reconciliation_check(windows_report, late_report),
            check_result(
                "window_averages",
                "windows_aligned_and_bounded",
                next((o for o in shapes if not o.passed), shapes[-1] if shapes else stream.passed()),
                AssetCheckSeverity.ERROR,
            ),  # fmt: skip
            *(contract_result(con, table) for table in REPLAY_TABLES),
            check_result(
                "late_events",
                "late_ratio_within_limit",
                quality.ratio_check(
                    counts.late, n_transactions, pipeline.max_late_ratio, "late events", "transactions"
                ),
                AssetCheckSeverity.WARN,
            ),
        ]
        stream_preview = fetch_df(
            con,
            "SELECT position, source_file, median_event_time_ms, transactions, watermark_ms, run_id = ? AS replayed_now "
            "FROM stream_files ORDER BY position DESC LIMIT ?",
            [run_id, PREVIEW_ROWS],
        )
        window_counts = {
            table: step.table_metadata(con, table, n)
            for table, n in (
                ("window_averages", counts.windows),
                ("late_events", counts.late),
                ("custom_aggregates", counts.custom),
            )  # fmt: skip
        }
        window_counts["replays"] = step.table_metadata(con, "replays", len(plan.replay))
        (stream_length,) = schema.fetch_one(con, "SELECT count(*) FROM stream_files")
        window_counts["stream_files"] = step.table_metadata(con, "stream_files", int(stream_length))
    published = step.audit_and_publish(checks)
    common = {
        "source_file": MetadataValue.path(source_file),
        "replay_mode": "stream",
        "window_spec": spec.describe(),
        "duration_s": round(time.monotonic() - started, 3),
        "stream_files": int(stream_length),
        "files_replayed": len(plan.replay),
        "files_replayed_list": MetadataValue.json([f.source_file for f in plan.replay]),
        "restored_from": plan.restore_from or "the stream's start",
        "carried_events": reopened.carried,
        "provisional_windows": counts.provisional,
        "stream_order": markdown_preview(stream_preview),
        "config": MetadataValue.json(pipeline.as_metadata()),
        **{f"flink_{k}" if not k.startswith("flink_") else k: v for k, v in figures.items() if k != "savepoints"},
        "flink_records_in": n_transactions,
        **published,
    }
    for table in ("window_averages", "late_events", "replays", "custom_aggregates", "stream_files"):
        yield MaterializeResult(asset_key=table, metadata={**table_counts(step, window_counts[table]), **common})
    yield from checks


def _run_window_job(
    context: AssetExecutionContext,
    step: PipelineStep,
    pipes_subprocess_client: PipesSubprocessClient,
    aggregates: list[str],
    staged_input: Path | list[Path],
    flink_output: Path,
    n_transactions: int,
    savepoint_dir: Path | None = None,
    restore_from: str | None = None,
) -> dict[str, object]:
    """Run the PyFlink window job through Dagster Pipes; the figures it reported. A file without valid
    transactions starts no job (its tables are emptied). A list of inputs is a stream run
    (flink_jobs/stream_job.py): it restores `restore_from` and leaves a savepoint per input in `savepoint_dir`."""
    from flink_jobs.output import read_failure

    pipeline, spec = step.settings, step.settings.window_spec()
    source_file = str(pipeline.source_path)
    figures: dict[str, object] = {}
    if not n_transactions:
        context.log.info("No valid transactions: the Flink job is not started and the tables are emptied.")
        return figures
    if isinstance(staged_input, list):
        inputs = [arg for path in staged_input for arg in ("--stream-input", str(path))]
        inputs += ["--savepoint-dir", str(savepoint_dir)] + (["--restore-from", restore_from] if restore_from else [])
    else:
        inputs = ["--input", str(staged_input)]
    command = [
        sys.executable, "-m", "flink_jobs.window_job",
        *inputs,
        "--output", str(flink_output),
        *spec.job_arguments(),
        "--parallelism", str(pipeline.flink_parallelism),
        "--jvm-heap", pipeline.flink_jvm_heap,
    ]  # fmt: skip
    if pipeline.flink_jobmanager:
        command += ["--jobmanager", pipeline.flink_jobmanager]
    for path in aggregates:
        command += ["--aggregate", path]
    context.log.info(f"Submitting Flink job for {n_transactions:,} transactions: {spec.describe()}"
                     + (f", custom aggregates {', '.join(aggregates)}" if aggregates else ""))  # fmt: skip
    try:
        invocation = pipes_subprocess_client.run(command=command, context=context, cwd=str(REPO_ROOT))
    except Exception as error:
        if not is_pipes_execution_error(error):
            raise
        # A failure the user can fix leaves its one sentence there (Pipes only has the exit code)
        reason = read_failure(flink_output) or str(error)
        raise Failure(
            description=f"The Flink job for {source_file} failed ({reason}). The published warehouse "
            f"{step.store.path} keeps its previous results; rerun once the cause is fixed."
        ) from None
    for message in invocation.get_custom_messages():
        if isinstance(message, dict):
            figures.update(message)
    return figures


def _time_quarantine_check(quarantined: int, max_jump_ms: int) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key="transactions",
        check_name="event_times_plausible",
        passed=quarantined == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"implausible_time_rows": quarantined, "max_time_jump_ms": max_jump_ms},
        description=None
        if quarantined == 0
        else f"{quarantined:,} rows had an event time more than {max_jump_ms:,} ms ahead of the stream, unconfirmed "
        "by the rows after them: quarantined to rejected_rows (reason 'implausible event time') before the replay",
    )


def _reconciliation_check(windows: dict, late: dict) -> AssetCheckResult:
    """The Flink output against the independent DuckDB recomputation (warehouse.reconcile)."""
    passed = bool(windows["equal"] and late["equal"])
    return AssetCheckResult(
        asset_key="window_averages",
        check_name="matches_independent_replay",
        passed=passed,
        metadata={
            "windows_compared": windows["compared"],
            "windows_missing": windows["missing"],
            "windows_unexpected": windows["unexpected"],
            "windows_duplicated": windows["duplicates_actual"],
            "window_value_mismatches": windows["value_mismatches"],
            "max_abs_avg_diff": windows["max_abs_diff"],
            "late_events_expected": late["expected"],
            "late_events_missing": late["missing"],
            "late_events_unexpected": late["unexpected"],
            "late_events_value_mismatches": late["value_mismatches"],
            "examples": MetadataValue.json(windows["examples"] + late["examples"]),
        },
        description=None if passed else "window_averages/late_events differ from the DuckDB recomputation",
    )
