"""Data-quality checks on the warehouse tables, as plain functions (no Dagster).

Each check returns a :class:`CheckOutcome`; the Dagster assets turn it into an ``AssetCheckResult``
with the severity of the check. Functions taking a connection only read from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import duckdb

from warehouse import schema
from warehouse.replay import window_start

EXAMPLES = 5


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str | None = None
    metadata: dict[str, object] = field(default_factory=dict)


# --- contract ----------------------------------------------------------------------------------


def contract_check(con: duckdb.DuckDBPyConnection, table: str) -> CheckOutcome:
    """The table's columns and types equal the data contract (warehouse.schema.TABLES)."""
    problems = schema.contract_mismatches(con, table)
    return CheckOutcome(
        passed=not problems,
        description=None if not problems else "; ".join(problems),
        metadata={"columns_expected": len(schema.TABLES[table]), "mismatches": len(problems)},
    )


# --- window alignment and bounds ---------------------------------------------------------------

_ALIGNMENT_SQL = f"""
WITH on_time AS (
    -- on-time rows bucketed into windows of the configured size (floor, also before 1970); an
    -- equality join on the bucket is ~150x faster than a range join at 1M rows, and a window of
    -- another size finds no matching bucket, so it is still reported (out_of_bounds)
    SELECT t.source_file, t.key,
           {schema.window_start_sql("t.event_time_ms")} AS window_start_ms,
           min(t.amount) AS min_amount, max(t.amount) AS max_amount
    FROM transactions t ANTI JOIN late_events l USING (source_file, source_row)
    GROUP BY ALL
),
per_window AS (
    SELECT w.source_file, w.key, w.window_start_ms, w.window_end_ms, w.avg_amount,
           epoch_ms(w.window_start) AS start_from_ts, epoch_ms(w.window_end) AS end_from_ts,
           o.min_amount, o.max_amount
    FROM window_averages w LEFT JOIN on_time o USING (source_file, key, window_start_ms)
)
SELECT source_file, key, window_start_ms, window_end_ms, avg_amount, min_amount, max_amount,
       (((window_start_ms % $size) + $size) % $size) <> 0 AS misaligned,
       window_end_ms - window_start_ms <> $size AS wrong_length,
       start_from_ts <> window_start_ms OR end_from_ts <> window_end_ms AS timestamps_disagree,
       min_amount IS NULL OR NOT (min_amount <= avg_amount AND avg_amount <= max_amount) AS out_of_bounds
FROM per_window
"""


def window_alignment_check(con: duckdb.DuckDBPyConnection, window_size_ms: int) -> CheckOutcome:
    """Every window of the whole history is aligned to the configured size and within its rows' range.

    * ``window_start_ms`` is a multiple of the window size (floor alignment to the epoch);
    * ``window_end_ms - window_start_ms`` equals the window size;
    * the TIMESTAMPTZ columns agree with the ``*_ms`` columns;
    * ``min(amount) <= avg_amount <= max(amount)`` over the window's on-time transactions.

    It covers all files in the warehouse, not only the one being replayed: the anomaly thresholds
    are computed over all history, so a history that mixes window sizes must not be published.
    """
    # Evaluated once into a temporary table, then summarized and sampled from it.
    con.execute(f"CREATE OR REPLACE TEMP TABLE window_alignment AS {_ALIGNMENT_SQL}", {"size": window_size_ms})
    try:
        rows = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE misaligned), count(*) FILTER (WHERE wrong_length), "
            "count(*) FILTER (WHERE timestamps_disagree), count(*) FILTER (WHERE out_of_bounds) "
            "FROM window_alignment"
        ).fetchall()
        checked, misaligned, wrong_length, disagree, out_of_bounds = rows[0]
        bad = con.execute(
            "SELECT source_file, key, window_start_ms, window_end_ms, avg_amount, min_amount, max_amount "
            "FROM window_alignment WHERE misaligned OR wrong_length OR timestamps_disagree OR out_of_bounds "
            f"ORDER BY source_file, key, window_start_ms LIMIT {EXAMPLES}"
        ).fetchall()
    finally:
        con.execute("DROP TABLE IF EXISTS window_alignment")
    passed = misaligned == wrong_length == disagree == out_of_bounds == 0
    description = None
    if not passed:
        parts = []
        if misaligned:
            parts.append(f"{misaligned} window(s) do not start on a multiple of {window_size_ms} ms")
        if wrong_length:
            parts.append(f"{wrong_length} window(s) are not {window_size_ms} ms long")
        if disagree:
            parts.append(f"{disagree} window(s) have timestamps that disagree with their *_ms columns")
        if out_of_bounds:
            parts.append(f"{out_of_bounds} window average(s) lie outside min..max of their transactions")
        description = "; ".join(parts) + " (a history replayed with another window size needs its own warehouse)"
    return CheckOutcome(
        passed=passed,
        description=description,
        metadata={
            "windows_checked": int(checked),
            "window_size_ms": int(window_size_ms),
            "misaligned": int(misaligned),
            "wrong_length": int(wrong_length),
            "timestamps_disagree": int(disagree),
            "out_of_bounds": int(out_of_bounds),
            "examples": [
                {
                    "source_file": r[0],
                    "key": r[1],
                    "window_start_ms": r[2],
                    "window_end_ms": r[3],
                    "avg_amount": r[4],
                    "min_amount": r[5],
                    "max_amount": r[6],
                }
                for r in bad
            ],
        },
    )


