"""The big tables as immutable per-file Parquet segments behind views; the warehouse file is their catalog.

A run must cost what its file costs (docs/decisions/0007-parquet-segments.md), so the rows of the six
tables that grow with every file (`SEGMENTED`) live in Parquet files, one or more per (table, source
file), never modified once written. The DuckDB file holds the `segments` table (which Parquet file holds
which (table, source file), with its row count); one view per segmented table, ``SELECT * FROM
read_parquet([<its segments>]) UNION ALL SELECT * FROM staged.<table>``, so SQL reads as before; the
small tables (`replays`, `watermark_advice`, `anomaly_thresholds`); and schema `staged`, a run's
unpublished rows and `staged.replaced`, the (table, source file) pairs whose segments the run replaces.

A step replaces a file's rows with `replace_file` (the segmented ``DELETE ... WHERE source_file = ?``)
and inserts into the table it returns; the views then show the warehouse as it will be published. `seal`
(at publish) writes each staged (table, file) as a new segment, drops the replaced ones from `segments`
and empties `staged`. On a plain connection (an in-memory database from `schema.create_tables`, as in
unit tests) the tables are ordinary and `replace_file` is exactly the DELETE, so the domain code is the
same in both. Layout, per-file reads and the cost of readers: docs/atomic-runs.md#segments.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import duckdb

from warehouse import schema

# Tables whose rows grow with every file: Parquet segments. The rest of the contract stays native.
SEGMENTED = ("transactions", "rejected_rows", "window_averages", "late_events", "custom_aggregates", "anomalies")
NATIVE = tuple(table for table in schema.TABLES if table not in SEGMENTED)

_CATALOG_TABLES = (
    "CREATE TABLE IF NOT EXISTS segments (table_name VARCHAR, source_file VARCHAR, path VARCHAR, "
    "row_count BIGINT, run_id VARCHAR)",
    "CREATE TABLE IF NOT EXISTS staged.replaced (table_name VARCHAR, source_file VARCHAR)",
    # segments written before a column was added to their table (ADDED_COLUMNS): read with its default
    "CREATE TABLE IF NOT EXISTS segments_without (table_name VARCHAR, path VARCHAR, column_name VARCHAR)",
)
# Columns added to the contract after warehouses were written, at the end of their table, with the value
# rows written before them have. A warehouse of an earlier version gets them on its next run: its staged
# table gains the column, and its segments (immutable Parquet) are read with the default.
ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "window_averages": {"is_final": "true"},  # stream mode (warehouse/stream.py); every earlier window is final
    "custom_aggregates": {"is_final": "true"},
}


class MissingSegments(FileNotFoundError):
    """Segment files the catalog lists are neither where it lists them nor in the store's segments folder."""


def sql_literal(text: str) -> str:
    """`text` as a quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def is_segmented(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """True when `table` is a segmented view in this database (a staging or published warehouse)."""
    rows = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'staged' AND table_name = ?",
        [table],
    ).fetchall()
    return rows[0][0] > 0


def prepare(con: duckdb.DuckDBPyConnection, segment_dir: Path | None = None) -> None:
    """Make `con`'s database a segmented warehouse (idempotent): native tables, staged tables, views.

    With `segment_dir` (the store's), segments listed at a path that no longer exists but found in
    `segment_dir` under the same table and name are listed there instead: a warehouse moved with its
    segments folder works again from its next run on. A segment in neither place raises MissingSegments
    (the store names the folder to restore).

    A warehouse written before segments (the big tables as ordinary tables) is converted on the way:
    its rows move to `staged` and become segments at the next publish, once. A table of that kind
    that does not match the contract (changed by another tool) is left as it is: the table's
    contract check then fails the run with what is wrong, as before.
    """
    con.execute("CREATE SCHEMA IF NOT EXISTS staged")
    for statement in _CATALOG_TABLES:
        con.execute(statement)
    relinked = segment_dir is not None and _relink(con, segment_dir)
    for table in NATIVE:
        con.execute(f"CREATE TABLE IF NOT EXISTS main.{table} ({schema.columns_sql(table)})")
    legacy = {
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main'"
        ).fetchall()
    }
    tables, converted = [], []
    for table in SEGMENTED:
        cols = schema.columns_sql(table)
        if table in legacy:
            if schema.contract_mismatches(con, table):
                continue  # left as it is, for the table's contract check to name what is wrong
            con.execute("BEGIN")  # all or nothing: a crash here leaves the table as it was
            con.execute(f"CREATE TABLE staged.{table} ({cols})")
            con.execute(f"INSERT INTO staged.{table} SELECT * FROM main.{table}")
            con.execute(f"DROP TABLE main.{table}")
            con.execute("COMMIT")
            converted.append(table)
        con.execute(f"CREATE TABLE IF NOT EXISTS staged.{table} ({cols})")
        if _add_columns(con, table):
            converted.append(table)
        tables.append(table)
    # Every change to `segments` or `staged.replaced` (replace_file, seal) rewrites the views, so they
    # are current unless missing, relinked or converted here. Rewriting them on every connection cost
    # 0.02 s per connection at a year of daily files (2,190 segments), 7 connections per run.
    views = {
        row[0]
        for row in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() AND schema_name = 'main'"
        ).fetchall()
    }
    stale = tuple(table for table in tables if relinked or table in converted or table not in views)
    if stale:
        refresh_views(con, stale)


def _add_columns(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Give `table`'s staged rows the ADDED_COLUMNS they lack, and note its segments as written without
    them; True when it did (once per warehouse and column)."""
    present = {
        row[0]
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema = 'staged' AND table_name = ?",
            [table],
        ).fetchall()
    }
    added = False
    for column, default in ADDED_COLUMNS.get(table, {}).items():
        if column in present:
            continue
        sql_type = dict(schema.TABLES[table])[column]
        con.execute("BEGIN")
        con.execute(f"ALTER TABLE staged.{table} ADD COLUMN {column} {sql_type} DEFAULT {default}")
        con.execute(
            "INSERT INTO segments_without SELECT table_name, path, ? FROM segments WHERE table_name = ?",
            [column, table],
        )
        con.execute("COMMIT")
        added = True
    return added


