"""Loads the window job's custom-aggregate output (`<output>/custom/*.csv`) into `custom_aggregates`.

The job (flink_jobs/custom_aggregates.py) writes one line per window and aggregate,
`aggregate,hex(key),window_start_ms,window_end_ms,value`: the aggregate's import path (it has no
comma: TXN_AGGREGATE is validated), the key as the hex of its UTF-8 bytes (keys may hold commas,
quotes or newlines), and `value` as Python's repr of the double, so it loads bit-exactly; an empty
value is NULL (get_result returned None), and nan/inf load as such.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from warehouse import schema, segments

TABLE = "custom_aggregates"
COLUMNS = {
    "aggregate": "VARCHAR", "hex_key": "VARCHAR", "window_start_ms": "BIGINT", "window_end_ms": "BIGINT",
    "value": "DOUBLE",
}  # fmt: skip
_OUTPUT_GLOB = "*.csv"  # flink_jobs.output.OUTPUT_SUFFIX (no PyFlink import here)


def output_files(output_dir: Path) -> list[str]:
    """The job's finished custom-aggregate part files (in-progress files start with a dot)."""
    directory = Path(output_dir) / "custom"
    if not directory.is_dir():
        return []
    return sorted(str(p) for p in directory.rglob(_OUTPUT_GLOB) if not p.name.startswith("."))


def load_output(con: duckdb.DuckDBPyConnection, output_dir: Path, source_file: str) -> int:
    """Insert the job's custom-aggregate rows for `source_file` (inside the caller's transaction;
    the caller deletes the file's previous rows). Returns the number of rows inserted."""
    files = output_files(output_dir)
    if not files:
        return 0
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    columns = ", ".join(f"'{name}': '{sql_type}'" for name, sql_type in COLUMNS.items())
    before = schema.fetch_one(con, f"SELECT count(*) FROM {TABLE} WHERE source_file = ?", [source_file])[0]
    con.execute(
        f"INSERT INTO {segments.insert_target(con, TABLE)} SELECT $f, decode(unhex(hex_key)), epoch_ms(window_start_ms)::TIMESTAMPTZ, "
        "epoch_ms(window_end_ms)::TIMESTAMPTZ, window_start_ms, window_end_ms, aggregate, value, true "
        f"FROM read_csv([{listed}], header=false, auto_detect=false, delim=',', quote='', escape='', "
        f"columns={{{columns}}}) ORDER BY aggregate, 2, window_start_ms, window_end_ms",
        {"f": source_file},
    )
    after = schema.fetch_one(con, f"SELECT count(*) FROM {TABLE} WHERE source_file = ?", [source_file])[0]
    return after - before
