"""Watermark advice (warehouse.advice) on real DuckDB files, checked against the independent plain-Python
reference replay (warehouse.replay.replay): minimality, exact late counts, the session approximation's
safety and closeness, the disorder diagnosis, the late-event check and the targets' validation."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from orchestration.settings import PipelineSettings
from tests.conftest import transactions_db
from warehouse import advice, quality, schema, synthetic
from warehouse.ingest import read_transactions
from warehouse.replay import replay
from warehouse.windows import WindowSpec

TARGETS = (0.05, 0.01, 0.001, 0.0)


def disordered_events(seed: int, n: int = 3000, keys: int = 5, start: int = 1_700_000_000_000):
    """Known disorder: arrivals 0-200 ms apart; 85% of events 0-300 ms behind their arrival, 12%
    0.3-3 s, 3% 3-12 s."""
    rng = random.Random(seed)
    arrival, events = start, []
    for row in range(1, n + 1):
        arrival += rng.randint(0, 200)
        u = rng.random()
        delay = rng.randint(0, 300) if u < 0.85 else rng.randint(300, 3000) if u < 0.97 else rng.randint(3000, 12000)
        events.append((row, f"k{rng.randrange(keys)}", arrival - delay, Decimal("1.5")))
    return events


def replay_late(events, spec: WindowSpec, bound: int) -> int:
    return len(replay(events, dataclasses.replace(spec, out_of_orderness_ms=bound)).late)


def ingest_csv(con: duckdb.DuckDBPyConnection, path: Path) -> str:
    """Load a CSV into `transactions` with the pipeline's own reader (its row numbers and event times;
    the advice never reads the amount, so it is 0 here)."""
    source_file = str(path)
    for chunk in read_transactions(path, key_column="transaction_id", timezone="UTC"):
        con.register("chunk_valid", chunk.valid)
        con.execute(
            "INSERT INTO transactions SELECT ?, source_row, line, transaction_id, key, "
            "epoch_ms(event_time_ms)::TIMESTAMPTZ, event_time_ms, 0 FROM chunk_valid",
            [source_file],
        )
        con.unregister("chunk_valid")
    return source_file


def empty_db(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    schema.create_tables(con)
    return con


# --- tumbling and sliding: exact and minimal -----------------------------------------------------

ALIGNED = [
    WindowSpec.of("tumbling", size_ms=1000),
    WindowSpec.of("tumbling", size_ms=5000, allowed_lateness_ms=700),
    WindowSpec.of("sliding", size_ms=4000, slide_ms=1000),
    WindowSpec.of("sliding", size_ms=3000, slide_ms=2000, allowed_lateness_ms=250),  # size not a multiple
]


@pytest.mark.parametrize("start", [1_700_000_000_000, -86_400_123], ids=["2023", "before-1970"])
@pytest.mark.parametrize("spec", ALIGNED, ids=lambda s: s.describe())
def test_advised_bound_is_minimal_and_its_late_count_exact(tmp_path, spec, start):
    events = disordered_events(seed=11, start=start)
    n = len(events)
    con = transactions_db(tmp_path / "w.duckdb", events)
    result = advice.advise(con, "input.csv", spec, TARGETS)
    assert result.exact and result.transactions == n
    current = result.current
    assert current.is_current and current.target_late_ratio is None
    assert current.late_events == replay_late(events, spec, spec.out_of_orderness_ms)
    assert [row.target_late_ratio for row in result.rows[1:]] == list(TARGETS)
    for row in result.rows[1:]:
        bound, target = row.out_of_orderness_ms, row.target_late_ratio
        late = replay_late(events, spec, bound)
        assert late == row.late_events and row.late_ratio == late / n <= target, row
        assert row.added_latency_ms == bound - spec.out_of_orderness_ms
        if bound > 0:  # one millisecond less misses the target
            assert replay_late(events, spec, bound - 1) / n > target, row
    # the data has real disorder: the strictest target needs more than the configured bound
    assert result.for_target(0.0).out_of_orderness_ms > 3 * spec.out_of_orderness_ms
    assert result.for_target(0.0).late_events == 0


@pytest.mark.parametrize("spec", ALIGNED, ids=lambda s: s.describe())
def test_in_stream_mode_the_file_is_judged_after_the_stream_before_it(tmp_path, spec):
    """The second half of a stream, advised with the first half's maximum: its counts are those of one
    replay of the whole stream, counted over the second half's events, at every bound."""
    events = disordered_events(seed=23)
    shifted = [(row, key, ts - 10_000, amount) for row, key, ts, amount in events[1500:1520]]
    events[1500:1520] = shifted  # 10 s behind the first half's maximum: late across the cut
    first, second = events[:1500], events[1500:]
    con = transactions_db(tmp_path / "w.duckdb", second)
    stream_max = max(ts for _, _, ts, _ in first)
    result = advice.advise(con, "input.csv", spec, TARGETS, stream_max_before=stream_max)
    alone = advice.advise(con, "input.csv", spec, TARGETS)
    rows_of_second = {row for row, *_ in second}

    def late_in_second(bound: int) -> int:
        whole = replay(events, dataclasses.replace(spec, out_of_orderness_ms=bound))
        return sum(1 for e in whole.late if e[0] in rows_of_second)

    assert result.exact and result.transactions == len(second)
    assert result.current.late_events == late_in_second(spec.out_of_orderness_ms)
    assert result.current.late_events > alone.current.late_events  # the first half's maximum makes events late
    for row in result.rows[1:]:
        assert row.late_events == late_in_second(row.out_of_orderness_ms), row
        if row.out_of_orderness_ms > 0:  # minimal: one millisecond less misses the target
            assert late_in_second(row.out_of_orderness_ms - 1) / len(second) > row.target_late_ratio, row


