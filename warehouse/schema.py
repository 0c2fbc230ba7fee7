"""The data contract: every DuckDB table the pipeline writes, with its columns and types.

Every table but `anomaly_thresholds` (which spans the whole history) carries `source_file`, so that
daily extracts accumulate: replaying a file replaces exactly that file's rows. All times are UTC; `*_ms` columns are epoch milliseconds.
"""

from __future__ import annotations

import duckdb

# table -> ordered (column, DuckDB type). Asset names equal table names.
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "transactions": (
        ("source_file", "VARCHAR"),
        ("source_row", "BIGINT"),
        ("line", "BIGINT"),
        ("transaction_id", "VARCHAR"),
        ("key", "VARCHAR"),
        ("event_time", "TIMESTAMP WITH TIME ZONE"),
        ("event_time_ms", "BIGINT"),
        ("amount", "DOUBLE"),
    ),
    "rejected_rows": (
        ("source_file", "VARCHAR"),
        ("source_row", "BIGINT"),
        ("line", "BIGINT"),
        ("raw", "VARCHAR"),
        ("reason", "VARCHAR"),
    ),
    "window_averages": (
        ("source_file", "VARCHAR"),
        ("key", "VARCHAR"),
        ("window_start", "TIMESTAMP WITH TIME ZONE"),
        ("window_end", "TIMESTAMP WITH TIME ZONE"),
        ("avg_amount", "DOUBLE"),
        ("txn_count", "BIGINT"),
        ("window_start_ms", "BIGINT"),
        ("window_end_ms", "BIGINT"),
    ),
    "late_events": (
        ("source_file", "VARCHAR"),
        ("source_row", "BIGINT"),
        ("key", "VARCHAR"),
        ("event_time", "TIMESTAMP WITH TIME ZONE"),
        ("amount", "DOUBLE"),
        ("event_time_ms", "BIGINT"),
        ("watermark_ms", "BIGINT"),
        ("window_start", "TIMESTAMP WITH TIME ZONE"),
        ("window_end", "TIMESTAMP WITH TIME ZONE"),
    ),
    "anomaly_thresholds": (
        ("key", "VARCHAR"),
        ("threshold", "DOUBLE"),
        ("method", "VARCHAR"),
        ("window_count", "BIGINT"),
        ("median_avg_amount", "DOUBLE"),
        ("mad_avg_amount", "DOUBLE"),
        ("max_avg_amount", "DOUBLE"),
        ("anomalous_windows", "BIGINT"),
    ),
}

def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create any missing table of the contract (existing tables are left as they are)."""
    for table, columns in TABLES.items():
        cols = ", ".join(f"{name} {sql_type}" for name, sql_type in columns)
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")


def describe(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """The (column, type) pairs DuckDB reports for a table, in column order."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
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
