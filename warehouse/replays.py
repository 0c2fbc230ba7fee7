"""One window config per warehouse: the `replays` table says which config produced the rows.

The anomaly thresholds and every cross-file comparison assume that all files of a warehouse were
replayed with the same windows, so a run whose window config differs from the one the warehouse
holds is refused before it writes anything (`config_conflict`).
"""

from __future__ import annotations

import duckdb

from warehouse.windows import WindowSpec

_SPEC_COLUMNS = "window_kind, window_size_ms, window_slide_ms, session_gap_ms, out_of_orderness_ms, allowed_lateness_ms"


def recorded_specs(con: duckdb.DuckDBPyConnection) -> list[WindowSpec]:
    """The distinct window configs recorded in `replays` ([] for a warehouse without that table)."""
    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'replays'").fetchall()[0][0]
    if not exists:
        return []
    rows = con.execute(f"SELECT DISTINCT {_SPEC_COLUMNS} FROM replays ORDER BY ALL").fetchall()
    return [
        WindowSpec(kind=k, size_ms=size, slide_ms=slide, gap_ms=gap, out_of_orderness_ms=ooo, allowed_lateness_ms=late)
        for k, size, slide, gap, ooo, late in rows
    ]


def config_conflict(con: duckdb.DuckDBPyConnection, spec: WindowSpec, warehouse: str) -> str | None:
    """One sentence when the warehouse holds rows of another window config, else None."""
    others = [recorded for recorded in recorded_specs(con) if recorded != spec]
    if not others:
        return None
    held = "; ".join(recorded.describe() for recorded in others)
    return (
        f"The warehouse {warehouse} holds windows replayed with {held}, but this run is configured for "
        f"{spec.describe()}; a warehouse holds one window config, so set TXN_WAREHOUSE to another file for "
        "this config (or set the TXN_WINDOW_* / TXN_SESSION_GAP_MS / TXN_OUT_OF_ORDERNESS_MS / "
        "TXN_ALLOWED_LATENESS_MS variables back to the warehouse's config)."
    )
