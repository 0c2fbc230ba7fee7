"""Plain-Python reference of the replay semantics: the executable specification.

The Flink job (flink_jobs/window_job.py, Flink's own WindowOperator) and the DuckDB recomputation
(:mod:`warehouse.reconcile`) are checked against it. It favours obviousness over speed and shares no
code with either; it follows the rules of :mod:`warehouse.windows` (in prose: docs/windows.md).

* Events in file order (ascending ``source_row``); before ``e`` the watermark is ``W(e) = max(event
  time of the events before e, late ones too) - out_of_orderness - 1``, none before the first event.
* A window ``w`` is late for ``e`` iff ``w.end - 1 + allowed_lateness <= W(e)``. Tumbling and sliding:
  ``e`` is counted in each of its windows that is not late, and is a late event only when all are.
* Session: before ``e``, every session of any key with ``end - 1 + allowed_lateness <= W(e)`` is closed,
  its contents final. ``e`` opens ``[ts, ts + gap)``, which merges with the open sessions of its key that
  it overlaps or touches; if the result is late (only when nothing merged), ``e`` is a late event.
* Per window: count, exact sum, min and max (Decimal); the mean ``sum / count`` is derived at loading.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from warehouse.windows import WindowSpec

__all__ = ["Event", "LateEvent", "ReplayResult", "Window", "replay"]

# (source_row, key, event_time_ms, amount)
Event = tuple[int, str, int, Decimal]
# (key, window_start_ms, window_end_ms, txn_count, sum_amount, min_amount, max_amount)
Window = tuple[str, int, int, int, Decimal, Decimal, Decimal]
# (source_row, key, event_time_ms, amount, watermark_ms)
LateEvent = tuple[int, str, int, Decimal, int]


@dataclass(frozen=True)
class ReplayResult:
    """``windows`` sorted by (key, start, end); ``late`` sorted by source_row."""

    windows: list[Window] = field(default_factory=list)
    late: list[LateEvent] = field(default_factory=list)
    # (key, start, end) -> amounts in arrival order, for custom aggregates and tests
    contents: dict[tuple[str, int, int], list[tuple[int, Decimal]]] = field(default_factory=dict)


def replay(events: Iterable[Event], spec: WindowSpec | None = None) -> ReplayResult:
    """Replay ``(source_row, key, event_time_ms, amount)`` events in ascending ``source_row``."""
    spec = (spec or WindowSpec()).validate()
    ordered = sorted(events, key=lambda e: e[0])
    for previous, current in zip(ordered, ordered[1:]):
        if previous[0] == current[0]:
            raise ValueError(f"duplicate source_row {current[0]}: arrival order is ambiguous")
    if spec.kind == "session":
        contents, late = _sessions(ordered, spec)
    else:
        contents, late = _aligned(ordered, spec)
    windows = []
    for (key, start, end), members in sorted(contents.items()):
        amounts = [amount for _, amount in members]
        windows.append((key, start, end, len(amounts), sum(amounts, Decimal(0)), min(amounts), max(amounts)))
    return ReplayResult(windows=windows, late=late, contents=dict(sorted(contents.items())))


def _aligned(ordered: list[Event], spec: WindowSpec):
    contents: dict[tuple[str, int, int], list[tuple[int, Decimal]]] = defaultdict(list)
    late: list[LateEvent] = []
    max_ts: int | None = None
    for source_row, key, ts, amount in ordered:
        watermark = spec.watermark_after(max_ts)
        on_time = [w for w in spec.windows_of(ts) if not spec.is_late(w[1], watermark)]
        if on_time:
            for start, end in on_time:
                contents[(key, start, end)].append((ts, amount))
        else:
            late.append((source_row, key, ts, amount, watermark))
        max_ts = ts if max_ts is None else max(max_ts, ts)
    return contents, late


def _sessions(ordered: list[Event], spec: WindowSpec):
    final: dict[tuple[str, int, int], list[tuple[int, Decimal]]] = {}
    open_sessions: dict[str, list[list]] = defaultdict(list)  # key -> [start, end, members]
    late: list[LateEvent] = []
    max_ts: int | None = None
    for source_row, key, ts, amount in ordered:
        watermark = spec.watermark_after(max_ts)
        for other_key, sessions in open_sessions.items():  # close what the watermark has passed
            still_open = []
            for session in sessions:
                if spec.is_late(session[1], watermark):
                    final[(other_key, session[0], session[1])] = session[2]
                else:
                    still_open.append(session)
            sessions[:] = still_open
        start, end = ts, ts + spec.gap_ms
        sessions = open_sessions[key]
        touching = [s for s in sessions if s[0] <= end and start <= s[1]]  # TimeWindow.intersects
        if not touching and spec.is_late(end, watermark):
            late.append((source_row, key, ts, amount, watermark))
        else:
            members: list[tuple[int, Decimal]] = []
            for s in touching:
                start, end = min(start, s[0]), max(end, s[1])
                members += s[2]
                sessions.remove(s)
            sessions.append([start, end, members + [(ts, amount)]])
        max_ts = ts if max_ts is None else max(max_ts, ts)
    for key, sessions in open_sessions.items():  # the end of input closes the rest
        for start, end, members in sessions:
            final[(key, start, end)] = members
    return final, late
