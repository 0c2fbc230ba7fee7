"""The `anomalies` table: one row per window of a replayed file that is above its key's threshold.

Each window of the file is judged against the thresholds of the accumulated history
(`anomaly_thresholds`, recomputed just before from every file's windows, this one included), with
the same SQL expressions as the thresholds themselves (warehouse.thresholds). A row keeps what the
window was judged against: its own threshold (which depends on its txn_count), its score, the
method and the parameters. Like the other tables the rows accumulate across files, and replaying a
file replaces that file's rows; older files' rows keep the threshold they were judged against.

Works for every window kind (tumbling, sliding, session): a window is identified by
(source_file, key, window_start_ms, window_end_ms) and judged by its average and count only.
"""

from __future__ import annotations

import duckdb

from warehouse import schema, segments
from warehouse.thresholds import score_sql, window_threshold_sql

_JUDGED_SQL = f"""
SELECT w.source_file, w.key, w.window_start, w.window_end, w.avg_amount,
       {window_threshold_sql("t.log_center", "t.log_scale", "t.z", "w.txn_count")} AS threshold,
       {score_sql("w.avg_amount", "t.log_center", "t.log_scale", "w.txn_count")} AS score,
       t.method, t.params, w.txn_count, w.window_start_ms, w.window_end_ms, $run_id AS run_id
FROM {{windows}} w JOIN anomaly_thresholds t USING (key)
WHERE w.source_file = $source_file AND w.is_final
"""

# Largest score first; ties in a fixed order so that the alert and the preview are deterministic.
TOP_ORDER = "score DESC, key, window_start_ms, window_end_ms"


def replace_anomalies(con: duckdb.DuckDBPyConnection, source_file: str, run_id: str) -> int:
    """Replace the anomalies of `source_file` with its windows above their threshold; returns the count."""
    params = {"source_file": source_file, "run_id": run_id}
    target = segments.replace_file(con, "anomalies", source_file)
    con.execute(
        f"INSERT INTO {target} SELECT * FROM "
        f"({_JUDGED_SQL.format(windows=segments.file_rows(con, 'window_averages', source_file))}) "
        "WHERE avg_amount > threshold "
        "ORDER BY key, window_start_ms, window_end_ms",
        params,
    )
    return count(con, source_file)


def count(con: duckdb.DuckDBPyConnection, source_file: str) -> int:
    rows = segments.file_rows(con, "anomalies", source_file)
    return schema.fetch_one(con, f"SELECT count(*) FROM {rows} AS anomalies WHERE source_file = ?", [source_file])[0]


def top(con: duckdb.DuckDBPyConnection, source_file: str, limit: int) -> list[dict[str, object]]:
    """The file's anomalies, largest score first, as the alert lists them (epoch-ms window bounds)."""
    rows = con.execute(
        "SELECT key, window_start_ms, window_end_ms, avg_amount, threshold, score, txn_count "
        f"FROM {segments.file_rows(con, 'anomalies', source_file)} AS anomalies WHERE source_file = ? "
        f"ORDER BY {TOP_ORDER} LIMIT ?",
        [source_file, int(limit)],
    ).fetchall()
    names = ("key", "window_start", "window_end", "avg_amount", "threshold", "score", "txn_count")
    return [dict(zip(names, row, strict=True)) for row in rows]


def consistency_problems(con: duckdb.DuckDBPyConnection, source_file: str) -> list[str]:
    """Rules every row of the file's anomalies obeys ([] if all hold): a window of window_averages,
    at most once, with a finite score above z and an average above its finite threshold."""
    found = segments.file_rows(con, "anomalies", source_file)
    windows = segments.file_rows(con, "window_averages", source_file)
    (missing, duplicated, not_above, bad_score) = schema.fetch_one(
        con,
        "SELECT "
        f"(SELECT count(*) FROM {found} a WHERE a.source_file = $f AND NOT EXISTS (SELECT 1 FROM {windows} w "
        "  WHERE w.source_file = a.source_file AND w.key = a.key AND w.window_start_ms = a.window_start_ms "
        "  AND w.window_end_ms = a.window_end_ms AND w.avg_amount = a.avg_amount AND w.txn_count = a.txn_count)), "
        f"(SELECT count(*) - count(DISTINCT (key, window_start_ms, window_end_ms)) FROM {found} a WHERE source_file = $f), "
        f"(SELECT count(*) FROM {found} a WHERE source_file = $f AND NOT (isfinite(threshold) AND avg_amount > threshold)), "
        f"(SELECT count(*) FROM {found} a WHERE source_file = $f AND NOT (isfinite(score) AND score > "
        "  coalesce(TRY_CAST(json_extract_string(params, '$.z') AS DOUBLE), 0) * (1 - 1e-9)))",
        {"f": source_file},
    )
    problems = []
    if missing:
        problems.append(f"{missing} anomalies are not a window of window_averages")
    if duplicated:
        problems.append(f"{duplicated} windows are listed more than once")
    if not_above:
        problems.append(f"{not_above} anomalies are not above a finite threshold")
    if bad_score:
        problems.append(f"{bad_score} anomalies have a score that is not finite and above z")
    return problems
