"""Watermark advice: how disordered a file is, and the smallest out-of-orderness bound per late-event target.

Answers "what TXN_OUT_OF_ORDERNESS_MS should I set?" from one source file's `transactions` rows, in DuckDB
SQL with no Flink job: for each target late-event ratio in [0, 1], the SMALLEST bound ``B`` (whole ms)
whose replay with the configured windows and allowed lateness gives ``late / transactions <= target``,
with the late events that replay gives and the latency it adds (``B - configured``); the disorder
profile; and a plain-words diagnosis when the file is not in time order at all. "Meets" is compared in
floating point exactly as the late_ratio_within_limit check compares, so the bound advised for
TXN_MAX_LATE_RATIO passes that check.

No search is needed: raising ``B`` lowers every watermark by the same amount, so each event has its own
minimal on-time bound ``b(e)``, and the smallest ``B`` with at most ``k`` late events is the (k+1)-th
largest ``b(e)``. Tumbling and sliding are exact; sessions are a safe approximation (``late_events_exact``
false) whose late count is an upper bound, so each advised bound meets its target. The derivation, the
SQL and the measurements: docs/watermark-advice.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from warehouse import quality, schema, segments, windows
from warehouse.windows import WindowSpec

__all__ = [
    "Advice",
    "AdvisedBound",
    "DisorderProfile",
    "TARGETS_VAR",
    "advise",
    "allowed_late",
    "late_ratio_check",
    "parse_targets",
    "write_advice",
]

TARGETS_VAR = "TXN_ADVICE_TARGETS"
DEFAULT_TARGETS = "0.05,0.01,0.001,0"

# The diagnosis. An event is "far behind" when it lags the latest event seen by more than
# clamp(span / 10, 1 min, 1 day): a day-long lag is no ordinary disorder in any file, and in a short
# file a tenth of its whole time span is not either (a file sorted by key restarts at its first
# timestamp for every key). The diagnosis speaks when at least FAR_SHARE of the events are far
# behind: then most of them are late under any bound that keeps windows closing in reasonable time.
FAR_SPAN_FRACTION = 0.1
FAR_MIN_MS = 60_000
FAR_MAX_MS = 86_400_000
FAR_SHARE = 0.10
EXAMPLE_JUMPS = 3
CURVE_POINTS = 160  # bounds on the plot's log grid
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999))

CURRENT_SOURCE = "TXN_OUT_OF_ORDERNESS_MS"
LIMIT_SOURCE = "TXN_MAX_LATE_RATIO"


# --- configuration -----------------------------------------------------------------------------


def parse_targets(text: str) -> tuple[float, ...]:
    """The targets of ``TXN_ADVICE_TARGETS`` (comma-separated ratios from 0 to 1), unique and
    largest first; raises ValueError with one sentence naming the variable."""
    values: list[float] = []
    for part in str(text).split(","):
        try:
            value = float(part.strip())
        except ValueError:
            value = math.nan
        if not 0 <= value <= 1:  # also false for NaN
            raise ValueError(
                f"{TARGETS_VAR} must be a comma-separated list of late-event ratios from 0 to 1 "
                f"(e.g. {DEFAULT_TARGETS}), got {text!r}"
            )
        values.append(value)
    return tuple(sorted(set(values), reverse=True))


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdvisedBound:
    """One row of watermark_advice (without the file and the window config)."""

    target_late_ratio: float | None  # None on the configured bound's row
    out_of_orderness_ms: int
    late_ratio: float
    late_events: int
    added_latency_ms: int
    is_current: bool
    target_source: str


@dataclass(frozen=True)
class DisorderProfile:
    """How far events lag ``M(e)``, the latest event time seen before them."""

    transactions: int
    behind: int  # events with M(e) > their own event time
    lag_ms: dict[str, int]  # p50, p90, p99, p99.9, max of M(e) - ts over the events behind
    first_event_ms: int | None
    last_event_ms: int | None
    far_ms: int  # "far behind" threshold of the diagnosis
    far_behind: int  # events more than far_ms behind
    late_at_far: int  # late events with an out-of-orderness of far_ms
    backward_jumps: int  # consecutive rows whose event time goes back by more than far_ms
    largest_jumps: tuple[tuple[int, int, int], ...]  # (source_row, previous event time, event time)

    @property
    def behind_share(self) -> float:
        return self.behind / self.transactions if self.transactions else 0.0

    @property
    def far_share(self) -> float:
        return self.far_behind / self.transactions if self.transactions else 0.0

    def diagnosis(self) -> str | None:
        """Plain words when the file is not in time order at all; None for ordinary disorder."""
        if not self.transactions or self.far_share < FAR_SHARE:
            return None
        far = human_ms(self.far_ms)
        text = (
            f"{self.far_share:.0%} of events are more than {far} behind the latest event seen: "
            "the file looks sorted by something other than time"
        )
        if self.largest_jumps:
            row, before, after = self.largest_jumps[0]
            text += (
                f". The largest backward jump is at source_row {row:,}, from {utc(before)} back to "
                f"{utc(after)} ({human_ms(before - after)} earlier); {self.backward_jumps:,} "
                f"{'row jumps' if self.backward_jumps == 1 else 'rows jump'} back by more than {far}"
            )
        text += (
            f". Even an out-of-orderness of {far} leaves {self.late_at_far / self.transactions:.0%} of the "
            "events late. Sort the file by its timestamp before replaying it."
        )
        return text

    def as_metadata(self) -> dict[str, object]:
        return {
            "transactions": self.transactions,
            "events_behind": self.behind,
            "share_behind": round(self.behind_share, 6),
            **{f"lag_{name}_ms": value for name, value in self.lag_ms.items()},
            "far_behind_threshold_ms": self.far_ms,
            "events_far_behind": self.far_behind,
            "backward_jumps": self.backward_jumps,
        }


@dataclass(frozen=True)
class Advice:
    source_file: str
    spec: WindowSpec
    transactions: int
    exact: bool  # late counts are exact (tumbling, sliding) or upper bounds (session)
    rows: tuple[AdvisedBound, ...]  # the configured bound first, then the targets, largest first
    curve: tuple[tuple[int, int], ...] = ()  # (bound, late events) on a log grid, for the plot
    profile: DisorderProfile | None = None
    seconds: float = 0.0
    targets: tuple[float, ...] = field(default=())

    @property
    def current(self) -> AdvisedBound:
        return self.rows[0]

    def for_target(self, target: float) -> AdvisedBound:
        for row in self.rows[1:]:
            if row.target_late_ratio == float(target):
                return row
        raise KeyError(f"no advice for target {target}")

    def table_rows(self) -> list[tuple]:
        """The rows of watermark_advice, in contract order."""
        spec = self.spec
        return [
            (
                self.source_file,
                r.target_late_ratio,
                r.out_of_orderness_ms,
                r.late_ratio,
                r.late_events,
                r.added_latency_ms,
                self.transactions,
                r.is_current,
                r.target_source,
                self.exact,
                spec.kind,
                spec.size_ms,
                spec.slide_ms,
                spec.gap_ms,
                spec.allowed_lateness_ms,
            )
            for r in self.rows
        ]


# --- the SQL -----------------------------------------------------------------------------------


def _latest_window_end_sql(spec: WindowSpec) -> str:
    """End of the latest window an event at ``ts`` belongs to (sessions: its own window).
    Floor alignment that also holds before 1970 (DuckDB's % keeps the dividend's sign)."""
    if spec.kind == "session":
        return f"ts + {int(spec.gap_ms)}"
    step = int(spec.size_ms if spec.kind == "tumbling" else spec.slide_ms)
    return f"ts - (((ts % {step}) + {step}) % {step}) + {int(spec.size_ms)}"


def _bucket_sql(ts: str, width: int) -> str:
    """floor(ts / width), also for negative times."""
    return f"(({ts} - ((({ts} % {width}) + {width}) % {width})) // {width})"


# The spec's integers are validated whole numbers, inlined as literals: typed BIGINT constants
# keep DuckDB from guessing parameter types inside the arithmetic.
# Only what every file needs: the key (sessions) and the previous event time (backward jumps) are
# looked up later for the few rows that need them; carrying them through the running maximum cost
# 0.2 s and 0.1 s of CPU at 1M rows.
_EVENTS_SQL = """
CREATE OR REPLACE TEMP TABLE advice_events AS
SELECT source_row, ts, latest_before,
       CASE WHEN latest_before IS NULL THEN 0
            ELSE greatest(0, latest_before - ({end_last}) - {lateness} + 1) END AS bound_needed
