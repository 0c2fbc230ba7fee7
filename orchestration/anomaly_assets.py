"""The anomaly assets: `anomaly_thresholds` (per key, over the whole history) and `anomalies` (the
replayed file's windows above their threshold), their checks, and the alert webhook.

Both steps write the run's staging copy of the warehouse like every other step
(orchestration/write_audit_publish.py: stage, audit, publish). `anomalies` is the last table of
`PIPELINE_TABLES`, so in a full run its step publishes the warehouse; only then, and only when the
file has anomalies, does it POST the alert (warehouse.alerts). The alert comes after the publish
on purpose: a webhook that is down, slow or answers an error cannot fail the run or change what was
published. Its outcome is one WARN line and the `alert*` metadata of the materialization.

The method and its parameters live in warehouse.thresholds (plain functions, plain tests); this
module only wires them to Dagster.
"""

import time
from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from orchestration.asset_helpers import (
    GROUP,
    OWNERS,
    PREVIEW_ROWS,
    check_result,
    column_schema,
    contract_result,
    contract_spec,
    fetch_df,
    markdown_preview,
)
from orchestration.plots import anomaly_svg, markdown_image
from orchestration.settings import PipelineSettings
from orchestration.write_audit_publish import PipelineStep
from warehouse import alerts, quality, schema, segments, stream, thresholds
from warehouse import anomalies as anomaly_rows

PLOT_KEYS = 4  # keys drawn in each anomaly plot
TOP_IN_CHECK = 10  # anomalies listed in the no_new_anomalies check's table
# How the alert is delivered. Module-level so that tests can shorten the 5 s timeout and the
# backoff (runs under dagster.materialize execute in this process).
ALERT_POLICY = alerts.DeliveryPolicy()


def _method(settings: PipelineSettings) -> thresholds.Method:
    return thresholds.Method(z=settings.anomaly_z, min_windows=settings.anomaly_min_windows)


def _plot(con, keys: list[str], title: str, source_file: str, *, judged_now: bool) -> str:
    """Markdown with an SVG of the keys' window averages in `source_file`, their threshold(1) and,
    marked, the anomalous windows: judged against the current thresholds (`judged_now`), or as the
    anomalies table has them. Only the file's windows: a plot that costs what the file costs."""
    series = {}
    windows = segments.file_rows(con, "window_averages", source_file)
    for key in keys:
        (threshold,) = schema.fetch_one(con, "SELECT threshold FROM anomaly_thresholds WHERE key = ?", [key])
        points = con.execute(
            f"SELECT window_start_ms, avg_amount FROM {windows} AS w WHERE key = ? AND source_file = ? "
            "ORDER BY window_start_ms",
            [key, source_file],
        ).fetchall()
        if judged_now:
            own = thresholds.window_threshold_sql("t.log_center", "t.log_scale", "t.z", "w.txn_count")
            marked_sql = (
                f"SELECT w.window_start_ms, {own} FROM {windows} AS w JOIN anomaly_thresholds t USING (key) "
                f"WHERE w.key = ? AND w.source_file = ? AND w.avg_amount > {own}"
            )
        else:
            found = segments.file_rows(con, "anomalies", source_file)
            marked_sql = f"SELECT window_start_ms, threshold FROM {found} AS a WHERE key = ? AND source_file = ?"
        marked = dict(con.execute(marked_sql, [key, source_file]).fetchall())  # window start -> its own threshold
        series[key] = (points, threshold, marked)
    return markdown_image(anomaly_svg(series, title), "window averages, threshold and anomalous windows")


# --- anomaly_thresholds ---------------------------------------------------------------------


@asset(
    name="anomaly_thresholds",
    description="Per-key anomaly threshold over all window averages in the warehouse: a robust z-score of "
    "sign(avg)*ln(1+|avg|), scaled by sqrt(txn_count) (warehouse/thresholds.py).",
    group_name=GROUP,
    kinds={"duckdb"},
    owners=OWNERS,
    deps=["window_averages"],
    metadata={"dagster/column_schema": column_schema("anomaly_thresholds"), "table": "anomaly_thresholds"},
    check_specs=[
        AssetCheckSpec(
            "threshold_for_every_eligible_key",
            asset="anomaly_thresholds",
            description="Every key with at least TXN_ANOMALY_MIN_WINDOWS windows has a finite threshold.",
        ),
        contract_spec("anomaly_thresholds"),
    ],
)
def anomaly_thresholds(context: AssetExecutionContext, pipeline: PipelineSettings) -> Iterator:
    with PipelineStep(context, pipeline) as step:
        yield from _anomaly_thresholds(context, step)