def test_curve_falls_monotonically_and_matches_the_replay(tmp_path):
    spec = WindowSpec.of("tumbling", size_ms=2000, allowed_lateness_ms=100)
    events = disordered_events(seed=5)
    con = transactions_db(tmp_path / "w.duckdb", events)
    curve = advice.advise(con, "input.csv", spec, TARGETS).curve
    assert curve[0][0] == 0 and len(curve) > 50
    lates = [late for _, late in curve]
    assert lates == sorted(lates, reverse=True) and lates[0] > lates[-1] == 0
    for bound, late in curve[:: len(curve) // 6]:
        assert replay_late(events, spec, bound) == late, bound


def test_a_late_event_still_advances_the_maximum(tmp_path):
    # row 2 is 10 s behind row 1: late at 1 s; row 3 is judged against row 1's time, not row 2's
    events = [(1, "a", 20_000, Decimal(1)), (2, "a", 10_000, Decimal(1)), (3, "a", 16_000, Decimal(1))]
    spec = WindowSpec.of("tumbling", size_ms=1000)
    result = advice.advise(transactions_db(tmp_path / "w.duckdb", events), "input.csv", spec, (0.5, 0.0))
    # b(row 2) = 20000 - 11000 + 1 = 9001, b(row 3) = 20000 - 17000 + 1 = 3001
    assert result.current.late_events == 2 == replay_late(events, spec, 1000)
    assert result.for_target(0.5).out_of_orderness_ms == 3001  # one late event allowed
    assert result.for_target(0.0).out_of_orderness_ms == 9001
    assert replay_late(events, spec, 9001) == 0 and replay_late(events, spec, 9000) == 1


# --- sessions: a safe approximation, and how close it is -----------------------------------------

# (keys, gap, allowed lateness) -> the advised bound's excess over the exact minimum, per target, as
# measured with the reference replay. Sparse keys (50 keys, a 1 s gap): exact. Dense keys (5 keys,
# 2 events per key and second, a 4 s gap): a key's open session spans far more than one gap and
# rescues events the one-hop rule cannot see, so the lenient targets get up to 3.4 s too much.
SESSION_CASES = {
    (50, 1000, 0): {0.05: 0, 0.01: 0, 0.001: 0, 0.0: 0},
    (20, 2000, 0): {0.05: 0, 0.01: 251, 0.001: 0, 0.0: 0},
    (5, 4000, 500): {0.05: 0, 0.01: 988, 0.001: 3373, 0.0: 0},
}


def _exact_minimal_session_bound(events, spec, allowed: int, upper: int) -> int:
    """Binary search with the reference replay (late counts fall as the bound grows)."""
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi) // 2
        if replay_late(events, spec, mid) <= allowed:
            hi = mid
        else:
            lo = mid + 1
    return lo