FROM (
    SELECT source_row, event_time_ms AS ts,
           greatest(max(event_time_ms) OVER (ORDER BY source_row ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                    {stream_max_before}) AS latest_before
    FROM {transactions} AS transactions
    WHERE source_file = $source_file
)
"""

# Sessions: F(e), the largest event time in (ts, ts + gap] among the earlier events of e's key, for
# the events whose own window is late at bound 0. Equality join on (key, bucket of one gap): DuckDB
# hashes the few candidates and probes them with every event (a range join or an ASOF join sorted
# all 1M events instead: 1.1 s measured for the ASOF join).
_RESCUE_SQL = """
CREATE OR REPLACE TEMP TABLE advice_rescue AS
WITH candidates AS (
    SELECT e.source_row, t.key, e.ts, {bucket} + probe.d AS bucket
    FROM advice_events e
    JOIN {transactions} AS t ON t.source_file = $source_file AND t.source_row = e.source_row,
    (VALUES (0), (1)) AS probe(d)
    WHERE e.bound_needed > 0
)
SELECT c.source_row, max(f.event_time_ms) AS rescue_ts
FROM candidates c
JOIN {transactions} AS f ON f.source_file = $source_file AND f.key = c.key AND {bucket_f} = c.bucket
WHERE f.event_time_ms > c.ts AND f.event_time_ms <= c.ts + {gap} AND f.source_row < c.source_row
GROUP BY c.source_row
"""

_RESCUE_UPDATE_SQL = """
UPDATE advice_events SET bound_needed = greatest(0, advice_events.latest_before - r.rescue_ts - {gap} - {lateness} + 1)
FROM advice_rescue r
WHERE advice_events.source_row = r.source_row
"""

# late_events at bound = #{e : bound_needed(e) > bound}, for every distinct bound_needed.
_CURVE_SQL = """
CREATE OR REPLACE TEMP TABLE advice_curve AS
SELECT bound_needed AS bound,
       coalesce(sum(count(*)) OVER (ORDER BY bound_needed DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
           AS late_events
FROM advice_events
GROUP BY bound_needed
"""

_TARGETS_SQL = """
SELECT k.allowed, min(c.bound), arg_min(c.late_events, c.bound)
FROM (SELECT unnest($allowed::BIGINT[]) AS allowed) k JOIN advice_curve c ON c.late_events <= k.allowed
GROUP BY k.allowed
"""

# The late events at any bound: those of the largest distinct bound_needed at or below it (0 is
# always one: the first event's).
_AT_BOUNDS_SQL = """
SELECT g.bound, c.late_events
FROM (SELECT unnest($bounds::BIGINT[]) AS bound) g ASOF JOIN advice_curve c ON c.bound <= g.bound
"""

_PROFILE_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE latest_before > ts),
       quantile_disc(latest_before - ts, [{quantiles}]) FILTER (WHERE latest_before > ts),
       max(latest_before - ts) FILTER (WHERE latest_before > ts),
       min(ts), max(ts)
FROM advice_events
"""

_FAR_SQL = "SELECT count(*) FILTER (WHERE latest_before - ts > $far) FROM advice_events"

# Only run when some events are far behind (a file to diagnose).
_JUMPS_SQL = """
CREATE OR REPLACE TEMP TABLE advice_jumps AS
SELECT source_row, previous_ts, ts
FROM (SELECT source_row, ts, lag(ts) OVER (ORDER BY source_row) AS previous_ts FROM advice_events)
WHERE previous_ts - ts > $far
"""


def allowed_late(target: float, transactions: int) -> int:
    """The most late events k with k / transactions <= target (the check's own comparison)."""
    if not transactions:
        return 0
    k = min(transactions, math.floor(target * transactions))
    while k < transactions and (k + 1) / transactions <= target:
        k += 1
    while k > 0 and k / transactions > target:
        k -= 1
    return k


def _log_grid(top: int) -> list[int]:
    top = max(1, top)
    steps = CURVE_POINTS - 1
    return sorted({0, *(round(10 ** (i * math.log10(top) / steps)) for i in range(steps + 1)), top})


def advise(
    con: duckdb.DuckDBPyConnection,
    source_file: str,
    spec: WindowSpec,
    targets: Iterable[float] = (),
    *,
    limit: float | None = None,
    profile: bool = True,
    stream_max_before: int | None = None,
) -> Advice:
    """The advice for one file of ``transactions``: a row for the configured bound, one per target
    (and one for ``limit``, TXN_MAX_LATE_RATIO, if given), the plot's curve and, with ``profile``,
    the disorder profile. Only reads ``transactions`` (temporary tables aside).

    ``stream_max_before``: in stream mode, the stream's maximum event time before the file
    (warehouse/stream.py); the file's events are judged against it too, as Flink's restored watermark
    judges them. None: the file is its own stream (file mode, or the stream's first file)."""
    started = time.monotonic()
    spec = spec.validate()
    sources: dict[float, list[str]] = {}
    for target in targets:
        sources.setdefault(float(target), []).append(TARGETS_VAR)
    if limit is not None:
        sources.setdefault(float(limit), []).append(LIMIT_SOURCE)
    for target in sources:
        if not 0 <= target <= 1:
            raise ValueError(f"a late-event target must be a ratio from 0 to 1, got {target}")
    current_bound = spec.out_of_orderness_ms
    session = spec.kind == "session"
    gap, lateness = int(spec.gap_ms), int(spec.allowed_lateness_ms)
    transactions = segments.file_rows(con, "transactions", source_file)  # no other file's segment is opened
    con.execute(
        _EVENTS_SQL.format(
            end_last=_latest_window_end_sql(spec),
            lateness=lateness,
            transactions=transactions,
            stream_max_before="NULL::BIGINT" if stream_max_before is None else f"{int(stream_max_before)}::BIGINT",
        ),
        {"source_file": source_file},
    )
    try:
        if session:
            con.execute(
                _RESCUE_SQL.format(
                    bucket=_bucket_sql("e.ts", gap),
                    bucket_f=_bucket_sql("f.event_time_ms", gap),
                    gap=gap,
                    transactions=transactions,
                ),
                {"source_file": source_file},
            )
            con.execute(_RESCUE_UPDATE_SQL.format(gap=gap, lateness=lateness))
        con.execute(_CURVE_SQL)
        transactions, top = schema.fetch_one(con, "SELECT count(*), coalesce(max(bound_needed), 0) FROM advice_events")
        ordered = sorted(sources, reverse=True)
        allowed = {target: allowed_late(target, transactions) for target in ordered}
        by_allowed: dict[int, tuple[int, int]] = {}
        if transactions:
            for k, bound, late in con.execute(_TARGETS_SQL, {"allowed": sorted(set(allowed.values()))}).fetchall():
                by_allowed[int(k)] = (int(bound), int(late))
        profile_result = _profile(con, transactions) if profile and transactions else None
        extra = [current_bound] + ([profile_result.far_ms] if profile_result else [])
        grid = _log_grid(max([top, *extra, *(b for b, _ in by_allowed.values())]) * 2)
        at = _late_at(con, [*extra, *grid]) if transactions else {}
    finally:
        for table in ("advice_curve", "advice_rescue", "advice_jumps", "advice_events"):
            con.execute(f"DROP TABLE IF EXISTS {table}")

    def ratio(late: int) -> float:
        return late / transactions if transactions else 0.0

    current_late = at.get(current_bound, 0)
    rows = [AdvisedBound(None, current_bound, ratio(current_late), current_late, 0, True, CURRENT_SOURCE)]
    for target in ordered:
        bound, late = by_allowed.get(allowed[target], (0, 0))
        rows.append(
            AdvisedBound(target, bound, ratio(late), late, bound - current_bound, False, ", ".join(sources[target]))
        )
    if profile_result is not None:
        profile_result = dataclasses.replace(profile_result, late_at_far=at.get(profile_result.far_ms, 0))
    return Advice(
        source_file=source_file,
        spec=spec,
        transactions=int(transactions),
        exact=not session,
        rows=tuple(rows),
        curve=tuple((bound, at[bound]) for bound in grid) if transactions else (),
        profile=profile_result,
        seconds=time.monotonic() - started,
        targets=tuple(ordered),
    )


def _late_at(con: duckdb.DuckDBPyConnection, bounds: Sequence[int]) -> dict[int, int]:
    rows = con.execute(_AT_BOUNDS_SQL, {"bounds": sorted(set(bounds))}).fetchall()
    return {int(bound): int(late) for bound, late in rows}


def _profile(con: duckdb.DuckDBPyConnection, transactions: int) -> DisorderProfile:
    quantiles = ", ".join(str(q) for _, q in QUANTILES)
    n, behind, lags, worst, first, last = schema.fetch_one(con, _PROFILE_SQL.format(quantiles=quantiles))
    lag_ms = {name: int(value) for (name, _), value in zip(QUANTILES, lags or [0] * len(QUANTILES), strict=True)}
    lag_ms["max"] = int(worst or 0)
    far = int(min(FAR_MAX_MS, max(FAR_MIN_MS, (last - first) * FAR_SPAN_FRACTION)))
    (far_behind,) = schema.fetch_one(con, _FAR_SQL, {"far": far})
    jumps, largest = 0, []
    if far_behind:  # a jump back by more than `far` puts the event that far behind
        con.execute(_JUMPS_SQL, {"far": far})
        (jumps,) = schema.fetch_one(con, "SELECT count(*) FROM advice_jumps")
        largest = con.execute(
            "SELECT source_row, previous_ts, ts FROM advice_jumps ORDER BY previous_ts - ts DESC, source_row LIMIT ?",
            [EXAMPLE_JUMPS],
        ).fetchall()
    return DisorderProfile(
        transactions=int(n),
        behind=int(behind),
        lag_ms=lag_ms,
        first_event_ms=first,
        last_event_ms=last,
        far_ms=far,
        far_behind=int(far_behind),
        late_at_far=0,  # filled in by advise, from the curve
        backward_jumps=int(jumps),
        largest_jumps=tuple((int(r), int(b), int(a)) for r, b, a in largest),
    )


def write_advice(con: duckdb.DuckDBPyConnection, advice: Advice) -> int:
    """Replace the file's rows of watermark_advice with this advice; returns the rows written."""
    rows = advice.table_rows()
    con.execute("DELETE FROM watermark_advice WHERE source_file = ?", [advice.source_file])
    placeholders = ", ".join("?" for _ in schema.TABLES["watermark_advice"])
    con.executemany(f"INSERT INTO watermark_advice VALUES ({placeholders})", rows)
    return len(rows)


# --- the late-event check ----------------------------------------------------------------------


def stored_advice(con: duckdb.DuckDBPyConnection, source_file: str, spec: WindowSpec, limit: float,
                  transactions: int) -> Advice | None:  # fmt: skip
    """The file's watermark_advice rows as an Advice (rows only: no curve, no profile), or None unless
    they were computed for exactly this window config and bound, over `transactions` transactions, and
    hold a row for `limit`. The caller vouches that they are this run's (the rows do not say which run
    wrote them): an earlier run's rows can match all of this and still describe other data."""
    spec = spec.validate()
    rows = con.execute(
        "SELECT target_late_ratio, out_of_orderness_ms, late_ratio, late_events, added_latency_ms, is_current, "
        "target_source, late_events_exact, transactions, window_kind, window_size_ms, window_slide_ms, "
        "session_gap_ms, allowed_lateness_ms FROM watermark_advice WHERE source_file = ? "
        "ORDER BY is_current DESC, target_late_ratio DESC",
        [source_file],
    ).fetchall()
    config = (spec.kind, spec.size_ms, spec.slide_ms, spec.gap_ms, spec.allowed_lateness_ms)
    if not rows or any(tuple(r[9:]) != config or r[8] != transactions for r in rows):
        return None
    bounds = tuple(AdvisedBound(*r[:7]) for r in rows)
    current = bounds[0]
    if not current.is_current or current.out_of_orderness_ms != spec.out_of_orderness_ms:
        return None
    if not any(b.target_late_ratio == float(limit) and LIMIT_SOURCE in b.target_source for b in bounds[1:]):
        return None
    return Advice(source_file=source_file, spec=spec, transactions=int(transactions), exact=bool(rows[0][7]),
                  rows=bounds, targets=tuple(b.target_late_ratio for b in bounds[1:]))  # fmt: skip


def late_ratio_check(
    con: duckdb.DuckDBPyConnection,
    source_file: str,
    spec: WindowSpec,
    limit: float,
    late_events: int,
    transactions: int,
    advised: Advice | None = None,
) -> quality.CheckOutcome:
    """late_ratio_within_limit: late events / transactions <= TXN_MAX_LATE_RATIO. It cites the
    watermark advice for the limit (the same computation as the watermark_advice row whose
    target_source names TXN_MAX_LATE_RATIO), not a recommendation of its own.

    ``late_events`` and ``transactions`` are the replay's own counts (the Flink job's). ``advised``:
    the advice the run's watermark_advice step wrote (``stored_advice``); None recomputes it, which
    costs about 12 s at 30M rows, for runs that did not materialize the advice."""
    base = quality.ratio_check(late_events, transactions, limit, "late events", "transactions")
    recomputed = advised is None
    if advised is None:
        advised = advise(con, source_file, spec, limit=limit, profile=False)
    row = advised.for_target(limit)
    metadata = {
        **base.metadata,
        "out_of_orderness_ms": int(spec.out_of_orderness_ms),
        "recommended_out_of_orderness_ms": row.out_of_orderness_ms,
        "recommended_late_events": row.late_events,
        "recommended_late_ratio": round(row.late_ratio, 6),
        "added_latency_ms": row.added_latency_ms,
        "advice_exact": advised.exact,
        "advised_late_events_at_current_bound": advised.current.late_events,
        "advice_from": "recomputed for this check" if recomputed else "watermark_advice, written by this run",
    }
    description = base.description
    if not base.passed:
        late = f"{row.late_events:,} late events" if advised.exact else f"at most {row.late_events:,} late events"
        description += (
            f". An out-of-orderness of {row.out_of_orderness_ms} ms (TXN_OUT_OF_ORDERNESS_MS, now "
            f"{spec.out_of_orderness_ms}) would have kept late events within the limit ({late}, "
            f"{row.late_ratio:.2%}): see watermark_advice"
        )
    return quality.CheckOutcome(passed=base.passed, description=description, metadata=metadata)


# --- presentation ------------------------------------------------------------------------------


def human_ms(ms: int) -> str:
    """A duration for people: '850 ms', '4.2 s', '12 min', '3.5 h', '1 day', '334 days'."""
    ms = int(ms)
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    if ms < 1000:
        text = f"{ms} ms"
    elif ms < 60_000:
        text = f"{ms / 1000:.3g} s"
    elif ms < 3_600_000:
        text = f"{ms / 60_000:.3g} min"
    elif ms < 86_400_000:
        text = f"{ms / 3_600_000:.3g} h"
    else:
        days = ms / 86_400_000
        text = "1 day" if round(days, 1) == 1 else f"{days:,.3g} days" if days < 100 else f"{days:,.0f} days"
    return sign + text


def utc(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):  # beyond datetime's range
        return f"{ms} ms since epoch"


def format_table(advice: Advice) -> str:
    lines = [
        f"{'target':>8} {'out_of_orderness_ms':>20} {'late_events':>12} {'late_ratio':>10} {'added_latency_ms':>17}"
    ]
    for r in advice.rows:
        target = "current" if r.is_current else f"{r.target_late_ratio:g}"
        lines.append(
            f"{target:>8} {r.out_of_orderness_ms:>20,} {r.late_events:>12,} {r.late_ratio:>10.4%} {r.added_latency_ms:>17,}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m warehouse.advice",
        description="Print the watermark advice for one file of a warehouse's transactions table (read-only).",
    )
    parser.add_argument("--warehouse", required=True, help="DuckDB file with a transactions table")
    parser.add_argument("--source-file", help="source_file to advise on (default: the only one)")
    parser.add_argument("--window-kind", default="tumbling")
    parser.add_argument("--window-size-ms", type=int, default=0)
    parser.add_argument("--window-slide-ms", type=int, default=0)
    parser.add_argument("--session-gap-ms", type=int, default=0)
    parser.add_argument("--out-of-orderness-ms", type=int, default=windows.DEFAULT_OUT_OF_ORDERNESS_MS)
    parser.add_argument("--allowed-lateness-ms", type=int, default=windows.DEFAULT_ALLOWED_LATENESS_MS)
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help=f"as {TARGETS_VAR}")
    parser.add_argument("--repeat", type=int, default=1, help="compute it this many times (timings)")
    args = parser.parse_args(argv)
    try:
        targets = parse_targets(args.targets)
        spec = WindowSpec.of(
            args.window_kind, size_ms=args.window_size_ms, slide_ms=args.window_slide_ms,
            gap_ms=args.session_gap_ms, out_of_orderness_ms=args.out_of_orderness_ms,
            allowed_lateness_ms=args.allowed_lateness_ms,
        )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    con = duckdb.connect(args.warehouse, read_only=True)
    source_file = args.source_file
    if source_file is None:
        files = [f for (f,) in con.execute("SELECT DISTINCT source_file FROM transactions").fetchall()]
        if len(files) != 1:
            print(f"error: pass --source-file, the warehouse has {len(files)} files", file=sys.stderr)
            return 2
        source_file = files[0]
    for _ in range(max(1, args.repeat)):
        advice = advise(con, source_file, spec, targets)
        print(f"{advice.transactions:,} transactions, {spec.describe()}: {advice.seconds:.3f} s", file=sys.stderr)
    print(format_table(advice))
    if advice.profile is not None:
        print(advice.profile.as_metadata())
        print(advice.profile.diagnosis() or "diagnosis: none (ordinary disorder)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
