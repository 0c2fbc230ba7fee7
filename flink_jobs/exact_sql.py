"""The Java-side (Flink SQL) half of both engines: lateness, late-event sink, exact partial sums.

Both engines share this plan, so they cannot disagree on lateness or on the arithmetic:

1. **Lateness**, exactly as the README's replay rule: the watermark before each event is the
   running max of `event_time_ms` over file order (an OVER window ordered by `source_row`, which
   batch mode allows) minus the out-of-orderness minus 1; the window start is floor-correct
   (`ts - ((ts % size) + size) % size`, SQL `%` keeps the dividend's sign); an event is late iff
   `start + size - 1 + allowed_lateness <= watermark`. Late events go to a JSON-lines
   filesystem sink (Java, no Python).

2. **Exact partial sums with built-in aggregates.** Every finite double `x` is `M * 2**q` with
   integers `M`, `q`. We pick `q` from a *bucket* of exponents so that all amounts of a window
   usually share one `q`: with `e0 = FLOOR(LOG2(|x|))` (off by at most one near powers of two,
   which the margins absorb) `q = max(32 * floor((e0 - 54) / 32), -1074)`. Then
   `q <= e - 53` (so `|x| * 2**-q` is an integer) and `|x| * 2**-q < 2**87`.
   `|x| * 2**-q` is computed as `(|x| * 2**h1) * 2**h2` with `h1 + h2 = -q`, `|h| <= 537`: both
   factors are exact powers of two (Java's `Math.pow` is exact when the result is representable)
   and no intermediate overflows or underflows, so the scaling is exact, also for subnormals
   (q = -1074) and for 1e308. The integer (< 2**87, exact as a double) is split into three
   limbs of 29 bits with FLOOR and exact subtractions, each carrying the sign of `x`, and cast
   to BIGINT. `SUM` of BIGINT limbs is exact (each limb < 2**29, so 2**34 rows cannot overflow)
   and order-independent. Zero (and -0.0) contributes nothing.

   `GROUP BY (key, window_start, q)` with `SUM(hi), SUM(mid), SUM(lo), COUNT(*)` therefore
   gives exact partials: `sum of the window's amounts = sum over q of
   (hi * 2**58 + mid * 2**29 + lo) * 2**q`. For realistic amounts (2**-10 .. 2**22 share one
   bucket) that is one partial per window.

3. The exact mean rounded once is finished from the partials in Python integer arithmetic
   (`int / int` is correctly rounded): by `finish_partials` in the client (sql engine), or by the
   user-defined AggregateFunction's add/merge inside Flink's window operator (datastream engine).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import groupby
from operator import itemgetter
from pathlib import Path

# Row layout of the partials: (key, window_start_ms, q, hi, mid, lo, txn_count)
LIMB_BITS = 29
MIN_EXPONENT = -1074  # 2**-1074 is the smallest subnormal: every finite double is a multiple of it
EXPONENT_BUCKET = 32


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def source_ddl(input_path: Path) -> str:
    return (
        "CREATE TEMPORARY TABLE staged_transactions ("
        " source_row BIGINT, `key` STRING, event_time_ms BIGINT, amount DOUBLE"
        ") WITH ('connector' = 'filesystem', 'format' = 'csv', "
        f"'path' = {sql_string(Path(input_path).as_uri())})"
    )


def json_sink_ddl(name: str, columns: str, directory: Path) -> str:
    return (
        f"CREATE TEMPORARY TABLE {name} ({columns}) WITH ("
        "'connector' = 'filesystem', 'format' = 'json', "
        "'json.encode.decimal-as-plain-number' = 'true', "
        f"'path' = {sql_string(Path(directory).as_uri())})"
    )


LATE_COLUMNS = "source_row BIGINT, `key` STRING, event_time_ms BIGINT, amount DOUBLE, watermark_ms BIGINT"
PARTIAL_COLUMNS = (
    "`key` STRING, window_start_ms BIGINT, q INT, hi BIGINT, mid BIGINT, lo BIGINT, txn_count BIGINT"
)


def classified_sql(window_size_ms: int, out_of_orderness_ms: int, allowed_lateness_ms: int) -> str:
    """Every staged event with its watermark, window start and lateness (the replay rule)."""
    size = f"CAST({int(window_size_ms)} AS BIGINT)"
    return f"""