# --- ratios ------------------------------------------------------------------------------------


def ratio_check(count: int, total: int, limit: float, what: str, of: str) -> CheckOutcome:
    """Passes when count / total <= limit (an empty total passes)."""
    ratio = count / total if total else 0.0
    passed = ratio <= limit
    return CheckOutcome(
        passed=passed,
        description=None
        if passed
        else f"{count:,} of {total:,} {of} are {what} ({ratio:.2%}), above the limit of {limit:.2%}",
        metadata={what.replace(" ", "_"): int(count), of.replace(" ", "_"): int(total),
                  "ratio": round(ratio, 6), "limit": float(limit)},  # fmt: skip
    )


def recommended_out_of_orderness(
    late: Iterable[tuple[int, int]],
    total_events: int,
    *,
    window_size_ms: int,
    out_of_orderness_ms: int,
    allowed_lateness_ms: int = 0,
    on_time_target: float = 0.99,
) -> int:
    """The smallest out-of-orderness that would have made >= on_time_target of the events on time.

    ``late`` holds ``(event_time_ms, watermark_ms)`` of the late events. The watermark an event sees
    is ``max(previous event times) - out_of_orderness - 1`` (late events advance the max too), so
    raising the out-of-orderness by ``d`` lowers every watermark by exactly ``d`` and changes nothing
    else. A late event becomes on time once ``window_end - 1 + allowed_lateness > watermark - d``,
    i.e. ``d >= watermark - window_end + 2 - allowed_lateness``.
    """
    if not 0 < on_time_target <= 1:
        raise ValueError(f"on_time_target must be in (0, 1], got {on_time_target}")
    size = window_size_ms
    needs = sorted(
        (
            watermark - (window_start(event_time, size) + size) + 2 - allowed_lateness_ms
            for event_time, watermark in late
        ),
        reverse=True,
    )
    # Events that may stay late; float slack so that 0.99 * 100 counts as 99.
    may_stay_late = max(0, math.floor((1 - on_time_target) * total_events + 1e-9))
    if may_stay_late >= len(needs):
        return out_of_orderness_ms
    return out_of_orderness_ms + max(0, needs[may_stay_late])


def late_ratio_check(
    late: Sequence[tuple[int, int]],
    total_events: int,
    *,
    limit: float,
    window_size_ms: int,
    out_of_orderness_ms: int,
    allowed_lateness_ms: int = 0,
    on_time_target: float = 0.99,
) -> CheckOutcome:
    """Late events / transactions <= limit; the description recommends an out-of-orderness if not."""
    base = ratio_check(len(late), total_events, limit, "late events", "transactions")
    recommended = recommended_out_of_orderness(
        late,
        total_events,
        window_size_ms=window_size_ms,
        out_of_orderness_ms=out_of_orderness_ms,
        allowed_lateness_ms=allowed_lateness_ms,
        on_time_target=on_time_target,
    )
    lag = max((watermark - event_time for event_time, watermark in late), default=0)
    metadata = {
        **base.metadata,
        "watermark_lag_ms": int(lag),
        "out_of_orderness_ms": int(out_of_orderness_ms),
        "recommended_out_of_orderness_ms": int(recommended),
        "on_time_target": float(on_time_target),
    }
    description = base.description
    if not base.passed:
        description += (
            f". An out-of-orderness of {recommended} ms (TXN_OUT_OF_ORDERNESS_MS, now {out_of_orderness_ms}) "
            f"would have put >= {on_time_target:.0%} of the events on time"
        )
    return CheckOutcome(passed=base.passed, description=description, metadata=metadata)
