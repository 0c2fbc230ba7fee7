"""The data contract: every DuckDB table the pipeline writes, with its columns and types.

Every table but `anomaly_thresholds` (which spans the whole history) carries `source_file`, so that
daily extracts accumulate: replaying a file replaces exactly that file's rows. All times are UTC; `*_ms` columns are epoch milliseconds.
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb

AMOUNT_TYPE = "DECIMAL(18,4)"  # 14 integer digits (up to 10**14 - 1) and 4 decimal places, exact
SUM_TYPE = "DECIMAL(38,4)"  # what SUM(DECIMAL(18,4)) gives in DuckDB and Flink: no overflow


class Column(NamedTuple):
    name: str
    type: str
    description: str


_C = Column
_SOURCE_FILE = _C("source_file", "VARCHAR", "Absolute path of the replayed CSV; replaying a file replaces its rows")
_KEY = _C("key", "VARCHAR", "Value of the key column (TXN_KEY_COLUMN) the windows are keyed by")
_IS_FINAL = _C(
    "is_final",
    "BOOLEAN",
    "False for a window still open at the end of the stream (TXN_REPLAY_MODE=stream): its contents so far, "
    "replaced by the next file's run; always true in file mode",
)

# table -> ordered columns. Asset names equal table names. The pipeline inserts by position, so
# the order is part of the contract.
CONTRACT: dict[str, tuple[Column, ...]] = {
    "transactions": (
        _SOURCE_FILE,
        _C("source_row", "BIGINT", "1-based data-record number in the file (header and blank lines not counted)"),
        _C("line", "BIGINT", "Physical line of the file where the record starts"),
        _C("transaction_id", "VARCHAR", "The transaction_id column of the file"),
        _KEY,
        _C("event_time", "TIMESTAMP WITH TIME ZONE", "Event time, normalized to UTC"),
        _C("event_time_ms", "BIGINT", "Event time as UTC epoch milliseconds (floored)"),
        _C("amount", AMOUNT_TYPE, "Amount, read exactly from the decimal text"),
    ),
    "rejected_rows": (
        _SOURCE_FILE,
        _C("source_row", "BIGINT", "1-based data-record number in the file"),
        _C("line", "BIGINT", "Physical line of the file where the record starts"),
        _C("raw", "VARCHAR", "The record's original text"),
        _C("reason", "VARCHAR", "Why the row was rejected (several reasons are joined with '; ')"),
    ),
    "watermark_advice": (
        _SOURCE_FILE,
        _C(
            "target_late_ratio",
            "DOUBLE",
            "Late-event ratio this row's bound is the smallest to meet (late_ratio <= target); NULL on the configured bound's row",
        ),
        _C(
            "out_of_orderness_ms",
            "BIGINT",
            "Smallest whole-ms TXN_OUT_OF_ORDERNESS_MS that meets the target with the configured windows and allowed lateness (is_current row: the configured value)",
        ),
        _C("late_ratio", "DOUBLE", "late_events / transactions"),
        _C(
            "late_events",
            "BIGINT",
            "Late events a replay of the file with this bound gives (sessions: an upper bound, see late_events_exact)",
        ),
        _C(
            "added_latency_ms",
            "BIGINT",
            "out_of_orderness_ms minus the configured bound: how much later every window closes (negative: earlier)",
        ),
        _C("transactions", "BIGINT", "Valid transactions of the file, the ratio's denominator"),
        _C("is_current", "BOOLEAN", "True on the one row that describes the configured TXN_OUT_OF_ORDERNESS_MS"),
        _C(
            "target_source",
            "VARCHAR",
            "Where the target comes from: TXN_ADVICE_TARGETS, TXN_MAX_LATE_RATIO (late_ratio_within_limit) or TXN_OUT_OF_ORDERNESS_MS (the configured bound)",
        ),
        _C(
            "late_events_exact",
            "BOOLEAN",
            "True when late_events is exactly what a replay gives (tumbling, sliding); false for sessions, where it is an upper bound",
        ),
        _C("window_kind", "VARCHAR", "Window kind the advice is for (TXN_WINDOW_KIND)"),
        _C("window_size_ms", "BIGINT", "Window size (tumbling, sliding; 0 for sessions)"),
        _C("window_slide_ms", "BIGINT", "Slide of sliding windows (0 otherwise)"),
        _C("session_gap_ms", "BIGINT", "Gap of session windows (0 otherwise)"),
        _C("allowed_lateness_ms", "BIGINT", "Allowed lateness the advice is for (TXN_ALLOWED_LATENESS_MS)"),
    ),
    "window_averages": (
        _SOURCE_FILE,
        _KEY,
        _C("window_start", "TIMESTAMP WITH TIME ZONE", "Window start (inclusive), UTC"),
        _C("window_end", "TIMESTAMP WITH TIME ZONE", "Window end (exclusive), UTC"),
        _C("avg_amount", "DOUBLE", "sum_amount::DOUBLE / txn_count: the exact sum as a double, divided by the count"),
        _C("txn_count", "BIGINT", "On-time transactions counted in the window"),
        _C("sum_amount", SUM_TYPE, "Exact sum of the window's amounts"),
        _C("min_amount", AMOUNT_TYPE, "Smallest amount in the window"),
        _C("max_amount", AMOUNT_TYPE, "Largest amount in the window"),
        _C("window_start_ms", "BIGINT", "Window start as UTC epoch milliseconds"),
        _C("window_end_ms", "BIGINT", "Window end as UTC epoch milliseconds (exclusive)"),
        _IS_FINAL,
    ),
    "late_events": (
        _SOURCE_FILE,
        _C("source_row", "BIGINT", "The transaction's source_row"),
        _KEY,
        _C("event_time", "TIMESTAMP WITH TIME ZONE", "Event time, UTC"),
        _C("amount", AMOUNT_TYPE, "Amount of the late transaction"),
        _C("event_time_ms", "BIGINT", "Event time as UTC epoch milliseconds"),
        _C(
            "watermark_ms",
            "BIGINT",
            "The watermark the event was judged against: max earlier event time - out-of-orderness - 1",
        ),
        _C(
            "window_start",
            "TIMESTAMP WITH TIME ZONE",
            "Start of the latest window the event belongs to (sessions: its own window)",
        ),
        _C("window_end", "TIMESTAMP WITH TIME ZONE", "End of that window (exclusive)"),
    ),
    "custom_aggregates": (
        _SOURCE_FILE,
        _KEY,
        _C("window_start", "TIMESTAMP WITH TIME ZONE", "Window start (inclusive), UTC"),
        _C("window_end", "TIMESTAMP WITH TIME ZONE", "Window end (exclusive), UTC"),
        _C("window_start_ms", "BIGINT", "Window start as UTC epoch milliseconds"),
        _C("window_end_ms", "BIGINT", "Window end as UTC epoch milliseconds (exclusive)"),
        _C("aggregate", "VARCHAR", "Import path of your AggregateFunction (TXN_AGGREGATE), package.module:ClassName"),
        _C(
            "value",
            "DOUBLE",
            "get_result of the window's accumulator over its on-time events; NULL when it returned None",
        ),
        _IS_FINAL,
    ),
    "replays": (
        _SOURCE_FILE,
        _C("run_id", "VARCHAR", "Dagster run that replayed the file"),
        _C("replayed_at", "TIMESTAMP WITH TIME ZONE", "When the run wrote its windows (UTC)"),
        _C("window_kind", "VARCHAR", "tumbling, sliding or session (TXN_WINDOW_KIND)"),
        _C("window_size_ms", "BIGINT", "Window size (tumbling, sliding; 0 for sessions)"),
        _C("window_slide_ms", "BIGINT", "Slide of sliding windows (0 otherwise)"),
        _C("session_gap_ms", "BIGINT", "Gap of session windows (0 otherwise)"),
        _C("out_of_orderness_ms", "BIGINT", "Bounded out-of-orderness of the watermark"),
        _C("allowed_lateness_ms", "BIGINT", "Allowed lateness of windows"),
        _C("transactions", "BIGINT", "Transactions replayed"),
        _C("windows", "BIGINT", "Windows written"),
        _C("late_events", "BIGINT", "Late events written"),
    ),
    "stream_files": (
        _C(
            "position",
            "BIGINT",
            "1-based place of the file in the stream (TXN_REPLAY_MODE=stream): by median event time",
        ),
        _SOURCE_FILE,
        _C("median_event_time_ms", "BIGINT", "Median event time of the file's transactions: the stream order's key"),
        _C("transactions", "BIGINT", "Valid transactions of the file"),
        _C("max_event_time_ms", "BIGINT", "Latest event time of the file"),
        _C("stream_max_event_time_ms", "BIGINT", "Latest event time of the stream up to and including this file"),
        _C(
            "watermark_ms",
            "BIGINT",
            "The stream's watermark after this file: stream_max_event_time_ms - out-of-orderness - 1",
        ),
        _C(
            "savepoint",
            "VARCHAR",
            "Flink savepoint holding the stream's state after this file (open windows, watermark)",
        ),
        _C("run_id", "VARCHAR", "Dagster run that last replayed the file"),
        _C("replayed_at", "TIMESTAMP WITH TIME ZONE", "When that run replayed it (UTC)"),
    ),
    "anomaly_thresholds": (
        _KEY,
        _C("threshold", "DOUBLE", "avg_amount above which a 1-transaction window is anomalous (busier: lower)"),
        _C("method", "VARCHAR", "How the threshold was computed (warehouse/thresholds.py METHOD)"),
        _C("params", "VARCHAR", "The method's parameters as JSON (z, min_windows, min_scale, transform)"),
        _C("z", "DOUBLE", "Robust z-score above which a window is anomalous (TXN_ANOMALY_Z)"),
        _C("window_count", "BIGINT", "Windows of the key in the whole history"),
        _C("txn_count", "BIGINT", "Transactions in those windows"),
        _C("log_center", "DOUBLE", "Median of y = sign(avg) * ln(1 + |avg|) over the key's windows"),
        _C("log_scale", "DOUBLE", "Robust spread of sqrt(txn_count) * (y - log_center): 1.4826 * MAD, floored"),
        _C("median_avg_amount", "DOUBLE", "Median window average: inv(log_center) (even count: between the middle 2)"),
        _C("max_avg_amount", "DOUBLE", "Largest window average of the key"),
        _C("anomalous_windows", "BIGINT", "Windows of the whole history above their threshold with these parameters"),
    ),
    "anomalies": (
        _SOURCE_FILE,
        _KEY,
        _C("window_start", "TIMESTAMP WITH TIME ZONE", "Window start (inclusive), UTC"),
        _C("window_end", "TIMESTAMP WITH TIME ZONE", "Window end (exclusive), UTC"),
        _C("avg_amount", "DOUBLE", "The window's average amount"),
        _C("threshold", "DOUBLE", "avg_amount above which this window (with its txn_count) is anomalous"),
        _C("score", "DOUBLE", "Robust z-score sqrt(txn_count) * (y - log_center) / log_scale, above z"),
        _C("method", "VARCHAR", "Method of the threshold the window was judged against"),
        _C("params", "VARCHAR", "That method's parameters as JSON"),
        _C("txn_count", "BIGINT", "On-time transactions in the window"),
        _C("window_start_ms", "BIGINT", "Window start as UTC epoch milliseconds"),
        _C("window_end_ms", "BIGINT", "Window end as UTC epoch milliseconds (exclusive)"),
        _C("run_id", "VARCHAR", "Dagster run that judged the window"),
    ),
}
del _C

# Columns that record which run wrote a row (its id and clock). Everything else in every table is a
# function of the input files and the configuration: same files + same config -> identical rows.
RUN_COLUMNS = frozenset({"run_id", "replayed_at", "savepoint"})

# table -> ordered (column, DuckDB type)
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    table: tuple((c.name, c.type) for c in columns) for table, columns in CONTRACT.items()
}


def column_descriptions(table: str) -> dict[str, str]:
    return {c.name: c.description for c in CONTRACT[table]}


def columns_sql(table: str) -> str:
    """The contract's column definitions of `table`, as CREATE TABLE takes them."""
    return ", ".join(f"{name} {sql_type}" for name, sql_type in TABLES[table])


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create any missing table of the contract (existing tables are left as they are)."""
    for table in TABLES:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns_sql(table)})")


def describe(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """The (column, type) pairs DuckDB reports for a table, in column order."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
        "AND table_catalog = current_database() AND table_schema = 'main' ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [(name, data_type) for name, data_type in rows]