@pytest.mark.parametrize("case", list(SESSION_CASES), ids=lambda c: f"keys{c[0]}-gap{c[1]}-lateness{c[2]}")
def test_session_advice_meets_every_target_and_is_close_to_the_exact_minimum(tmp_path, case):
    keys, gap, lateness = case
    seed = {50: 4, 20: 3, 5: 2}[keys]
    events = disordered_events(seed=seed, keys=keys)
    n = len(events)
    spec = WindowSpec.of("session", gap_ms=gap, allowed_lateness_ms=lateness)
    result = advice.advise(transactions_db(tmp_path / "w.duckdb", events), "input.csv", spec, TARGETS)
    assert not result.exact
    assert replay_late(events, spec, spec.out_of_orderness_ms) <= result.current.late_events
    excess = {}
    for row in result.rows[1:]:
        replayed = replay_late(events, spec, row.out_of_orderness_ms)
        # an upper bound on the late events, so the advised bound always meets its target
        assert replayed <= row.late_events and replayed / n <= row.target_late_ratio, row
        allowed = advice.allowed_late(row.target_late_ratio, n)
        exact = _exact_minimal_session_bound(events, spec, allowed, row.out_of_orderness_ms)
        assert exact == 0 or replay_late(events, spec, exact - 1) > allowed
        excess[row.target_late_ratio] = row.out_of_orderness_ms - exact
    assert excess == SESSION_CASES[case]


def test_session_rescue_by_an_open_session_of_the_key(tmp_path):
    # gap 1000. Row 3 (ts 1000) is 5 s behind row 2: its own window [1000, 2000) stays late up to a
    # bound of 4000. Row 1 (ts 1900), of the same key and earlier, has the window [1900, 2900), still
    # open from a bound of 3101 (watermark 6000 - 3101 - 1 = 2898 < 2899, its last ms): row 3 merges.
    events = [(1, "a", 1900, Decimal(1)), (2, "b", 6000, Decimal(1)), (3, "a", 1000, Decimal(1))]
    spec = WindowSpec.of("session", gap_ms=1000)
    result = advice.advise(transactions_db(tmp_path / "w.duckdb", events), "input.csv", spec, (0.0,))
    # own window: 6000 - 2000 + 1 = 4001; rescued by row 1: 6000 - 1900 - 1000 + 1 = 3101
    assert result.for_target(0.0).out_of_orderness_ms == 3101
    assert replay_late(events, spec, 3101) == 0 and replay_late(events, spec, 3100) == 1


# --- the diagnosis -------------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[tuple[str, datetime, str]]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("transaction_id,timestamp,amount\n")
        for key, stamp, amount in rows:
            handle.write(f"{key},{stamp:%Y-%m-%d %H:%M:%S},{amount}\n")
    return path


def test_diagnosis_fires_on_a_file_sorted_by_month_as_text(tmp_path):
    rng = random.Random(3)
    rows = []
    for day in range(365):
        for _ in range(4):
            stamp = datetime(2023, 1, 1) + timedelta(days=day, seconds=rng.randrange(86_400))
            rows.append((f"tx{rng.randrange(10)}", stamp, "12.50"))
    rows.sort(key=lambda r: (str(r[1].month), r[1]))  # "1", "10", "11", "12", "2", ..., "9"
    csv = _write_csv(tmp_path / "by_month_text.csv", rows)
    con = empty_db(tmp_path / "w.duckdb")
    source_file = ingest_csv(con, csv)
    result = advice.advise(con, source_file, WindowSpec(), TARGETS)
    profile = result.profile
    february_to_september = sum(1 for _, stamp, _ in rows if 2 <= stamp.month <= 9)
    # every event of February..September is months behind December's; the other months are in order
    assert profile.far_behind == february_to_september and profile.backward_jumps == 1
    text = profile.diagnosis()
    assert text is not None
    share = f"{profile.far_behind / len(rows):.0%}"
    assert text.startswith(
        f"{share} of events are more than 1 day behind the latest event seen: "
        "the file looks sorted by something other than time"
    ), text
    first_february = 1 + next(i for i, (_, stamp, _) in enumerate(rows) if stamp.month == 2)
    assert f"at source_row {first_february:,}, from 2023-12-31" in text and "back to 2023-02-01" in text
    assert "Sort the file by its timestamp" in text
    # most events are late under the configured bound, and still under a day
    assert result.current.late_ratio > 0.6 and profile.late_at_far / len(rows) > 0.6