def parquet_rows_sql(con: duckdb.DuckDBPyConnection, table: str, paths: list[str]) -> str:
    """SELECT of the rows of `table`'s segments at `paths`, in the contract's columns: segments written
    before a column was added get its default (ADDED_COLUMNS)."""
    added = ADDED_COLUMNS.get(table)
    old = set()
    if added:
        old = {row[0] for row in con.execute(
            "SELECT DISTINCT path FROM segments_without WHERE table_name = ?", [table]).fetchall()} & set(paths)  # fmt: skip
    parts = []
    current = [p for p in paths if p not in old]
    if current:
        parts.append(f"SELECT * FROM read_parquet([{', '.join(sql_literal(p) for p in current)}])")
    if old:
        defaults = ", ".join(f"{default} AS {column}" for column, default in added.items())  # type: ignore[union-attr]
        listed = ", ".join(sql_literal(p) for p in sorted(old))
        parts.append(f"SELECT *, {defaults} FROM read_parquet([{listed}])")
    return " UNION ALL ".join(parts)


def _relink(con: duckdb.DuckDBPyConnection, segment_dir: Path) -> bool:
    """List missing segments where `segment_dir` has them (same table folder, same file name); True if any
    moved. Raises MissingSegments when some are in neither place."""
    moved, missing = [], []
    for table, path in con.execute("SELECT table_name, path FROM segments").fetchall():
        if os.path.exists(path):  # the common case first: pathlib for 2,190 paths took 0.04 s per call
            continue
        candidate = os.path.join(segment_dir, table, os.path.basename(path))
        if os.path.isfile(candidate):
            moved.append((candidate, path))
        else:
            missing.append(path)
    if missing:
        raise MissingSegments(f"{len(missing)} listed segment file(s) are missing, such as {sorted(missing)[0]}")
    for candidate, path in moved:
        con.execute("UPDATE segments SET path = ? WHERE path = ?", [candidate, path])
        con.execute("UPDATE segments_without SET path = ? WHERE path = ?", [candidate, path])
    return bool(moved)


def refresh_views(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...] = SEGMENTED) -> None:
    """(Re)define each table's view: its published segments not replaced by this run, then its staged rows."""
    for table in tables:
        con.execute(f"CREATE OR REPLACE VIEW main.{table} AS {_rows_sql(con, table)}")


def visible_segments_sql(table: str) -> str:
    """SELECT of the `segments` rows of `table` that this connection still sees: the published
    segments this run has not replaced (its view lists exactly these, then the staged rows)."""
    t = sql_literal(table)
    return (
        f"SELECT * FROM segments s WHERE table_name = {t} AND NOT EXISTS "
        f"(SELECT 1 FROM staged.replaced r WHERE r.table_name = {t} AND r.source_file = s.source_file)"
    )


def _rows_sql(con: duckdb.DuckDBPyConnection, table: str, source_file: str | None = None) -> str:
    """SELECT of `table`'s rows as this connection sees them (of one file, or of all): the published
    segments this run has not replaced, then the staged rows."""
    where = "" if source_file is None else f" WHERE source_file = {sql_literal(source_file)}"
    paths = [
        row[0]
        for row in con.execute(
            f"SELECT path FROM ({visible_segments_sql(table)}){where} ORDER BY source_file, path"
        ).fetchall()
    ]
    staged = f"SELECT * FROM staged.{table}{where}"
    if not paths:
        return staged
    return f"{parquet_rows_sql(con, table, paths)} UNION ALL {staged}"