def contract_mismatches(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Human-readable differences between a table in the database and the contract ([] if none)."""
    expected = list(TABLES[table])
    actual = describe(con, table)
    if not actual:
        return [f"table {table} does not exist"]
    problems = []
    actual_map = dict(actual)
    for name, sql_type in expected:
        if name not in actual_map:
            problems.append(f"{table}.{name} is missing")
        elif actual_map[name] != sql_type:
            problems.append(f"{table}.{name} is {actual_map[name]}, expected {sql_type}")
    expected_names = [name for name, _ in expected]
    extra = [name for name, _ in actual if name not in expected_names]
    if extra:
        problems.append(f"{table} has unexpected column(s) {', '.join(extra)}")
    common = [name for name, _ in actual if name in expected_names]
    if not problems and common != expected_names:
        # the pipeline inserts by position, so the order is part of the contract
        problems.append(f"{table} columns are in the order {', '.join(common)}, expected {', '.join(expected_names)}")
    return problems


def window_start_sql(ts: str, size: str = "$size") -> str:
    """DuckDB SQL for the start of the window of `ts`, floor-aligned to `size` also before 1970
    (DuckDB's `%` keeps the dividend's sign). warehouse.reconcile spells it out on its own, on
    purpose: it is the independent recomputation."""
    return f"({ts} - ((({ts} % {size}) + {size}) % {size}))"


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> tuple:
    """The single row a query returns, with the result fully consumed.

    DuckDB 2 refuses further work on a connection whose last result was only partly fetched, so
    `execute(...).fetchone()` must not be used for single-row queries.
    """
    rows = con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()
    if len(rows) != 1:
        raise ValueError(f"expected one row, got {len(rows)}")
    return rows[0]