def test_diagnosis_fires_on_a_short_file_sorted_by_key(tmp_path):
    # 10 minutes of data, sorted by key: every key restarts at the first minute
    rng = random.Random(8)
    start = datetime(2024, 5, 11, 10, 0, 0)
    rows = [(f"tx{rng.randrange(20):02d}", start + timedelta(seconds=rng.randrange(600)), "1.00") for _ in range(2000)]
    rows.sort(key=lambda r: (r[0], r[1]))
    con = empty_db(tmp_path / "w.duckdb")
    source_file = ingest_csv(con, _write_csv(tmp_path / "by_key.csv", rows))
    profile = advice.advise(con, source_file, WindowSpec(), TARGETS).profile
    assert profile.far_ms == 60_000  # a tenth of the 10-minute span
    text = profile.diagnosis()
    assert text is not None and "more than 1 min behind the latest event seen" in text
    assert profile.backward_jumps == 19  # one per key after the first


def test_diagnosis_is_silent_on_ordinary_disorder(tmp_path):
    csv = synthetic.write_transactions_csv(tmp_path / "ordinary.csv", **synthetic.TEST_SETTINGS)
    con = empty_db(tmp_path / "w.duckdb")
    source_file = ingest_csv(con, csv)
    result = advice.advise(con, source_file, WindowSpec(), TARGETS)
    profile = result.profile
    assert profile.diagnosis() is None and profile.far_behind == 0 and profile.backward_jumps == 0
    # ... although the file has plenty of ordinary disorder and > 5% late events
    assert 0.3 < profile.behind_share < 0.7
    assert profile.lag_ms["p50"] < 1000 < profile.lag_ms["p99"] <= profile.lag_ms["p99.9"] <= profile.lag_ms["max"]
    assert result.current.late_ratio > 0.05
    assert result.for_target(0.01).out_of_orderness_ms > 1000


def test_profile_quantiles_are_over_the_events_behind(tmp_path):
    # lags behind the running max: row 2: 500, row 4: 100, row 5: 2000 (rows 1 and 3 are not behind)
    events = [(1, "a", 10_000, Decimal(1)), (2, "a", 9_500, Decimal(1)), (3, "a", 12_000, Decimal(1)),
              (4, "a", 11_900, Decimal(1)), (5, "a", 10_000, Decimal(1))]  # fmt: skip
    profile = advice.advise(transactions_db(tmp_path / "w.duckdb", events), "input.csv", WindowSpec()).profile
    assert profile.behind == 3 and profile.behind_share == 0.6
    assert profile.lag_ms == {"p50": 500, "p90": 2000, "p99": 2000, "p99.9": 2000, "max": 2000}


# --- rows, table, targets ------------------------------------------------------------------------


def test_rows_for_the_limit_and_the_configured_bound(tmp_path):
    events = disordered_events(seed=1)
    con = transactions_db(tmp_path / "w.duckdb", events)
    spec = WindowSpec()
    shared = advice.advise(con, "input.csv", spec, (0.05, 0.01), limit=0.01)
    assert [(r.target_late_ratio, r.target_source) for r in shared.rows] == [
        (None, "TXN_OUT_OF_ORDERNESS_MS"), (0.05, "TXN_ADVICE_TARGETS"), (0.01, "TXN_ADVICE_TARGETS, TXN_MAX_LATE_RATIO"),
    ]  # fmt: skip
    apart = advice.advise(con, "input.csv", spec, (0.05, 0.01), limit=0.02)
    assert [r.target_source for r in apart.rows[1:]] == [
        "TXN_ADVICE_TARGETS",
        "TXN_MAX_LATE_RATIO",
        "TXN_ADVICE_TARGETS",
    ]
    assert apart.for_target(0.02).out_of_orderness_ms <= apart.for_target(0.01).out_of_orderness_ms
    assert [r.is_current for r in apart.rows] == [True, False, False, False]