def _anomaly_thresholds(context: AssetExecutionContext, step: PipelineStep) -> Iterator:
    started = time.monotonic()
    settings = step.settings
    method = _method(settings)
    source_file = str(settings.source_path)
    with step.staging() as con:
        con.execute("BEGIN")
        # run_id: the histogram is updated by the files this run changed and only their keys are
        # refitted, at the cost of the file, not of the history (warehouse/thresholds.py)
        n_keys = thresholds.replace_thresholds(con, min_windows=method.min_windows, z=method.z, run_id=step.run_id)
        con.execute("COMMIT")
        fit_s = time.monotonic() - started
        eligible, with_threshold, n_keys_all = schema.fetch_one(
            con,
            "SELECT count(*) FILTER (WHERE e.n >= ?), "
            "count(*) FILTER (WHERE e.n >= ? AND isfinite(t.threshold)), count(*) "
            "FROM (SELECT key, sum(window_count) AS n FROM threshold_key_files GROUP BY key) e "
            "LEFT JOIN anomaly_thresholds t USING (key)",
            [method.min_windows, method.min_windows],
        )
        n_anomalous, judged_windows = schema.fetch_one(
            con, "SELECT coalesce(sum(anomalous_windows), 0), coalesce(sum(window_count), 0) FROM anomaly_thresholds"
        )
        preview = fetch_df(
            con,
            "SELECT key, threshold, window_count, txn_count, median_avg_amount, log_center, log_scale, "
            "anomalous_windows FROM anomaly_thresholds ORDER BY anomalous_windows DESC, key LIMIT ?",
            [PREVIEW_ROWS],
        )
        file_windows = segments.file_rows(con, "window_averages", source_file)
        busiest = [
            row[0]
            for row in con.execute(
                f"SELECT key FROM anomaly_thresholds WHERE key IN (SELECT key FROM {file_windows} AS w) "
                "ORDER BY window_count DESC, key LIMIT ?",
                [PLOT_KEYS],
            ).fetchall()
        ]
        plot = _plot(
            con,
            busiest,
            f"This file's window averages of the {len(busiest)} keys with the most history, judged against the "
            f"new thresholds (z = {method.z:g})",
            source_file,
            judged_now=True,
        )
        contract = contract_result(con, "anomaly_thresholds")
    every_key = AssetCheckResult(
        asset_key="anomaly_thresholds",
        check_name="threshold_for_every_eligible_key",
        passed=bool(eligible == with_threshold),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "eligible_keys": int(eligible),
            "keys_with_threshold": int(with_threshold),
            "keys_with_too_little_history": int(n_keys_all - eligible),
            "min_windows": method.min_windows,
        },
        description=None
        if eligible == with_threshold
        else f"{eligible - with_threshold} of {eligible} keys with enough history have no finite threshold",
    )
    published = step.audit_and_publish([every_key, contract])
    yield MaterializeResult(
        asset_key="anomaly_thresholds",
        metadata={
            "dagster/row_count": int(n_keys),  # one row per key over every file: the whole table
            "source_file": MetadataValue.path(source_file),
            "anomalous_windows": int(n_anomalous),
            "judged_windows": int(judged_windows),
            "flagged_ratio": round(n_anomalous / judged_windows, 6) if judged_windows else 0.0,
            "keys_with_too_little_history": int(n_keys_all - eligible),
            "method": thresholds.METHOD,
            "params": MetadataValue.json(method.params()),
            "min_windows": method.min_windows,
            "z": method.z,
            "preview": markdown_preview(preview),
            "plot": MetadataValue.md(plot),
            "fit_s": round(fit_s, 3),
            "duration_s": round(time.monotonic() - started, 3),
            **published,
        },
    )
    yield every_key
    yield contract


# --- anomalies --------------------------------------------------------------------------------


