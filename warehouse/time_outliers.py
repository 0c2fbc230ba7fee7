"""Quarantine of implausible event times: rows whose time jumps far ahead of the stream, unconfirmed.

One event far in the future moves a watermark for good: every honest event after it is late. The
replay is a batch over a known file, so the rule may look at the rows around each one:

* The stream's time S is the latest event time among the rows kept so far, in file order, starting
  from the lower median of the file's first ``2 * confirm_rows + 1`` times (or from the time a
  previous file of the stream left). The watermark is a function of exactly this running maximum.
* A row more than ``max_jump_ms`` ahead of S is a *jump*. It is quarantined when unconfirmed (fewer than
  ``confirm_rows`` of the ``2 * confirm_rows`` rows after it are no earlier than its time minus
  ``max_jump_ms``: the data did not resume there) and contradicted (at least ``confirm_rows`` of the
  rows around it, that many before and after, are further behind it). A kept jump moves S.
* Rows far in the past are never quarantined: they cannot move the watermark, and stay visible as late
  events. The result depends only on the file's order and times, so it is the same at any parallelism.
What it catches and what it cannot tell apart: docs/data-contract.md#implausible-event-times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from warehouse.ingest import record_texts

__all__ = [
    "DEFAULT_CONFIRM_ROWS",
    "DEFAULT_MAX_TIME_JUMP_MS",
    "REASON_PREFIX",
    "Quarantined",
    "find_implausible",
    "quarantine_file",
    "reason",
]

REASON_PREFIX = "implausible event time"
DEFAULT_MAX_TIME_JUMP_MS = 86_400_000  # one day: see docs/data-contract.md#implausible-event-times
DEFAULT_CONFIRM_ROWS = 10
_FIRST_BLOCK = 1024  # rows scanned after a jump before the scan widens again (doubling)
_MAX_BLOCK = 1 << 20


@dataclass(frozen=True)
class Quarantined:
    positions: np.ndarray  # int64 positions (0-based, file order) of the quarantined rows
    stream_ms: np.ndarray  # int64, the stream's time S just before each of them
    following_ms: np.ndarray  # int64, the median time of the rows after each (-1 = no rows after)
    behind: np.ndarray  # int64, how many of the rows around each are more than max_jump_ms behind it


def find_implausible(
    event_time_ms: np.ndarray, max_jump_ms: int, confirm_rows: int, stream_time_ms: int | None = None
) -> Quarantined:
    """The rows of ``event_time_ms`` (file order) that the rule quarantines; ``max_jump_ms <= 0``
    switches the rule off. ``stream_time_ms`` is where a previous file left the stream, if any.

    The scan is sequential in meaning (S depends on which earlier rows were kept) but vectorized in
    blocks: the running maximum of a block finds its first jump, only that row is decided on its own,
    and the scan goes on after it, so the cost is one pass plus a small block per jump.
    """
    times = np.asarray(event_time_ms, dtype=np.int64)
    n = len(times)
    window = 2 * confirm_rows
    empty = np.zeros(0, dtype=np.int64)
    if max_jump_ms <= 0 or n == 0:
        return Quarantined(empty, empty, empty, empty)
    if stream_time_ms is None:
        head = times[: window + 1]
        stream = int(np.partition(head, (len(head) - 1) // 2)[(len(head) - 1) // 2])  # lower median
    else:
        stream = int(stream_time_ms)
    positions: list[int] = []
    streams: list[int] = []
    behind: list[int] = []
    start, block = 0, _FIRST_BLOCK
    while start < n:
        segment = times[start : start + block]
        running = np.maximum.accumulate(segment)
        before = np.empty_like(running)
        before[0] = stream
        np.maximum(running[:-1], stream, out=before[1:])
        jumps = np.flatnonzero(segment - before > max_jump_ms)
        if not len(jumps):
            stream = max(stream, int(running[-1]))
            start += len(segment)
            block = min(2 * block, _MAX_BLOCK)
            continue
        row = start + int(jumps[0])
        stream = int(before[jumps[0]])
        floor = times[row] - max_jump_ms
        confirmed = int(np.count_nonzero(times[row + 1 : row + 1 + window] >= floor)) >= confirm_rows
        around = np.concatenate([times[max(0, row - window) : row], times[row + 1 : row + 1 + window]])
        contradicted = int(np.count_nonzero(around < floor))
        if confirmed or contradicted < confirm_rows:
            stream = int(times[row])  # the stream resumed at the new time, or nothing shows it elsewhere
        else:
            positions.append(row)
            streams.append(stream)
            behind.append(contradicted)
        start, block = row + 1, _FIRST_BLOCK
    following = [
        int(np.median(times[p + 1 : p + 1 + window])) if p + 1 < n else -1 for p in positions
    ]  # a rounded median: for the reason only
    as_array = lambda values: np.array(values, dtype=np.int64)  # noqa: E731
    return Quarantined(as_array(positions), as_array(streams), as_array(following), as_array(behind))


def _iso(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms")) + "Z"


def _span(ms: int) -> str:
    for unit, size in (("years", 365.25 * 86_400_000), ("days", 86_400_000), ("hours", 3_600_000)):
        if ms >= 2 * size:
            return f"{ms / size:,.1f} {unit}"
    return f"{ms / 60_000:,.1f} minutes"


def reason(event_ms: int, stream_ms: int, following_ms: int, behind: int, max_jump_ms: int, confirm_rows: int) -> str:
    """The rejected row's reason: its time, the stream's time around it, and the setting that decides."""
    ahead = event_ms - stream_ms
    after = (
        f"the rows after it are at about {_iso(following_ms)}" if following_ms >= 0 else "no rows follow it in the file"
    )
    return (
        f"{REASON_PREFIX}: {_iso(event_ms)} is {_span(ahead)} ({ahead:,} ms) ahead of the stream "
        f"(latest plausible event time before it {_iso(stream_ms)}; {after}): fewer than {confirm_rows} "
        f"of the {2 * confirm_rows} rows after it confirm the jump and {behind} of the rows around it are "
        "further behind; quarantined because it exceeds "
        f"TXN_MAX_TIME_JUMP_MS={max_jump_ms} (raise it, or set 0 to switch the rule off, if the time is real)"
    )


def quarantine_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    source_file: str,
    tables: tuple[str, str],
    event_time_ms: np.ndarray,
    source_rows: np.ndarray,
    max_jump_ms: int,
    confirm_rows: int,
    stream_time_ms: int | None = None,
) -> int:
    """Move the file's implausible rows from ``tables[0]`` (its transactions, just written) to
    ``tables[1]`` (its rejected rows), with their raw text and reason; returns how many moved.
    ``event_time_ms`` and ``source_rows`` are the file's transactions in file order; ``stream_time_ms``
    is where the files before it left the stream (stream mode), None for a file on its own."""
    found = find_implausible(event_time_ms, max_jump_ms, confirm_rows, stream_time_ms)
    if not len(found.positions):
        return 0
    transactions, rejected = tables
    moved = pd.DataFrame(
        {
            "source_row": np.asarray(source_rows, dtype=np.int64)[found.positions],
            "reason": [
                reason(int(event_time_ms[p]), int(s), int(f), int(b), max_jump_ms, confirm_rows)
                for p, s, f, b in zip(found.positions, found.stream_ms, found.following_ms, found.behind)
            ],
        }
    )
    next_line = (
        f"(SELECT min(n.line) FROM (SELECT line, source_row FROM {transactions} WHERE source_file = $f UNION ALL "
        f"SELECT line, source_row FROM {rejected} WHERE source_file = $f) AS n WHERE n.source_row = t.source_row + 1)"
    )
    spans = con.execute(
        f"SELECT t.line, {next_line} FROM {transactions} AS t WHERE t.source_file = $f "
        "AND t.source_row IN (SELECT unnest($rows)) ORDER BY t.source_row",
        {"f": source_file, "rows": moved["source_row"].tolist()},
    ).fetchall()
    moved["line"] = [line for line, _ in spans]
    moved["raw"] = record_texts(path, spans)
    con.register("quarantined", moved)
    try:
        con.execute("BEGIN")
        con.execute(
            f"INSERT INTO {rejected} SELECT $f, source_row, line, raw, reason FROM quarantined ORDER BY source_row",
            {"f": source_file},
        )
        con.execute(
            f"DELETE FROM {transactions} WHERE source_file = $f AND source_row IN (SELECT source_row FROM quarantined)",
            {"f": source_file},
        )
        con.execute("COMMIT")
    finally:
        con.unregister("quarantined")
    return len(moved)
