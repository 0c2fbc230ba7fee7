"""Independent recomputation of the windows and late events in DuckDB, and the comparison with
what the Flink job produced (the `matches_independent_replay` check).

It shares no code with the Flink job or the plain-Python reference (:mod:`warehouse.replay`); property
tests check that all three agree. It replays one source file's `transactions` in ascending `source_row`;
the watermark before a row is the running max of the previous rows' `event_time_ms` - out-of-orderness - 1
(NULL, never late, for the first row). The comparison is exact: count, DECIMAL sum, min, max, the derived
`avg_amount` bit for bit (-0.0 is not 0.0), and every column of the late events.

* Tumbling and sliding: each row is expanded into its windows (`unnest(range(...))` over the slide steps,
  floor-aligned also before 1970); a (row, window) pair is late iff `end - 1 + allowed_lateness <=
  watermark`, a row whose pairs are all late is a late event, and windows group the other pairs.
* Sessions depend on the order of events, which set-based SQL cannot express: DuckDB computes each row's
  watermark and orders the rows per key; one linear pass per key (`_assign_sessions`, numpy in and out)
  assigns each row to a session or marks it late, checking closing at the key's next event (equivalent to
  the global rule, as the watermark never decreases); DuckDB groups by the session ids.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import numpy as np

from warehouse import schema, segments
from warehouse.flink_output import late_window_sql
from warehouse.windows import WindowSpec

__all__ = [
    "OverlappedRecomputation",
    "build_expected",
    "build_expected_stream",
    "compare_tables",
    "compare_with_expected",
    "expected_late_events",
    "expected_windows",
]

_MAX_EXAMPLES = 5

# {transactions}: the file's rows (`segments.file_rows`), so that no other file's segment is opened
_WATERMARKED = """
SELECT source_row, key, event_time_ms, amount,
       max(event_time_ms) OVER (ORDER BY source_row ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           - CAST($ooo AS BIGINT) - 1 AS watermark_ms
FROM {transactions} AS transactions WHERE source_file = $source_file
"""


def _windows_per_event(spec: WindowSpec) -> int:
    """How many windows of an aligned kind an event belongs to."""
    step = spec.size_ms if spec.kind == "tumbling" else spec.slide_ms
    return -(-spec.size_ms // step)


def _aligned_pairs_sql(spec: WindowSpec, watermarked: str) -> str:
    """(row, window, late) pairs of tumbling or sliding windows (`watermarked`: the file's `_WATERMARKED` rows)."""
    step = spec.size_ms if spec.kind == "tumbling" else spec.slide_ms
    per_event = _windows_per_event(spec)
    return f"""
SELECT *, coalesce(window_end_ms - 1 + CAST($lateness AS BIGINT) <= watermark_ms, false) AS late
FROM (
    SELECT w.*, last_start - k * CAST({step} AS BIGINT) AS window_start_ms,
           last_start - k * CAST({step} AS BIGINT) + CAST({spec.size_ms} AS BIGINT) AS window_end_ms
    FROM (SELECT *, event_time_ms - (((event_time_ms % {step}) + {step}) % {step}) AS last_start
          FROM ({watermarked})) w,
         (SELECT unnest(range({per_event})) AS k) offsets
)
WHERE window_start_ms > event_time_ms - CAST({spec.size_ms} AS BIGINT)
"""


def _assign_sessions(keys: np.ndarray, ts: np.ndarray, watermark: np.ndarray, gap: int, lateness: int) -> np.ndarray:
    """Session id per row (rows sorted by key, then arrival), -1 for a late row.

    `watermark` uses the minimum int64 for "no watermark yet". Open sessions of the current key are
    kept as [start, end, id]; ids of merged sessions are redirected to the surviving one.
    """
    n = len(ts)
    session = np.full(n, -1, dtype=np.int64)
    parent: list[int] = []  # session id -> id it was merged into (itself if alive)
    open_sessions: list[list[int]] = []
    previous_key = None
    for i in range(n):
        key, t, w = keys[i], int(ts[i]), int(watermark[i])
        if key != previous_key:
            open_sessions, previous_key = [], key
        # a session is closed once its last millisecond plus the lateness is behind the watermark
        open_sessions = [s for s in open_sessions if s[1] - 1 + lateness > w]
        start, end = t, t + gap
        merged = [s for s in open_sessions if s[0] <= end and start <= s[1]]
        if not merged and end - 1 + lateness <= w:
            continue  # late: its own window is late and it joins no open session
        new_id = len(parent)
        parent.append(new_id)
        for s in merged:
            start, end = min(start, s[0]), max(end, s[1])
            parent[s[2]] = new_id
            open_sessions.remove(s)
        open_sessions.append([start, end, new_id])
        session[i] = new_id
    roots = np.asarray(parent, dtype=np.int64)
    for _ in range(len(parent)):  # follow redirections to the surviving session
        redirected = roots[roots]
        if np.array_equal(redirected, roots):
            break
        roots = redirected
    return np.where(session >= 0, roots[np.maximum(session, 0)] if len(parent) else session, -1)


def _session_rows(con: duckdb.DuckDBPyConnection, spec: WindowSpec, watermarked: str, params: dict[str, Any]) -> None:
    """Temp table `_session_rows(source_row, key, event_time_ms, amount, watermark_ms, session_id)`
    (`watermarked`: the file's `_WATERMARKED` rows)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _watermarked AS {watermarked}",
                {k: v for k, v in params.items() if f"${k}" in watermarked})  # fmt: skip
    arrays = con.execute(
        "SELECT key, event_time_ms, coalesce(watermark_ms, -9223372036854775808) AS w, source_row "
        "FROM _watermarked ORDER BY key, source_row"
    ).fetchnumpy()
    ids = _assign_sessions(
        np.asarray(arrays["key"], dtype=object),
        np.asarray(arrays["event_time_ms"], dtype=np.int64),
        np.asarray(arrays["w"], dtype=np.int64),
        spec.gap_ms,
        spec.allowed_lateness_ms,
    )
    assignment = {"source_row": np.asarray(arrays["source_row"], dtype=np.int64), "session_id": ids}
    con.register("_session_assignment", assignment)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _session_rows AS SELECT w.*, a.session_id "
            "FROM _watermarked w JOIN _session_assignment a USING (source_row)"
        )
    finally:
        con.unregister("_session_assignment")
        con.execute("DROP TABLE IF EXISTS _watermarked")


def build_expected(con: duckdb.DuckDBPyConnection, spec: WindowSpec, source_file: str) -> None:
    """Temp tables `_expected_windows` and `_expected_late` for one source file."""
    spec.validate()
    params = {"source_file": source_file, "ooo": spec.out_of_orderness_ms, "lateness": spec.allowed_lateness_ms}
    watermarked = _WATERMARKED.format(transactions=segments.file_rows(con, "transactions", source_file))
    _build(con, spec, watermarked, params)


# The stream's events (`_stream_events`, warehouse/stream.py): kept events replayed again (seq < 0: their
# windows are open before the run, or they may be), then the run's files, in stream order. The watermark
# before an event is the running max of everything before it and of the stream before the first of them
# ($start_max), minus the out-of-orderness, minus 1.
_STREAM_WATERMARKED = """
SELECT seq AS source_row, key, event_time_ms, amount,
       greatest(max(event_time_ms) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                CAST($start_max AS BIGINT)) - CAST($ooo AS BIGINT) - 1 AS watermark_ms
FROM _stream_events
"""


def build_expected_stream(con: duckdb.DuckDBPyConnection, spec: WindowSpec, start_max: int | None,
                          closed_up_to: int | None) -> None:  # fmt: skip
    """Temp tables `_expected_windows` and `_expected_late` for a stream run, from the temp table
    `_stream_events(seq, key, event_time_ms, amount)` and the stream's maximum before its first
    event (`start_max`): every window the run fires or leaves open, i.e. whose cleanup time is after
    `closed_up_to` (the stream's watermark before the run; None: its start), and the late events of the
    run's own events (seq >= 0, kept as their source_row)."""
    spec.validate()
    params = {"ooo": spec.out_of_orderness_ms, "lateness": spec.allowed_lateness_ms, "start_max": start_max}
    _build(con, spec, _STREAM_WATERMARKED, params)
    con.execute("DELETE FROM _expected_late WHERE source_row < 0")  # kept events were judged by their own run
    if closed_up_to is not None:
        con.execute(
            "DELETE FROM _expected_windows WHERE window_end_ms - 1 + CAST($lateness AS BIGINT) <= CAST($w AS BIGINT)",
            {"lateness": spec.allowed_lateness_ms, "w": closed_up_to},
        )


def _build(con: duckdb.DuckDBPyConnection, spec: WindowSpec, watermarked: str, params: dict[str, Any]) -> None:
    late_start, late_end = late_window_sql(spec, "event_time_ms")
    window_columns = (
        "count(*) AS txn_count, sum(amount) AS sum_amount, min(amount) AS min_amount, max(amount) AS max_amount"
    )
    if spec.kind == "session":
        _session_rows(con, spec, watermarked, params)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _expected_windows AS SELECT key, min(event_time_ms) AS window_start_ms, "
            f"max(event_time_ms) + {int(spec.gap_ms)} AS window_end_ms, {window_columns} "
            "FROM _session_rows WHERE session_id >= 0 GROUP BY key, session_id"
        )
        late_rows = "SELECT * FROM _session_rows WHERE session_id < 0"
    elif _windows_per_event(spec) == 1:
        _one_window_per_event(con, spec, watermarked, params)
        late_rows = "SELECT source_row, key, event_time_ms, amount, watermark_ms FROM _late_pairs"
    else:
        pairs = _aligned_pairs_sql(spec, watermarked)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _pairs AS {pairs}",
                    {k: v for k, v in params.items() if f"${k}" in pairs})  # fmt: skip
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _expected_windows AS SELECT key, window_start_ms, window_end_ms, "
            f"{window_columns} FROM _pairs WHERE NOT late GROUP BY key, window_start_ms, window_end_ms"
        )
        late_rows = (
            "SELECT source_row, any_value(key) AS key, any_value(event_time_ms) AS event_time_ms, "
            "any_value(amount) AS amount, any_value(watermark_ms) AS watermark_ms "
            "FROM _pairs GROUP BY source_row HAVING bool_and(late)"
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _expected_late AS SELECT source_row, key, event_time_ms, amount, "
        f"watermark_ms, {late_start} AS window_start_ms, {late_end} AS window_end_ms FROM ({late_rows}) "
    )
    for table in ("_pairs", "_late_pairs", "_session_rows"):
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _one_window_per_event(con: duckdb.DuckDBPyConnection, spec: WindowSpec, watermarked: str,
                          params: dict[str, Any]) -> None:  # fmt: skip
    """`_expected_windows` and the temp table `_late_pairs` when every event has one window (tumbling,
    or sliding with the slide equal to the size), in one pass over the watermarked events: each window
    carries its late events as a list until they are unnested. Sliding windows need the (event, window)
    pairs materialized, since an event is late only if it is late for all its windows; here that
    table (30M rows: more than DuckDB's 2 GB, so it spilled) is not needed."""
    pairs = _aligned_pairs_sql(spec, watermarked)
    on_time = ", ".join(f"{f} FILTER (WHERE NOT late) AS {name}" for f, name in (
        ("count(*)", "txn_count"), ("sum(amount)", "sum_amount"), ("min(amount)", "min_amount"),
        ("max(amount)", "max_amount")))  # fmt: skip
    late = "{'source_row': source_row, 'event_time_ms': event_time_ms, 'amount': amount, 'watermark_ms': watermark_ms}"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _expected_windows AS SELECT key, window_start_ms, window_end_ms, {on_time}, "
        f"list({late}) FILTER (WHERE late) AS _late FROM ({pairs}) GROUP BY key, window_start_ms, window_end_ms",
        {k: v for k, v in params.items() if f"${k}" in pairs},
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _late_pairs AS SELECT key, unnest(_late, recursive := true) "
        "FROM _expected_windows WHERE _late IS NOT NULL"
    )
    con.execute("DELETE FROM _expected_windows WHERE txn_count = 0")  # windows whose every event was late
    con.execute("ALTER TABLE _expected_windows DROP COLUMN _late")


