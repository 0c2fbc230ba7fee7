"""Stream mode (TXN_REPLAY_MODE=stream): a warehouse's files as ONE event-time stream (docs/stream-mode.md).

The order: files are sorted by the median event time of their valid transactions, then by path. The median
ignores a minority of odd rows (and implausible times are quarantined before: warehouse/time_outliers.py),
so a backfill of an older day slots in before the newer ones. `stream_files` records the order, each file's
figures, the stream's watermark after it and the savepoint of Flink's state after it.

A run's plan (`plan`): the files before the first place where the order changed, or where the run's file
is, are kept with their windows and state; the run restores the savepoint after the last kept file and
replays every file from that place on, in order (an append replays one file; a backfill, a corrected file
or the same file again rebuilds the stream from there). What those files' runs wrote is deleted first, with
the provisional windows of the stream's last file.

Rows of a stream warehouse: a window belongs to the file whose events closed it (the first file after which
the stream's watermark is past its cleanup time `end - 1 + allowed lateness`); windows still open at the
end belong to the last file with `is_final = false`. A late event belongs to its own file. The
independent recomputation (warehouse/reconcile.py) replays the same files after the events carried in the
windows the run reopens, starting from the stream's maximum event time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from warehouse import schema, segments
from warehouse.quality import CheckOutcome
from warehouse.windows import WindowSpec

ROW_BITS = 40  # staged source_row = (index of the file in the run << ROW_BITS) + its source_row
WINDOW_TABLES = ("window_averages", "late_events", "custom_aggregates")
_FIELDS = ("position", "source_file", "median_event_time_ms", "transactions", "max_event_time_ms",
           "stream_max_event_time_ms", "watermark_ms", "savepoint", "run_id", "replayed_at")  # fmt: skip


@dataclass(frozen=True)
class StreamFile:
    position: int
    source_file: str
    median_event_time_ms: int
    transactions: int
    max_event_time_ms: int
    stream_max_event_time_ms: int | None = None
    watermark_ms: int | None = None
    savepoint: str | None = None
    run_id: str | None = None
    replayed_at: object = None


@dataclass
class Plan:
    """What a stream run does: keep `kept`, restore `restore_from`, replay `replay` in order."""

    kept: list[StreamFile]
    replay: list[StreamFile]
    left: list[str] = field(default_factory=list)  # files of the old stream that are no longer in it (emptied)
    previous_last: str | None = None  # the old stream's last file: it holds the provisional windows

    @property
    def restore_from(self) -> str | None:
        return self.kept[-1].savepoint if self.kept else None

    @property
    def closed_up_to(self) -> int | None:
        """The stream's watermark before the run: every window with a cleanup time up to it has fired."""
        return self.kept[-1].watermark_ms if self.kept else None

    @property
    def rewritten(self) -> list[str]:
        """Files whose window rows and late events the run deletes and writes again."""
        return [f.source_file for f in self.replay] + self.left


def recorded(con: duckdb.DuckDBPyConnection) -> list[StreamFile]:
    """The stream as the warehouse records it, in order ([] for a file-mode or new warehouse)."""
    rows = con.execute(f"SELECT {', '.join(_FIELDS)} FROM stream_files ORDER BY position").fetchall()
    return [StreamFile(*row) for row in rows]


def file_figures(con: duckdb.DuckDBPyConnection, source_file: str) -> tuple[int, int | None, int | None]:
    """(transactions, median event time, max event time) of one file (median: the lower one of an even count)."""
    txns = segments.file_rows(con, "transactions", source_file)
    n, median, latest = schema.fetch_one(
        con,
        f"SELECT count(*), quantile_disc(event_time_ms, 0.5), max(event_time_ms) FROM {txns} AS t "
        "WHERE source_file = ?",
        [source_file],
    )
    return int(n), median, latest