def test_write_advice_replaces_only_the_files_rows_and_matches_the_contract(tmp_path):
    con = transactions_db(tmp_path / "w.duckdb", disordered_events(seed=1), source_file="a.csv")
    con.execute("INSERT INTO transactions SELECT 'b.csv', * EXCLUDE (source_file) FROM transactions")
    spec = WindowSpec.of("sliding", size_ms=4000, slide_ms=2000)
    assert advice.write_advice(con, advice.advise(con, "b.csv", spec, TARGETS)) == 5
    for _ in range(2):
        assert advice.write_advice(con, advice.advise(con, "a.csv", spec, TARGETS, limit=0.02)) == 6
    assert quality.contract_check(con, "watermark_advice").passed
    counts = dict(con.execute("SELECT source_file, count(*) FROM watermark_advice GROUP BY ALL").fetchall())
    assert counts == {"a.csv": 6, "b.csv": 5}
    row = con.execute(
        "SELECT out_of_orderness_ms, late_events, added_latency_ms, transactions, is_current, late_events_exact, "
        "window_kind, window_size_ms, window_slide_ms, session_gap_ms, allowed_lateness_ms FROM watermark_advice "
        "WHERE source_file = 'a.csv' AND target_late_ratio IS NULL"
    ).fetchall()
    assert row == [
        (1000, advice.advise(con, "a.csv", spec).current.late_events, 0, 3000, True, True, "sliding", 4000, 2000, 0, 0)
    ]
    # no temporary tables are left behind
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]


def test_a_file_without_transactions_gets_zero_bounds(tmp_path):
    con = empty_db(tmp_path / "w.duckdb")
    result = advice.advise(con, "empty.csv", WindowSpec(), TARGETS)
    assert result.transactions == 0 and result.profile is None and result.curve == ()
    assert [(r.out_of_orderness_ms, r.late_events, r.late_ratio) for r in result.rows[1:]] == [(0, 0, 0.0)] * 4
    assert advice.write_advice(con, result) == 5


@pytest.mark.parametrize(
    "text, expected",
    [("0.05,0.01,0.001,0", (0.05, 0.01, 0.001, 0.0)), (" 0.01 , 0.05,0.01", (0.05, 0.01)), ("1", (1.0,))],
)
def test_parse_targets(text, expected):
    assert advice.parse_targets(text) == expected


@pytest.mark.parametrize("text", ["", "0.1,", "abc", "1.5", "-0.01", "nan", "5%", "inf"])
def test_bad_targets_give_one_sentence_naming_the_variable(text):
    with pytest.raises(ValueError) as error:
        advice.parse_targets(text)
    message = str(error.value)
    assert message.startswith("TXN_ADVICE_TARGETS must be a comma-separated list of late-event ratios from 0 to 1")
    assert message.endswith(f"got {text!r}") and message.count(". ") == message.count("e.g. ")  # one sentence


def test_settings_validate_the_targets():
    problems = PipelineSettings(advice_targets="0.1,2").problems()
    assert [p for p in problems if "TXN_ADVICE_TARGETS" in p] == [
        "TXN_ADVICE_TARGETS must be a comma-separated list of late-event ratios from 0 to 1 (e.g. 0.05,0.01,0.001,0), "
        "got '0.1,2'"
    ]
    assert not [p for p in PipelineSettings.from_env({"TXN_ADVICE_TARGETS": "0.2, 0"}).problems() if "ADVICE" in p]


# --- the late-event check ------------------------------------------------------------------------


