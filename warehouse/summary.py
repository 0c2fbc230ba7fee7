"""Print a short summary of the published warehouse: `python -m warehouse.summary [--warehouse PATH]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from warehouse.store import WarehouseStore
from warehouse.time_outliers import REASON_PREFIX

DEFAULT_WAREHOUSE = Path(__file__).resolve().parents[1] / "data" / "warehouse.duckdb"

PREVIEW_ROWS = 5  # quarantined rows shown per file

EXAMPLE_QUERY = (
    "SELECT key, window_start, window_end, avg_amount, txn_count\n"
    "FROM window_averages ORDER BY avg_amount DESC LIMIT 5;"
)


def summarize(warehouse: Path) -> str:
    store = WarehouseStore(warehouse)
    with store.connect_published() as con:
        per_file = con.execute(
            "SELECT f.source_file, "
            " (SELECT count(*) FROM transactions t WHERE t.source_file = f.source_file), "
            " (SELECT count(*) FROM rejected_rows r WHERE r.source_file = f.source_file), "
            " (SELECT count(*) FROM window_averages w WHERE w.source_file = f.source_file), "
            " (SELECT count(*) FROM late_events l WHERE l.source_file = f.source_file) "
            "FROM (SELECT source_file FROM transactions UNION SELECT source_file FROM rejected_rows) f "
            "ORDER BY 1"
        ).fetchall()
        implausible = con.execute(
            "SELECT source_file, count(*) OVER (PARTITION BY source_file), source_row, line, left(raw, 60), "
            "split_part(reason, ' ahead of the stream', 1) FROM rejected_rows WHERE starts_with(reason, ?) "
            "QUALIFY row_number() OVER (PARTITION BY source_file ORDER BY source_row) <= ? ORDER BY 1, 3",
            [REASON_PREFIX, PREVIEW_ROWS],
        ).fetchall()
        keys, anomalous = con.execute(
            "SELECT count(*), coalesce(sum(anomalous_windows), 0) FROM anomaly_thresholds"
        ).fetchall()[0]
    lines = [f"Warehouse: {store.path}"]
    for source_file, n_valid, n_rejected, n_windows, n_late in per_file:
        lines.append(
            f"  {source_file}: rows in {n_valid + n_rejected:,} | transactions {n_valid:,} | "
            f"rejected {n_rejected:,} | windows {n_windows:,} | late events {n_late:,}"
        )
    if not per_file:
        lines.append("  (no source files replayed yet)")
    shown = set()
    for source_file, count, source_row, line, raw, why in implausible:
        if source_file not in shown:
            shown.add(source_file)
            lines.append(
                f"  {source_file}: {count:,} {'row' if count == 1 else 'rows'} quarantined for an implausible "
                f"event time (rejected_rows, TXN_MAX_TIME_JUMP_MS){', the first' if count > PREVIEW_ROWS else ''}:"
            )
        lines.append(f"    row {source_row:,} (line {line:,}): {raw} -> {why.removeprefix(REASON_PREFIX + ': ')}")
    lines.append(f"  anomaly thresholds: {keys:,} keys, {anomalous:,} windows above threshold")
    lines.append("Query it (read-only, so scheduled runs are never blocked):")
    query = EXAMPLE_QUERY.replace("\n", " ")
    lines.append(f'  duckdb -readonly {store.path} "{query}"')
    lines.append(
        f"  .venv/bin/python -c \"import duckdb; duckdb.connect('{store.path}', read_only=True)"
        f".sql('{query.rstrip(';')}').show()\""
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warehouse.summary", description=__doc__)
    parser.add_argument(
        "--warehouse",
        type=Path,
        default=Path(os.environ.get("TXN_WAREHOUSE") or DEFAULT_WAREHOUSE),
        help="DuckDB file (default: $TXN_WAREHOUSE or data/warehouse.duckdb)",
    )
    args = parser.parse_args(argv)
    try:
        print(summarize(args.warehouse))
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