def plan(con: duckdb.DuckDBPyConnection, source_file: str, spec: WindowSpec) -> Plan:
    """The run's plan for `source_file` (whose transactions are already in `con`)."""
    old = recorded(con)
    n, median, latest = file_figures(con, source_file)
    files = [f for f in old if f.source_file != source_file]
    if n:
        files.append(StreamFile(0, source_file, median, n, latest))
    files.sort(key=lambda f: (f.median_event_time_ms, f.source_file))
    start = 0
    while (start < len(files) and start < len(old) and files[start].source_file == old[start].source_file
           and files[start].source_file != source_file):  # fmt: skip
        start += 1
    if start == len(files) and start > 0:  # the run's file left the end of the stream: redo the new last file
        start -= 1
    kept = old[:start]
    replay, stream_max = [], kept[-1].stream_max_event_time_ms if kept else None
    for position, f in enumerate(files[start:], start=start + 1):
        stream_max = f.max_event_time_ms if stream_max is None else max(stream_max, f.max_event_time_ms)
        replay.append(replace(f, position=position, stream_max_event_time_ms=stream_max,
                              watermark_ms=stream_max - spec.out_of_orderness_ms - 1, savepoint=None))  # fmt: skip
    remaining = {f.source_file for f in files}
    left = [f.source_file for f in old[start:] if f.source_file not in remaining]
    if not n and source_file not in left:
        left.append(source_file)
    return Plan(kept=kept, replay=replay, left=left, previous_last=old[-1].source_file if old else None)


@dataclass(frozen=True)
class Reopened:
    """The kept events the recomputation replays before the run's own (in `_stream_events`)."""

    carried: int  # their number
    start_max: int | None  # the stream's maximum event time before the first of them (None: the stream's start)


def reopen(con: duckdb.DuckDBPyConnection, plan: Plan) -> Reopened:
    """Delete what the plan's files wrote (and the old stream's provisional windows), keeping in the temp
    table `_stream_events(seq, key, event_time_ms, amount)` the kept events the recomputation replays
    before the run's own: every event of the kept files from the first one that may hold an event of a
    reopened window (seq < 0, in stream order)."""
    targets = list(plan.rewritten)
    rewritten = set(targets)
    if plan.previous_last and plan.previous_last not in rewritten:
        targets.append(plan.previous_last)  # only its provisional windows go
    reopened = []
    for name in targets:
        rows = segments.file_rows(con, "window_averages", name)
        only_open = "" if name in rewritten else " AND NOT is_final"
        reopened.append(f"SELECT key, window_start_ms, window_end_ms FROM {rows} AS w "
                        f"WHERE source_file = {segments.sql_literal(name)}{only_open}")  # fmt: skip
    con.execute("CREATE OR REPLACE TEMP TABLE _reopened AS " + (" UNION ALL ".join(reopened) if reopened else
                "SELECT NULL::VARCHAR AS key, NULL::BIGINT AS window_start_ms, NULL::BIGINT AS window_end_ms LIMIT 0"))  # fmt: skip
    (earliest,) = schema.fetch_one(con, "SELECT min(window_start_ms) FROM _reopened")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _stream_events (seq BIGINT, key VARCHAR, event_time_ms BIGINT, amount {schema.AMOUNT_TYPE})"
    )
    # Every event of the kept files from the first one that may hold an event of a reopened window: no
    # reopened window holds an earlier event, and replaying these with their own watermarks rebuilds the
    # open windows exactly (a session's membership cannot be read off its time range: a closed session
    # and a later open one may overlap in time).
    first = next((i for i, f in enumerate(plan.kept) if earliest is not None and f.max_event_time_ms >= earliest),
                 len(plan.kept))  # fmt: skip
    start_max = plan.kept[first - 1].stream_max_event_time_ms if first > 0 else None
    carried_from = plan.kept[first:]
    for index, f in enumerate(carried_from):
        txns = segments.file_rows(con, "transactions", f.source_file)
        con.execute(
            f"INSERT INTO _stream_events SELECT {index - len(carried_from)} * (1::BIGINT << {ROW_BITS}) + source_row, "
            f"key, event_time_ms, amount FROM {txns} AS t WHERE source_file = $f",
            {"f": f.source_file},
        )
    (carried,) = schema.fetch_one(con, "SELECT count(*) FROM _stream_events")
    for name in targets:
        keep_final = name not in rewritten
        for table in WINDOW_TABLES:
            if keep_final and table == "late_events":
                continue
            if keep_final:
                rows = segments.file_rows(con, table, name)
                con.execute(f"CREATE OR REPLACE TEMP TABLE _kept_rows AS SELECT * FROM {rows} AS x "
                            "WHERE source_file = ? AND is_final", [name])  # fmt: skip
            target = segments.replace_file(con, table, name)
            if keep_final:
                con.execute(f"INSERT INTO {target} SELECT * FROM _kept_rows")
                con.execute("DROP TABLE _kept_rows")
    con.execute("DROP TABLE IF EXISTS _reopened")
    return Reopened(carried=int(carried), start_max=start_max)