SELECT source_row, `key`, event_time_ms, amount, watermark_ms, window_start_ms,
       COALESCE(window_start_ms + {size} - 1 + CAST({int(allowed_lateness_ms)} AS BIGINT) <= watermark_ms, FALSE)
         AS is_late
FROM (
  SELECT source_row, `key`, event_time_ms, amount,
         MAX(event_time_ms) OVER (ORDER BY source_row ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           - CAST({int(out_of_orderness_ms)} AS BIGINT) - 1 AS watermark_ms,
         event_time_ms - MOD(MOD(event_time_ms, {size}) + {size}, {size}) AS window_start_ms
  FROM staged_transactions
)"""


LATE_SQL = "SELECT source_row, `key`, event_time_ms, amount, watermark_ms FROM classified WHERE is_late"

# Exact decomposition of the on-time amounts into (q, limbs); see the module docstring.
_TWO = "CAST(2 AS DOUBLE)"
DECOMPOSED_SQL = f"""
SELECT `key`, window_start_ms, q,
       sgn * CAST(FLOOR(m / POWER({_TWO}, 58)) AS BIGINT) AS hi,
       sgn * CAST(FLOOR((m - FLOOR(m / POWER({_TWO}, 58)) * POWER({_TWO}, 58)) / POWER({_TWO}, 29)) AS BIGINT) AS mid,
       sgn * CAST(m - FLOOR(m / POWER({_TWO}, 29)) * POWER({_TWO}, 29) AS BIGINT) AS lo
FROM (
  SELECT `key`, window_start_ms, q, sgn,
         (a * POWER({_TWO}, CAST(FLOOR(-q / 2.0E0) AS DOUBLE)))
           * POWER({_TWO}, CAST(-q - FLOOR(-q / 2.0E0) AS DOUBLE)) AS m
  FROM (
    SELECT `key`, window_start_ms, ABS(amount) AS a,
           CASE WHEN amount < 0 THEN -1 ELSE 1 END AS sgn,
           CASE WHEN amount = 0 THEN {MIN_EXPONENT}
                ELSE CAST(GREATEST({EXPONENT_BUCKET} * FLOOR((FLOOR(LOG2(ABS(amount))) - 54) / {EXPONENT_BUCKET}.0E0),
                                   CAST({MIN_EXPONENT} AS DOUBLE)) AS INT)
           END AS q
    FROM classified WHERE NOT is_late
  )
)"""

PARTIALS_SQL = f"""
SELECT `key`, window_start_ms, q, SUM(hi) AS hi, SUM(mid) AS mid, SUM(lo) AS lo, COUNT(*) AS txn_count
FROM ({DECOMPOSED_SQL})
GROUP BY `key`, window_start_ms, q"""


def register_views(t_env, input_path: Path, window_size_ms: int, out_of_orderness_ms: int,
                   allowed_lateness_ms: int) -> None:  # fmt: skip
    """Source table + `classified` and `partials` views on `t_env`."""
    t_env.execute_sql(source_ddl(input_path))
    t_env.create_temporary_view(
        "classified", t_env.sql_query(classified_sql(window_size_ms, out_of_orderness_ms, allowed_lateness_ms))
    )
    t_env.create_temporary_view("partials", t_env.sql_query(PARTIALS_SQL))


# --- exact arithmetic on partials (Python) ----------------------------------------------------


def partial_value(q: int, hi: int, mid: int, lo: int) -> tuple[int, int]:
    """(integer, exponent) with sum of amounts = integer * 2**exponent."""
    return (hi << (2 * LIMB_BITS)) + (mid << LIMB_BITS) + lo, q


def scaled(q: int, hi: int, mid: int, lo: int) -> int:
    """The partial's sum as an exact integer in units of 2**-1074."""
    m, q = partial_value(q, hi, mid, lo)
    return m << (q - MIN_EXPONENT)


def exact_mean_of_partials(partials: Iterable[tuple[int, int, int, int, int]]) -> tuple[float, int]:
    """(exact mean rounded once, count) of partials (q, hi, mid, lo, count) of one window."""
    total = count = 0
    q_min = None
    for q, hi, mid, lo, n in partials:
        m, _ = partial_value(q, hi, mid, lo)
        if q_min is None:
            total, q_min = m, q
        elif q < q_min:  # rescale what we have to the smaller exponent (exact: a left shift)
            total, q_min = (total << (q_min - q)) + m, q
        else:
            total += m << (q - q_min)
        count += n
    return _rounded_mean(total, q_min, count), count


def _rounded_mean(total: int, q: int, count: int) -> float:
    """(total * 2**q) / count rounded once: CPython's int / int is correctly rounded."""
    return (total << q) / count if q >= 0 else total / (count << -q)


_PARTIAL_JSON_COLUMNS = {
    "key": "VARCHAR", "window_start_ms": "BIGINT", "q": "INTEGER",
    "hi": "BIGINT", "mid": "BIGINT", "lo": "BIGINT", "txn_count": "BIGINT",
}  # fmt: skip


def finish_partials(partial_dir: Path, windows_dir: Path, window_size_ms: int, batch_rows: int = 200_000) -> int:
    """Combine the JSON-lines partials into the windows output; returns the number of windows.

    DuckDB reads and sorts the partials (parsing them row by row in Python was the slow part) and
    hands them over in batches, so memory does not grow with the number of windows; the exact
    integer arithmetic stays in Python, one window at a time.
    """
    import duckdb  # only the sql engine's client needs it

    files = [str(p) for p in sorted(Path(partial_dir).rglob("*")) if p.is_file() and not p.name.startswith(".")]
    windows_dir = Path(windows_dir)
    windows_dir.mkdir(parents=True, exist_ok=True)
    if not files:
        return 0
    key_json: dict[str, str] = {}  # keys repeat: escape each once
    windows = 0
    with duckdb.connect() as con, open(windows_dir / "part-0.jsonl", "w", encoding="utf-8") as out:
        con.read_json(files, format="newline_delimited", columns=_PARTIAL_JSON_COLUMNS).create_view("partials")
        rows = con.execute("SELECT * FROM partials ORDER BY key, window_start_ms")
        pending: list[tuple] = []  # a window's partials may straddle two batches: carry the last one over
        while batch := rows.fetchmany(batch_rows):
            pending += batch
            last = pending[-1][:2]
            ready = [row for row in pending if row[:2] != last]
            pending = pending[len(ready) :]
            windows += _write_windows(out, ready, window_size_ms, key_json)
        windows += _write_windows(out, pending, window_size_ms, key_json)
    return windows


def _write_windows(out, rows: list[tuple], window_size_ms: int, key_json: dict[str, str]) -> int:
    """Write the windows of `rows` (partials sorted by key and window start, whole windows only)."""
    lines = []
    for (key, start), partials in groupby(rows, key=itemgetter(0, 1)):
        avg, count = exact_mean_of_partials(p[2:] for p in partials)
        encoded = key_json.get(key)
        if encoded is None:
            encoded = key_json[key] = json.dumps(key)
        # repr() is the shortest text that reads back as the same double (valid JSON when finite)
        lines.append(
            f'{{"key": {encoded}, "window_start_ms": {start}, "window_end_ms": {start + window_size_ms}, '
            f'"avg_amount": {avg!r}, "txn_count": {count}}}\n'
        )
    out.writelines(lines)
    return len(lines)


def add_jsonl_suffix(directory: Path) -> None:
    """Flink's SQL filesystem sink names files `part-<uuid>-<n>`; the loader reads `*.jsonl`."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in list(directory.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".jsonl":
            path.rename(path.with_name(path.name + ".jsonl"))