def test_late_ratio_check_cites_the_advice_for_the_limit(tmp_path):
    events = disordered_events(seed=9)
    n = len(events)
    con = transactions_db(tmp_path / "w.duckdb", events)
    spec = WindowSpec.of("tumbling", size_ms=2000)
    late = replay_late(events, spec, spec.out_of_orderness_ms)
    assert late / n > 0.01
    outcome = advice.late_ratio_check(con, "input.csv", spec, 0.01, late, n)
    advised = advice.advise(con, "input.csv", spec, limit=0.01).for_target(0.01)
    assert not outcome.passed
    assert outcome.description.startswith(f"{late:,} of {n:,} transactions are late events")
    assert outcome.description.endswith(
        f". An out-of-orderness of {advised.out_of_orderness_ms} ms (TXN_OUT_OF_ORDERNESS_MS, now 1000) would have "
        f"kept late events within the limit ({advised.late_events:,} late events, {advised.late_ratio:.2%}): "
        "see watermark_advice"
    )
    assert outcome.metadata["recommended_out_of_orderness_ms"] == advised.out_of_orderness_ms > 1000
    assert outcome.metadata["advised_late_events_at_current_bound"] == late
    assert replay_late(events, spec, advised.out_of_orderness_ms) / n <= 0.01

    within = advice.late_ratio_check(con, "input.csv", spec, 0.5, late, n)
    assert within.passed and within.description is None
    assert within.metadata["recommended_out_of_orderness_ms"] == 0 and within.metadata["added_latency_ms"] == -1000


def test_the_check_cites_the_stored_advice_only_when_it_was_made_for_this_config(tmp_path):
    events = disordered_events(seed=4)
    n = len(events)
    con = transactions_db(tmp_path / "w.duckdb", events)
    spec = WindowSpec.of("sliding", size_ms=4000, slide_ms=2000)
    written = advice.advise(con, "input.csv", spec, TARGETS, limit=0.02)
    advice.write_advice(con, written)
    stored = advice.stored_advice(con, "input.csv", spec, 0.02, n)
    assert stored is not None and stored.rows == written.rows and stored.exact == written.exact
    late = replay_late(events, spec, spec.out_of_orderness_ms)
    from_table = advice.late_ratio_check(con, "input.csv", spec, 0.02, late, n, stored)
    recomputed = advice.late_ratio_check(con, "input.csv", spec, 0.02, late, n)
    assert from_table.metadata.pop("advice_from") == "watermark_advice, written by this run"
    assert recomputed.metadata.pop("advice_from") == "recomputed for this check"
    assert (from_table.passed, from_table.description, from_table.metadata) == (
        recomputed.passed, recomputed.description, recomputed.metadata,
    )  # fmt: skip
    # rows made for another bound, window, limit or number of transactions are not this run's advice
    assert advice.stored_advice(con, "input.csv", dataclasses.replace(spec, out_of_orderness_ms=999), 0.02, n) is None
    assert advice.stored_advice(con, "input.csv", WindowSpec.of("tumbling", size_ms=4000), 0.02, n) is None
    assert advice.stored_advice(con, "input.csv", spec, 0.05, n) is None  # a target's row, not the limit's
    assert advice.stored_advice(con, "input.csv", spec, 0.02, n - 1) is None
    assert advice.stored_advice(con, "other.csv", spec, 0.02, n) is None


def test_late_ratio_check_says_at_most_for_sessions(tmp_path):
    events = disordered_events(seed=2)
    con = transactions_db(tmp_path / "w.duckdb", events)
    spec = WindowSpec.of("session", gap_ms=300)
    late = replay_late(events, spec, spec.out_of_orderness_ms)
    outcome = advice.late_ratio_check(con, "input.csv", spec, 0.001, late, len(events))
    assert not outcome.passed and "within the limit (at most " in outcome.description
    assert outcome.metadata["advice_exact"] is False


def test_human_durations():
    assert [advice.human_ms(v) for v in (0, 850, 4_200, 60_000, 5_400_000, 86_400_000, 28_857_600_000, -1_000)] == [
        "0 ms", "850 ms", "4.2 s", "1 min", "1.5 h", "1 day", "334 days", "-1 s",
    ]  # fmt: skip
    assert advice.utc(0) == "1970-01-01 00:00:00" and advice.utc(10**17).endswith("ms since epoch")