def _drop_expected(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE IF EXISTS _expected_windows")
    con.execute("DROP TABLE IF EXISTS _expected_late")


def expected_windows(con: duckdb.DuckDBPyConnection, spec: WindowSpec, source_file: str) -> list[tuple]:
    """(key, start, end, count, sum, min, max) of the recomputation, sorted."""
    try:
        build_expected(con, spec, source_file)
        return con.execute("SELECT * FROM _expected_windows ORDER BY ALL").fetchall()
    finally:
        _drop_expected(con)


def expected_late_events(con: duckdb.DuckDBPyConnection, spec: WindowSpec, source_file: str) -> list[tuple]:
    """(source_row, key, event_time_ms, amount, watermark_ms, window_start_ms, window_end_ms), sorted."""
    try:
        build_expected(con, spec, source_file)
        return con.execute("SELECT * FROM _expected_late ORDER BY source_row").fetchall()
    finally:
        _drop_expected(con)


_WINDOW_KEY = "key, window_start_ms, window_end_ms"
_WINDOW_VALUES = ("txn_count", "sum_amount", "min_amount", "max_amount")
_LATE_VALUES = ("key", "event_time_ms", "amount", "watermark_ms", "window_start_ms", "window_end_ms")


def _report(con: duckdb.DuckDBPyConnection, actual: str, expected: str, join: str, values: tuple[str, ...],
            label: str, extra_differs: str = "false") -> dict[str, Any]:  # fmt: skip
    """Counts of missing, unexpected, duplicated and differing rows between two relations."""
    differs = " OR ".join(f"a.{v} IS DISTINCT FROM e.{v}" for v in values)
    join_cols = [c.strip() for c in join.split(",")]
    join_a = ", ".join(f"a.{c}" for c in join_cols)
    row = con.execute(f"""
WITH a AS ({actual}), e AS ({expected}),
j AS (SELECT {join_a}, a.{join_cols[0]} IS NOT NULL AS in_a, e.{join_cols[0]} IS NOT NULL AS in_e,
             coalesce(a.{join_cols[-1]}, e.{join_cols[-1]}) AS _sort,
             (a.{join_cols[0]} IS NOT NULL AND e.{join_cols[0]} IS NOT NULL AND ({differs} OR {extra_differs})) AS differs,
             CAST(({", ".join(f"coalesce(a.{c}, e.{c})" for c in join_cols)}) AS VARCHAR) AS ident
      FROM (SELECT DISTINCT ON ({join}) * FROM a) a FULL OUTER JOIN (SELECT DISTINCT ON ({join}) * FROM e) e
      USING ({join}))
SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM a),
       count(*) FILTER (WHERE in_a AND in_e), count(*) FILTER (WHERE in_e AND NOT in_a),
       count(*) FILTER (WHERE in_a AND NOT in_e),
       (SELECT count(*) FROM a) - (SELECT count(*) FROM (SELECT DISTINCT {join} FROM a)),
       (SELECT count(*) FROM e) - (SELECT count(*) FROM (SELECT DISTINCT {join} FROM e)),
       count(*) FILTER (WHERE differs),
       list(CASE WHEN in_e AND NOT in_a THEN 'missing {label} ' WHEN in_a AND NOT in_e THEN 'unexpected {label} '
                 ELSE '{label} differs ' END || ident ORDER BY ident) FILTER (WHERE differs OR in_a <> in_e)
FROM j""").fetchall()[0]  # fmt: skip
    names = ("expected", "actual", "compared", "missing", "unexpected", "duplicates_actual",
             "duplicates_expected", "value_mismatches")  # fmt: skip
    report: dict[str, Any] = dict(zip(names, map(int, row[:8])))
    report["examples"] = list(row[8] or [])[: 3 * _MAX_EXAMPLES]
    report["equal"] = not any(report[k] for k in names[3:])
    return report


def _windows_if_identical(con: duckdb.DuckDBPyConnection, actual_windows: str) -> dict[str, Any] | None:
    """The window report when `actual_windows` (rows of window_averages) and `_expected_windows` hold
    the same rows, else None (the caller then finds out what differs).

    One anti join of the expected windows against the actual ones on every column, the stored mean bit
    for bit (its value and the sign of a zero) included, and the two counts. The expected windows are a
    GROUP BY over the key columns, so they are distinct and each matches a different actual row: when
    none is unmatched and the counts are equal, the actual rows are exactly the expected ones, duplicates
    included. Reading the actual rows where they are, with a hash join, instead of copying them and
    taking `EXCEPT ALL`: 10M rows, 6.8M windows, 13.3 -> 3.1 s (docs/windows.md).
    """
    mean = "e.sum_amount::DOUBLE / e.txn_count"
    matches = " AND ".join(
        [f"a.{c} = e.{c}" for c in (*_WINDOW_KEY.split(", "), *_WINDOW_VALUES)]
        + [f"a.avg_amount = {mean}", f"signbit(a.avg_amount) = signbit({mean})"]
    )
    n_actual, n_expected, n_unmatched = schema.fetch_one(
        con,
        f"""SELECT (SELECT count(*) FROM ({actual_windows})), (SELECT count(*) FROM _expected_windows),
            (SELECT count(*) FROM _expected_windows e ANTI JOIN ({actual_windows}) a ON {matches})""",
    )
    if n_actual != n_expected or n_unmatched:
        return None
    counts = dict.fromkeys(("missing", "unexpected", "duplicates_actual", "duplicates_expected", "value_mismatches"), 0)
    return {"expected": n_expected, "actual": n_actual, "compared": n_actual, **counts, "examples": [], "equal": True}


def compare_tables(
    con: duckdb.DuckDBPyConnection, spec: WindowSpec, source_file: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compare `window_averages` and `late_events` of `source_file` with the recomputation, inside
    DuckDB (no table is copied into Python but the session pass's three columns). Returns the
    window report and the late-event report; `equal` is True when they match exactly."""
    try:
        build_expected(con, spec, source_file)
        return _compare_with_expected(con, source_file)
    finally:
        _drop_expected(con)


class OverlappedRecomputation:
    """The recomputation of one file, built on a connection of its own in a background thread while the
    Flink job runs (it needs only the file's transactions), and compared once the job's output is loaded.

    Use as a context manager around the job: ``compare()`` waits for the build and returns what
    ``compare_tables`` returns; leaving the block early interrupts a build still running.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, spec: WindowSpec, source_file: str) -> None:
        self._con = con.cursor()
        self._source_file = source_file
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recompute")
        self._built = self._pool.submit(build_expected, self._con, spec, source_file)

    def __enter__(self) -> OverlappedRecomputation:
        return self

    def compare(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self._built.result()
        return _compare_with_expected(self._con, self._source_file)

    def __exit__(self, *exc_info: object) -> None:
        if not self._built.done():
            self._con.interrupt()
        self._pool.shutdown(wait=True)
        try:
            _drop_expected(self._con)
        finally:
            self._con.close()


def _compare_with_expected(con: duckdb.DuckDBPyConnection, source_file: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """compare_tables once `build_expected` made the temp tables on `con`."""
    windows = segments.file_rows(con, "window_averages", source_file)
    late = (
        "SELECT source_row, key, event_time_ms, amount, watermark_ms, epoch_ms(window_start) AS window_start_ms, "
        f"epoch_ms(window_end) AS window_end_ms FROM {segments.file_rows(con, 'late_events', source_file)} "
        f"AS late_events WHERE source_file = {_literal(source_file)}"
    )
    return compare_with_expected(
        con, f"SELECT * FROM {windows} AS window_averages WHERE source_file = {_literal(source_file)}", late
    )


def compare_with_expected(con: duckdb.DuckDBPyConnection, actual_windows: str, actual_late: str
                          ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The window and late-event reports of `actual_windows` (rows of window_averages) and `actual_late`
    (source_row, key, event_time_ms, amount, watermark_ms, window_start_ms, window_end_ms) against the
    temp tables `_expected_windows` and `_expected_late`."""
    windows = _windows_if_identical(con, actual_windows)
    if windows is None:  # find out what differs, on a copy of the actual rows (read three times)
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE _actual_windows AS {actual_windows}")
            # avg_amount is derived from the exact sum on load; a stored mean that differs (also in
            # the sign of a zero) is a mismatch
            avg_differs = (
                "a.avg_amount IS DISTINCT FROM (e.sum_amount::DOUBLE / e.txn_count) "
                "OR signbit(a.avg_amount) <> signbit(e.sum_amount::DOUBLE / e.txn_count)"
            )
            windows = _report(
                con,
                f"SELECT {_WINDOW_KEY}, avg_amount, {', '.join(_WINDOW_VALUES)} FROM _actual_windows",
                "SELECT * FROM _expected_windows",
                _WINDOW_KEY,
                _WINDOW_VALUES,
                "window",
                avg_differs,
            )
            windows["max_abs_diff"] = float(
                con.execute(
                    "SELECT coalesce(max(abs(a.avg_amount - e.sum_amount::DOUBLE / e.txn_count)), 0) "
                    f"FROM _actual_windows a JOIN _expected_windows e USING ({_WINDOW_KEY})"
                ).fetchall()[0][0]
            )
        finally:
            con.execute("DROP TABLE IF EXISTS _actual_windows")
    else:
        windows["max_abs_diff"] = 0.0
    late = _report(con, actual_late, "SELECT * FROM _expected_late", "source_row", _LATE_VALUES, "late event")
    # the (event, window) pairs the rule counts: what sum(txn_count) must equal (conservation)
    windows["expected_pairs"] = int(
        con.execute("SELECT coalesce(sum(txn_count), 0) FROM _expected_windows").fetchall()[0][0]
    )
    return windows, late


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