def replace_file(con: duckdb.DuckDBPyConnection, table: str, source_file: str) -> str:
    """Drop `source_file`'s rows from `table` (as seen by this connection); the table to insert its new rows into."""
    if not is_segmented(con, table):
        con.execute(f"DELETE FROM {table} WHERE source_file = ?", [source_file])
        return table
    con.execute(f"DELETE FROM staged.{table} WHERE source_file = ?", [source_file])
    con.execute(
        "INSERT INTO staged.replaced SELECT $t, $f WHERE NOT EXISTS "
        "(SELECT 1 FROM staged.replaced WHERE table_name = $t AND source_file = $f)",
        {"t": table, "f": source_file},
    )
    refresh_views(con, (table,))
    return f"staged.{table}"


def file_rows(con: duckdb.DuckDBPyConnection, table: str, source_file: str) -> str:
    """A subquery of `table`'s rows of one source file that reads only that file's segments.

    A query on the view opens every segment it lists (0.09 s per query over 1,500 small files here);
    this opens the file's own, or none when this run replaced the file (its rows are all staged).
    Use it as `FROM {file_rows(...)} AS <table>`; the rows and columns are the view's."""
    if not is_segmented(con, table):
        return f"(SELECT * FROM {table} WHERE source_file = {sql_literal(source_file)})"
    return f"({_rows_sql(con, table, source_file)})"


def row_count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """`SELECT count(*) FROM table` from the catalog's row counts and the staged rows: no segment is opened."""
    if not is_segmented(con, table):
        return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    return con.execute(
        f"SELECT (SELECT coalesce(sum(row_count), 0) FROM ({visible_segments_sql(table)})) "
        f"+ (SELECT count(*) FROM staged.{table})"
    ).fetchall()[0][0]


def insert_target(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """The table an INSERT adding rows to `table` must name (its staged table in a segmented warehouse)."""
    return f"staged.{table}" if is_segmented(con, table) else table


def segment_name(table: str, source_file: str | None, run_id: str) -> str:
    """The segment file of one (table, source file) written by one run: unique, and stable for a retry."""
    name = "\0null" if source_file is None else source_file  # a legacy row without a file
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{table}/{run_id}-{digest}.parquet"


def referenced_paths(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every segment file the database's `segments` table lists (empty for a database without one)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'segments'"
    ).fetchall()[0][0]
    if not exists:
        return set()
    return {row[0] for row in con.execute("SELECT path FROM segments").fetchall()}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal(con: duckdb.DuckDBPyConnection, segment_dir: Path, run_id: str) -> None:
    """Write the staged rows as segments and record them (the publish retires what is no longer listed).

    Each (table, source file) staged or replaced gets: its replaced segments dropped from `segments`,
    and its staged rows (if any) written, in insertion order, to a new Parquet file that is flushed to
    disk before it is listed. Idempotent: a second call finds nothing staged.
    """
    con.execute("BEGIN")
    for table in SEGMENTED:
        files = [
            row[0]
            for row in con.execute(
                f"SELECT source_file FROM staged.replaced WHERE table_name = $t UNION "
                f"SELECT DISTINCT source_file FROM staged.{table} ORDER BY 1",
                {"t": table},
            ).fetchall()
        ]
        for source_file in files:
            params = {"t": table, "f": source_file}
            replaced = con.execute(
                "SELECT count(*) FROM staged.replaced WHERE table_name = $t AND source_file IS NOT DISTINCT FROM $f",
                params,
            ).fetchall()[0][0]
            if replaced:
                con.execute(
                    "DELETE FROM segments WHERE table_name = $t AND source_file IS NOT DISTINCT FROM $f", params
                )
            rows = con.execute(
                f"SELECT count(*) FROM staged.{table} WHERE source_file IS NOT DISTINCT FROM ?", [source_file]
            ).fetchall()
            if rows[0][0]:
                path = segment_dir / segment_name(table, source_file, run_id)
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(path.name + ".partial")
                con.execute(
                    f"COPY (SELECT * FROM staged.{table} WHERE source_file IS NOT DISTINCT FROM ?) "
                    f"TO {sql_literal(str(partial))} "
                    "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)",  # level 3: 20 % slower, 3 % smaller
                    [source_file],
                )
                _fsync(partial)
                os.replace(partial, path)
                _fsync(path.parent)
                con.execute(
                    "INSERT INTO segments VALUES ($t, $f, $p, $n, $run)",
                    {**params, "p": str(path), "n": rows[0][0], "run": run_id},
                )
        con.execute(f"DELETE FROM staged.{table}")
    con.execute("DELETE FROM staged.replaced")
    refresh_views(con)
    con.execute("COMMIT")
