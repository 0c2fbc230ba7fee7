"""The window job's files in and out of DuckDB: the staged input it reads and the output it writes.

Staged input: one line per valid transaction of the file, in file order,
`source_row,event_time_ms,amount,hex(key)`. The amount is the DECIMAL(18,4) text; the key travels
as the hex of its UTF-8 bytes, so keys may hold commas, quotes or newlines and the Java side
splits a line on its first three commas (flink_jobs/java/txn/replay/ReplayOperators.java).

Output: `windows/*.csv` with `hex(key),window_start_ms,window_end_ms,txn_count,sum_amount,
min_amount,max_amount` and `late/*.csv` with `source_row,event_time_ms,amount,watermark_ms,hex(key)`.
Loading derives `avg_amount = sum_amount::DOUBLE / txn_count` here and nowhere else, so the mean
cannot differ between runs or parallelisms: the sum is exact, and one division rounds once.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from warehouse import schema, segments
from warehouse.windows import WindowSpec

# The output of the job, by the part-file suffix flink_jobs.output uses (no PyFlink import here).
_OUTPUT_GLOB = "*.csv"


def stage_input(con: duckdb.DuckDBPyConnection, source_file: str, path: Path) -> int:
    """Write the file's valid transactions as the job's staged input; returns the row count."""
    transactions = segments.file_rows(con, "transactions", source_file)  # not every file's segments
    con.execute(
        f"COPY (SELECT source_row, event_time_ms, amount, hex(key) FROM {transactions} AS t "
        f"WHERE source_file = $f ORDER BY source_row) TO {_quote(path)} (FORMAT csv, HEADER false)",
        {"f": source_file},
    )
    return schema.fetch_one(con, f"SELECT count(*) FROM {transactions} AS t WHERE source_file = ?", [source_file])[0]


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def output_files(directory: Path) -> list[str]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(str(p) for p in directory.rglob(_OUTPUT_GLOB) if not p.name.startswith("."))


def read_csv_sql(files: list[str], columns: dict[str, str]) -> str:
    listed = ", ".join(_quote(Path(f)) for f in files)
    cols = ", ".join(f"'{name}': '{sql_type}'" for name, sql_type in columns.items())
    return f"read_csv([{listed}], header=false, auto_detect=false, delim=',', quote='', escape='', columns={{{cols}}})"


WINDOW_COLUMNS = {
    "hex_key": "VARCHAR", "window_start_ms": "BIGINT", "window_end_ms": "BIGINT", "txn_count": "BIGINT",
    "sum_amount": schema.SUM_TYPE, "min_amount": schema.AMOUNT_TYPE, "max_amount": schema.AMOUNT_TYPE,
}  # fmt: skip
LATE_COLUMNS = {
    "source_row": "BIGINT", "event_time_ms": "BIGINT", "amount": schema.AMOUNT_TYPE, "watermark_ms": "BIGINT",
    "hex_key": "VARCHAR",
}  # fmt: skip


def late_window_sql(spec: WindowSpec, ts: str) -> tuple[str, str]:
    """DuckDB SQL for (start, end) of the window a late event is reported with: the latest window
    it belongs to (tumbling: its window; sliding: the one with the largest start; session: its own
    window [ts, ts + gap))."""
    if spec.kind == "session":
        return ts, f"{ts} + {int(spec.gap_ms)}"
    step = int(spec.size_ms if spec.kind == "tumbling" else spec.slide_ms)
    start = f"({ts} - ((({ts} % {step}) + {step}) % {step}))"  # floor, also before 1970
    return start, f"{start} + {int(spec.size_ms)}"


def load_output(con: duckdb.DuckDBPyConnection, output_dir: Path, source_file: str, spec: WindowSpec) -> None:
    """Insert the job's output into window_averages and late_events (inside the caller's transaction)."""
    output_dir = Path(output_dir)
    window_files = output_files(output_dir / "windows")
    if window_files:
        con.execute(
            f"INSERT INTO {segments.insert_target(con, 'window_averages')} SELECT $f, decode(unhex(hex_key)), "
            "epoch_ms(window_start_ms)::TIMESTAMPTZ, epoch_ms(window_end_ms)::TIMESTAMPTZ, "
            "sum_amount::DOUBLE / txn_count, txn_count, sum_amount, min_amount, max_amount, "
            f"window_start_ms, window_end_ms, true FROM {read_csv_sql(window_files, WINDOW_COLUMNS)} "
            "ORDER BY 2, window_start_ms, window_end_ms",
            {"f": source_file},
        )
    late_files = output_files(output_dir / "late")
    if late_files:
        start, end = late_window_sql(spec, "event_time_ms")
        con.execute(
            f"INSERT INTO {segments.insert_target(con, 'late_events')} SELECT $f, source_row, decode(unhex(hex_key)), "
            "epoch_ms(event_time_ms)::TIMESTAMPTZ, amount, event_time_ms, watermark_ms, "
            f"epoch_ms({start})::TIMESTAMPTZ, epoch_ms({end})::TIMESTAMPTZ "
            f"FROM {read_csv_sql(late_files, LATE_COLUMNS)} ORDER BY source_row",
            {"f": source_file},
        )