def stage_inputs(con: duckdb.DuckDBPyConnection, plan: Plan, directory: Path) -> tuple[list[Path], int]:
    """Write each replayed file's transactions as a staged input (flink_output's format, with
    `(index << ROW_BITS) + source_row`) and append them to `_stream_events`; returns the paths and the row count."""
    directory.mkdir(parents=True, exist_ok=True)
    paths, total = [], 0
    for index, f in enumerate(plan.replay):
        txns = segments.file_rows(con, "transactions", f.source_file)
        path = directory / f"stream_input_{index:06d}.csv"
        seq = f"({index}::BIGINT << {ROW_BITS}) + source_row"
        con.execute(
            f"COPY (SELECT {seq}, event_time_ms, amount, hex(key) FROM {txns} AS t WHERE source_file = $f "
            f"ORDER BY source_row) TO {segments.sql_literal(str(path))} (FORMAT csv, HEADER false)",
            {"f": f.source_file},
        )
        con.execute(
            f"INSERT INTO _stream_events SELECT {seq}, key, event_time_ms, amount FROM {txns} AS t WHERE source_file = $f",
            {"f": f.source_file},
        )
        paths.append(path)
        total += f.transactions
    return paths, total


def _replay_table(con: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """Temp table `_replayed(idx, source_file, after, up_to)`: file idx closes the windows whose cleanup
    time is in (after, up_to]."""
    con.execute("CREATE OR REPLACE TEMP TABLE _replayed (idx BIGINT, source_file VARCHAR, after BIGINT, up_to BIGINT)")
    after = plan.closed_up_to
    for index, f in enumerate(plan.replay):
        con.execute("INSERT INTO _replayed VALUES (?, ?, ?, ?)", [index, f.source_file, after, f.watermark_ms])
        after = f.watermark_ms


def load_output(con: duckdb.DuckDBPyConnection, output_dir: Path, plan: Plan, spec: WindowSpec) -> None:
    """Insert the stream job's windows, late events and custom aggregates, each with its file and finality."""
    from warehouse import custom_aggregates, flink_output

    _replay_table(con, plan)
    last = segments.sql_literal(plan.replay[-1].source_file)
    cleanup = f"window_end_ms - 1 + {int(spec.allowed_lateness_ms)}"
    owner = (f"owned AS (SELECT o.*, r.source_file AS owner FROM {{rows}} o LEFT JOIN _replayed r "
             f"ON {cleanup.replace('window_end_ms', 'o.window_end_ms')} > coalesce(r.after, -9223372036854775808) "
             f"AND {cleanup.replace('window_end_ms', 'o.window_end_ms')} <= r.up_to)")  # fmt: skip
    window_files = flink_output.output_files(Path(output_dir) / "windows")
    if window_files:
        rows = flink_output.read_csv_sql(window_files, flink_output.WINDOW_COLUMNS)
        con.execute(
            f"INSERT INTO {segments.insert_target(con, 'window_averages')} WITH {owner.format(rows=rows)} "
            f"SELECT coalesce(owner, {last}), decode(unhex(hex_key)), epoch_ms(window_start_ms)::TIMESTAMPTZ, "
            "epoch_ms(window_end_ms)::TIMESTAMPTZ, sum_amount::DOUBLE / txn_count, txn_count, sum_amount, min_amount, "
            "max_amount, window_start_ms, window_end_ms, owner IS NOT NULL FROM owned ORDER BY 1, 2, "
            "window_start_ms, window_end_ms"
        )
    late_files = flink_output.output_files(Path(output_dir) / "late")
    if late_files:
        start, end = flink_output.late_window_sql(spec, "event_time_ms")
        con.execute(
            f"INSERT INTO {segments.insert_target(con, 'late_events')} SELECT r.source_file, "
            f"l.source_row & ((1::BIGINT << {ROW_BITS}) - 1), decode(unhex(hex_key)), "
            "epoch_ms(event_time_ms)::TIMESTAMPTZ, amount, event_time_ms, watermark_ms, "
            f"epoch_ms({start})::TIMESTAMPTZ, epoch_ms({end})::TIMESTAMPTZ "
            f"FROM {flink_output.read_csv_sql(late_files, flink_output.LATE_COLUMNS)} l "
            f"JOIN _replayed r ON r.idx = l.source_row >> {ROW_BITS} ORDER BY 1, 2"
        )
    custom_files = custom_aggregates.output_files(output_dir)
    if custom_files:
        rows = flink_output.read_csv_sql(custom_files, custom_aggregates.COLUMNS)
        con.execute(
            f"INSERT INTO {segments.insert_target(con, 'custom_aggregates')} WITH {owner.format(rows=rows)} "
            f"SELECT coalesce(owner, {last}), decode(unhex(hex_key)), epoch_ms(window_start_ms)::TIMESTAMPTZ, "
            "epoch_ms(window_end_ms)::TIMESTAMPTZ, window_start_ms, window_end_ms, aggregate, value, "
            "owner IS NOT NULL FROM owned ORDER BY 1, aggregate, 2, window_start_ms, window_end_ms"
        )
    con.execute("DROP TABLE IF EXISTS _replayed")


def record(con: duckdb.DuckDBPyConnection, plan: Plan, savepoints: list[str], run_id: str) -> None:
    """Rewrite `stream_files` after the kept files (a prefix of the stream by position, left as it is):
    the replayed ones with their new savepoints. Only the rows after the prefix are touched, so an
    append costs one row, not one per file of the stream (0.13 s at 45 files when every row was rewritten)."""
    if len(savepoints) != len(plan.replay):
        raise ValueError(f"{len(plan.replay)} files replayed but {len(savepoints)} savepoints")
    con.execute("DELETE FROM stream_files WHERE position > ?", [plan.kept[-1].position if plan.kept else 0])
    for f, savepoint in zip(plan.replay, savepoints):
        con.execute(
            "INSERT INTO stream_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [f.position, f.source_file, f.median_event_time_ms, f.transactions, f.max_event_time_ms,
             f.stream_max_event_time_ms, f.watermark_ms, savepoint, run_id],
        )  # fmt: skip