@asset(
    name="anomalies",
    description="Windows of the replayed file above their key's threshold, with the threshold, the score, the "
    "method and its parameters; replaying a file replaces its rows. Sends the alert webhook "
    "(TXN_ALERT_WEBHOOK_URL) once the run has published.",
    group_name=GROUP,
    kinds={"duckdb"},
    owners=OWNERS,
    deps=["anomaly_thresholds", "window_averages"],
    metadata={"dagster/column_schema": column_schema("anomalies"), "table": "anomalies"},
    check_specs=[
        AssetCheckSpec(
            "no_new_anomalies",
            asset="anomalies",
            description="The replayed file has no anomalous window (warns, non-blocking); the metadata lists the top ones.",
        ),
        AssetCheckSpec(
            "every_anomaly_above_its_threshold",
            asset="anomalies",
            description="Every row is a window of window_averages, once, with an average above its finite "
            "threshold and a finite score above z.",
        ),
        contract_spec("anomalies"),
    ],
)
def anomalies(context: AssetExecutionContext, pipeline: PipelineSettings) -> Iterator:
    started = time.monotonic()
    with PipelineStep(context, pipeline) as step:
        settings = step.settings
        source_file = str(settings.source_path)
        run_id = context.run.run_id
        with step.staging() as con:
            con.execute("BEGIN")
            for rewritten in stream.files_rewritten_by(con, run_id, source_file):  # stream mode: a rebuild
                anomaly_rows.replace_anomalies(con, rewritten, run_id)
            count = anomaly_rows.replace_anomalies(con, source_file, run_id)
            con.execute("COMMIT")
            windows = segments.file_rows(con, "window_averages", source_file)
            found = segments.file_rows(con, "anomalies", source_file)
            (n_windows,) = schema.fetch_one(
                con, f"SELECT count(*) FROM {windows} AS w WHERE source_file = ?", [source_file]
            )
            n_all = segments.row_count(con, "anomalies")
            top_df = fetch_df(
                con,
                f"SELECT key, window_start, window_end, avg_amount, txn_count, threshold, score FROM {found} AS a "
                f"WHERE source_file = ? ORDER BY {anomaly_rows.TOP_ORDER} LIMIT ?",
                [source_file, max(PREVIEW_ROWS, TOP_IN_CHECK)],
            )
            items = anomaly_rows.top(con, source_file, settings.alert_max_items) if count else []
            problems = anomaly_rows.consistency_problems(con, source_file)
            plot_keys = [
                row[0]
                for row in con.execute(
                    f"SELECT w.key FROM {windows} w JOIN anomaly_thresholds t USING (key) "
                    f"LEFT JOIN (SELECT key, count(*) AS n FROM {found} AS an WHERE source_file = $f GROUP BY key) a "
                    "USING (key) WHERE w.source_file = $f GROUP BY w.key "
                    "ORDER BY max(coalesce(a.n, 0)) DESC, count(*) DESC, w.key LIMIT $k",
                    {"f": source_file, "k": PLOT_KEYS},
                ).fetchall()
            ]
            plot = _plot(
                con,
                plot_keys,
                f"This file's anomalies (red) among its window averages, {len(plot_keys)} keys, most anomalies "
                f"first (z = {settings.anomaly_z:g})",
                source_file,
                judged_now=False,
            )
            contract = contract_result(con, "anomalies")
        checks = [
            AssetCheckResult(
                asset_key="anomalies",
                check_name="no_new_anomalies",
                passed=count == 0,
                severity=AssetCheckSeverity.WARN,
                metadata={
                    "anomalies": int(count),
                    "windows_judged": int(n_windows),
                    "top": markdown_preview(top_df.head(TOP_IN_CHECK)),
                },
                description=None
                if count == 0
                else f"{count} of {n_windows} windows of {source_file} are above their key's threshold",
            ),
            check_result(
                "anomalies",
                "every_anomaly_above_its_threshold",
                quality.CheckOutcome(
                    passed=not problems,
                    description="; ".join(problems) or None,
                    metadata={"anomalies_checked": int(count)},
                ),
                AssetCheckSeverity.ERROR,
            ),
            contract,
        ]
        published = step.audit_and_publish(checks)
    if published.get("published_by_this_step"):
        alert = _send_alert(context, settings, source_file, run_id, count, items)
    else:
        alert = {"alert": "not sent: the run did not publish"}
    yield MaterializeResult(
        asset_key="anomalies",
        metadata={
            **({} if step.blocked else {"dagster/row_count": int(n_all)}),  # every file's anomalies, as published
            "rows_from_this_file": int(count),
            "windows_judged": int(n_windows),
            "anomalies_all_files": int(n_all),
            "source_file": MetadataValue.path(source_file),
            "method": thresholds.METHOD,
            "params": MetadataValue.json(_method(settings).params()),
            "preview": markdown_preview(top_df.head(PREVIEW_ROWS)),
            "plot": MetadataValue.md(plot),
            **alert,
            "duration_s": round(time.monotonic() - started, 3),
            **published,
        },
    )
    yield from checks


def _send_alert(
    context: AssetExecutionContext,
    settings: PipelineSettings,
    source_file: str,
    run_id: str,
    count: int,
    items: list[dict[str, object]],
) -> dict[str, object]:
    """POST the alert if configured and there is something to report; the metadata of the outcome.
    Never raises: the run has already published."""
    url = settings.alert_webhook_url.strip()
    if not url:
        return {"alert": "off (TXN_ALERT_WEBHOOK_URL is not set)"}
    target = alerts.redact(url)
    if not count:
        return {"alert": "nothing to report", "alert_target": target}
    try:
        body = alerts.payload(source_file, run_id, count, items, settings.alert_max_items)
        delivery = alerts.post_json(url, body, ALERT_POLICY)
    except Exception as error:  # noqa: BLE001 - post_json does not raise; this guards the payload
        delivery = alerts.Delivery(False, 0, None, f"{type(error).__name__}: {error}", 0.0)
        body = {"anomalies": []}
    meta: dict[str, object] = {
        "alert": "sent" if delivery.delivered else "failed",
        "alert_target": target,
        "alert_items": len(body["anomalies"]),
        "alert_attempts": delivery.attempts,
        "alert_seconds": delivery.elapsed_s,
    }
    if delivery.status is not None:
        meta["alert_http_status"] = delivery.status
    if delivery.delivered:
        context.log.info(
            f"Anomaly alert sent to {target}: {len(body['anomalies'])} of {count} anomalies (HTTP {delivery.status})"
        )
    else:
        meta["alert_error"] = delivery.error or "unknown error"
        context.log.warning(
            f"Anomaly alert for {count} anomalies of this run NOT delivered to {target} after "
            f"{delivery.attempts} attempt(s) in {delivery.elapsed_s:g} s: {delivery.error}. "
            "The run and its published data are unaffected; the anomalies table has them."
        )
    return meta
