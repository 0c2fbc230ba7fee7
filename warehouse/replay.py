"""Plain-Python reference implementation of the event-time replay semantics.

This module is the executable specification the Flink job and the DuckDB
reconciliation (:mod:`warehouse.reconcile`) are checked against.  It favours
obviousness over speed.

Semantics
---------
* Events (valid transactions) are replayed in file order, i.e. ascending
  ``source_row``.
* Before event ``e`` arrives the watermark is::

      W(e) = max(event_time_ms of the events before e) - out_of_orderness_ms - 1

  There is no watermark (``None``) for the first event, which is never late.
* Tumbling windows ``[start, start + size)`` are aligned to the epoch:
  ``start = floor(ts / size) * size`` (floor, so negative timestamps work).
* ``e`` is *late* iff ``start + size - 1 + allowed_lateness_ms <= W(e)``.
  Late events are dropped from every window; all other events are averaged
  per ``(key, window)``.
* The average is the correctly rounded exact mean: the exact rational sum of
  the amounts divided by the count, rounded once to a double.  It therefore
  does not depend on the order of summation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
import math

__all__ = [
    "DEFAULT_ALLOWED_LATENESS_MS",
    "DEFAULT_OUT_OF_ORDERNESS_MS",
    "DEFAULT_WINDOW_SIZE_MS",
    "ReplayConfig",
    "ReplayResult",
    "Event",
    "LateEvent",
    "WindowAverage",
    "exact_mean",
    "is_late",
    "replay",
    "window_start",
]

DEFAULT_WINDOW_SIZE_MS = 5000
DEFAULT_OUT_OF_ORDERNESS_MS = 1000
DEFAULT_ALLOWED_LATENESS_MS = 0

# (source_row, key, ts_ms, amount)
Event = tuple[int, str, int, float]
# (key, window_start_ms, window_end_ms, avg_amount, txn_count)
WindowAverage = tuple[str, int, int, float, int]
# (source_row, key, ts_ms, amount, watermark_ms)
LateEvent = tuple[int, str, int, float, int]


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the epoch-aligned tumbling window of ``size_ms`` containing ``ts_ms``.

    Uses floor division, so ``window_start(-1, 5000) == -5000``.
    """
    if size_ms <= 0:
        raise ValueError(f"size_ms must be > 0, got {size_ms}")
    return (ts_ms // size_ms) * size_ms  # Python's // floors, also for negatives


def is_late(
    ts_ms: int,
    watermark_ms: int | None,
    size_ms: int,
    allowed_lateness_ms: int,
) -> bool:
    """True iff an event at ``ts_ms`` is late given the current watermark.

    The window's last timestamp is ``start + size - 1``; the event is late when
    that timestamp plus the allowed lateness is at or behind the watermark.
    With no watermark yet (``None``) nothing is late.
    """
    if watermark_ms is None:
        return False
    start = window_start(ts_ms, size_ms)
    return start + size_ms - 1 + allowed_lateness_ms <= watermark_ms


def exact_mean(amounts: Iterable[float]) -> float:
    """Correctly rounded mean: exact rational sum / count, rounded once.

    Raises ``ValueError`` for an empty input or a non-finite amount.
    """
    total = Fraction(0)
    count = 0
    for amount in amounts:
        if not math.isfinite(amount):
            raise ValueError(f"amount must be finite, got {amount!r}")
        total += Fraction(amount)
        count += 1
    if count == 0:
        raise ValueError("exact_mean() of an empty sequence")
    return float(total / count)


@dataclass(frozen=True)
class ReplayConfig:
    """Window and watermark parameters (all in milliseconds)."""

    window_size_ms: int = DEFAULT_WINDOW_SIZE_MS
    out_of_orderness_ms: int = DEFAULT_OUT_OF_ORDERNESS_MS
    allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS

    def __post_init__(self) -> None:
        for name in ("window_size_ms", "out_of_orderness_ms", "allowed_lateness_ms"):
            value = getattr(self, name)
            # bool is an int subclass; reject it (and floats) explicitly.
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"ReplayConfig.{name} must be an int number of milliseconds, "
                    f"got {value!r} ({type(value).__name__})"
                )
        if self.window_size_ms <= 0:
            raise ValueError(
                f"ReplayConfig.window_size_ms must be > 0, got {self.window_size_ms}"
            )
        if self.out_of_orderness_ms < 0:
            raise ValueError(
                "ReplayConfig.out_of_orderness_ms must be >= 0, "
                f"got {self.out_of_orderness_ms}"
            )
        if self.allowed_lateness_ms < 0:
            raise ValueError(
                "ReplayConfig.allowed_lateness_ms must be >= 0, "
                f"got {self.allowed_lateness_ms}"
            )


@dataclass(frozen=True)
class ReplayResult:
    """Output of :func:`replay`.

    ``windows``: ``(key, window_start_ms, window_end_ms, avg_amount, txn_count)``
    sorted by ``(key, window_start_ms)``; ``window_end_ms`` is exclusive.

    ``late``: ``(source_row, key, ts_ms, amount, watermark_ms)`` sorted by
    ``source_row``; ``watermark_ms`` is the watermark the event was judged against.
    """

    windows: list[WindowAverage] = field(default_factory=list)
    late: list[LateEvent] = field(default_factory=list)


def replay(
    events: Iterable[Event],
    config: ReplayConfig | None = None,
) -> ReplayResult:
    """Replay ``(source_row, key, ts_ms, amount)`` events in ascending ``source_row``.

    ``source_row`` values must be unique (they define the arrival order).
    """
    if config is None:
        config = ReplayConfig()
    ordered = sorted(events, key=lambda e: e[0])
    for previous, current in zip(ordered, ordered[1:]):
        if previous[0] == current[0]:
            raise ValueError(f"duplicate source_row {current[0]}: arrival order is ambiguous")

    size = config.window_size_ms
    max_ts: int | None = None
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    late: list[LateEvent] = []

    for source_row, key, ts_ms, amount in ordered:
        watermark = None if max_ts is None else max_ts - config.out_of_orderness_ms - 1
        if is_late(ts_ms, watermark, size, config.allowed_lateness_ms):
            assert watermark is not None
            late.append((source_row, key, ts_ms, amount, watermark))
        else:
            groups[(key, window_start(ts_ms, size))].append(amount)
        # Every valid event advances the max timestamp, late ones included.
        max_ts = ts_ms if max_ts is None else max(max_ts, ts_ms)

    windows = [
        (key, start, start + size, exact_mean(amounts), len(amounts))
        for (key, start), amounts in sorted(groups.items())
    ]
    return ReplayResult(windows=windows, late=late)