def run_rows_sql(con: duckdb.DuckDBPyConnection, table: str, plan: Plan) -> str:
    """SQL for the rows of `table` the run wrote (its replayed files' rows)."""
    parts = []
    for f in plan.replay:
        rows = segments.file_rows(con, table, f.source_file)
        parts.append(f"SELECT * FROM {rows} AS x WHERE source_file = {segments.sql_literal(f.source_file)}")
    return " UNION ALL ".join(parts)


def finality_mismatches(con: duckdb.DuckDBPyConnection, plan: Plan, spec: WindowSpec) -> int:
    """Rows the run wrote whose is_final disagrees with the stream's last watermark (final iff the cleanup
    time is at or before it)."""
    last_watermark = plan.replay[-1].watermark_ms
    (n,) = schema.fetch_one(
        con,
        f"SELECT count(*) FROM ({run_rows_sql(con, 'window_averages', plan)}) WHERE is_final IS DISTINCT FROM "
        f"(window_end_ms - 1 + {int(spec.allowed_lateness_ms)} <= {int(last_watermark)})",
    )
    return int(n)


def mode_conflict(con: duckdb.DuckDBPyConnection, mode: str, warehouse: str) -> str | None:
    """One sentence when the warehouse holds the other replay mode's rows, else None."""
    tables = {row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_name IN ('stream_files', 'replays')").fetchall()}  # fmt: skip
    streamed = "stream_files" in tables and schema.fetch_one(con, "SELECT count(*) FROM stream_files")[0]
    replayed = "replays" in tables and schema.fetch_one(con, "SELECT count(*) FROM replays")[0]
    held = "stream" if streamed else ("file" if replayed else None)
    if held is None or held == mode:
        return None
    return (
        f"The warehouse {warehouse} holds files replayed in {held} mode, but this run is configured for "
        f"TXN_REPLAY_MODE={mode}; a warehouse holds one replay mode, so set TXN_REPLAY_MODE={held} or set "
        "TXN_WAREHOUSE to another file."
    )


def run_late_sql(con: duckdb.DuckDBPyConnection, plan: Plan) -> str:
    """The run's late events as the recomputation numbers them (source_row = the staged row)."""
    parts = []
    for index, f in enumerate(plan.replay):
        rows = segments.file_rows(con, "late_events", f.source_file)
        parts.append(
            f"SELECT ({index}::BIGINT << {ROW_BITS}) + source_row AS source_row, key, event_time_ms, amount, "
            "watermark_ms, epoch_ms(window_start) AS window_start_ms, epoch_ms(window_end) AS window_end_ms "
            f"FROM {rows} AS l WHERE source_file = {segments.sql_literal(f.source_file)}"
        )
    return " UNION ALL ".join(parts)


@dataclass(frozen=True)
class RunCounts:
    """What the run wrote: windows (of them provisional), transactions counted in them, late events, custom rows."""

    windows: int = 0
    provisional: int = 0
    counted: int = 0
    late: int = 0
    custom: int = 0


def run_counts(con: duckdb.DuckDBPyConnection, plan: Plan) -> RunCounts:
    """The run's rows, one scan of each table."""
    if not plan.replay:
        return RunCounts()
    windows, provisional, counted = schema.fetch_one(
        con,
        "SELECT count(*), count(*) FILTER (WHERE NOT is_final), coalesce(sum(txn_count), 0) "
        f"FROM ({run_rows_sql(con, 'window_averages', plan)})",
    )
    (late,) = schema.fetch_one(con, f"SELECT count(*) FROM ({run_rows_sql(con, 'late_events', plan)})")
    (custom,) = schema.fetch_one(con, f"SELECT count(*) FROM ({run_rows_sql(con, 'custom_aggregates', plan)})")
    return RunCounts(int(windows), int(provisional), int(counted), int(late), int(custom))


def describe_plan(plan: Plan, carried: int) -> str:
    """The plan in one log line."""
    if not plan.replay:
        return "The stream has no transactions left: nothing to replay"
    first = plan.replay[0]
    start = (f"after {plan.kept[-1].source_file} (position {plan.kept[-1].position}), restoring its savepoint "
             f"{plan.restore_from}" if plan.kept else "from the stream's start")  # fmt: skip
    return (
        f"Stream run: replaying {len(plan.replay)} file(s) from position {first.position} ({first.source_file}) "
        f"{start}; {carried:,} events carried in the windows open before it"
        + (f"; {len(plan.left)} file(s) left the stream: {', '.join(plan.left)}" if plan.left else "")
    )


def empty_reports() -> tuple[dict, dict]:
    """The reconciliation's reports of a run that replayed nothing."""
    counts = dict.fromkeys(("expected", "actual", "compared", "missing", "unexpected", "duplicates_actual",
                            "duplicates_expected", "value_mismatches"), 0)  # fmt: skip
    windows = {**counts, "examples": [], "equal": True, "expected_pairs": 0, "max_abs_diff": 0.0}
    return windows, {**counts, "examples": [], "equal": True}


def passed() -> CheckOutcome:
    return CheckOutcome(passed=True, description=None, metadata={})


def conservation_check(con: duckdb.DuckDBPyConnection, plan: Plan, spec: WindowSpec, carried: int,
                       counts: RunCounts, counted_pairs: int, expected_late: int) -> CheckOutcome:  # fmt: skip
    """Nothing lost in the run: the windows it wrote (`counts`) count `counted_pairs` (event, window) pairs,
    the recomputation's, its late events are the recomputation's number, and each is a transaction of its file."""
    transactions = sum(f.transactions for f in plan.replay)
    counted, late, strangers = counts.counted, counts.late, 0
    for f in plan.replay:
        txns = segments.file_rows(con, "transactions", f.source_file)
        lates = segments.file_rows(con, "late_events", f.source_file)
        strangers += schema.fetch_one(
            con,
            f"SELECT count(*) FROM {lates} AS l WHERE source_file = $f AND NOT EXISTS "
            f"(SELECT 1 FROM {txns} AS t WHERE t.source_file = $f AND t.source_row = l.source_row)",
            {"f": f.source_file},
        )[0]
    ok = strangers == 0 and counted == counted_pairs and late == expected_late
    return CheckOutcome(
        passed=bool(ok),
        description=None
        if ok
        else (
            f"{transactions:,} transactions replayed after {carried:,} kept events: {late:,} late events "
            f"({strangers:,} not among the transactions) and {counted:,} counted in windows, but the replay rule "
            f"counts {counted_pairs:,} (event, window) pairs and {expected_late:,} late events ({spec.describe()})"
        ),
        metadata={
            "transactions": transactions,
            "carried_events": carried,
            "late_events": int(late),
            "counted_in_windows": counted,
            "expected_event_window_pairs": int(counted_pairs),
            "late_events_not_in_transactions": int(strangers),
        },  # fmt: skip
    )


def files_rewritten_by(con: duckdb.DuckDBPyConnection, run_id: str, source_file: str) -> list[str]:
    """The other files whose windows the run rewrote (a rebuild replays the files after its own): their
    anomalies are judged again. [] in file mode."""
    rows = con.execute(
        "SELECT source_file FROM stream_files WHERE run_id = ? AND source_file <> ? ORDER BY position",
        [run_id, source_file],
    ).fetchall()
    return [row[0] for row in rows]


def stream_time_before(con: duckdb.DuckDBPyConnection, source_file: str, event_time_ms) -> int | None:
    """Where the stream stands before `source_file` (its maximum event time after the files that come
    before it), for the implausible-time rule (warehouse/time_outliers.py); None for the stream's first file.
    `event_time_ms`: the file's times, whose lower median places it in the stream."""
    import numpy as np

    times = np.asarray(event_time_ms, dtype=np.int64)
    if not len(times):
        return None
    return max_before(con, source_file, int(np.partition(times, (len(times) - 1) // 2)[(len(times) - 1) // 2]))


def max_before(con: duckdb.DuckDBPyConnection, source_file: str, median_event_time_ms: int | None) -> int | None:
    """The stream's maximum event time after the files that come before a file with this median (the
    order's rule: median, then path), not counting the file itself; None if none comes before it."""
    if median_event_time_ms is None:
        return None
    before = [f for f in recorded(con) if f.source_file != source_file
              and (f.median_event_time_ms, f.source_file) < (median_event_time_ms, source_file)]  # fmt: skip
    return max(f.max_event_time_ms for f in before) if before else None
