"""Tests for the plain-Python reference replay (warehouse.replay): hand-computed scenarios for every
window kind, exact Decimal aggregates, and properties against brute-force oracles.

`SCENARIOS` is also replayed by the DuckDB recomputation (tests/warehouse/test_reconcile.py)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warehouse.replay import ReplayResult, replay
from warehouse.windows import WindowSpec, WindowSpecError

DATA = Path(__file__).resolve().parents[2] / "data"
D = Decimal


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def w(key: str, start: int, end: int, *amounts) -> tuple:
    """A window row from its members' amounts (listed by hand): (key, start, end, count, sum, min, max)."""
    values = [D(str(a)) for a in amounts]
    return (key, start, end, len(values), sum(values, D(0)), min(values), max(values))


def ev(row: int, key: str, ts: int, amount) -> tuple:
    return (row, key, ts, D(str(amount)))


def late(row: int, key: str, ts: int, amount, watermark: int) -> tuple:
    return (row, key, ts, D(str(amount)), watermark)


class Scenario(NamedTuple):
    name: str
    spec: WindowSpec
    events: list
    windows: list
    late: list


TUMBLING = WindowSpec()  # 5000 ms, out-of-orderness 1000 ms, no allowed lateness
SLIDING = WindowSpec.of("sliding", size_ms=10_000, slide_ms=5000, out_of_orderness_ms=1000)
SESSION = WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=1000)
X = utc_ms("2024-05-11 10:00:00")
MAX = "99999999999999.9999"

SCENARIOS = [
    # the lab's worked example: [10:00:00, 10:00:05) avg 150 over 2, [10:00:05, 10:00:10) avg 300 over 1
    Scenario("lab example", TUMBLING,
             [ev(1, "tx1", X, 100), ev(2, "tx1", X + 3000, 200), ev(3, "tx1", X + 6000, 300)],
             [w("tx1", X, X + 5000, 100, 200), w("tx1", X + 5000, X + 10_000, 300)], []),
    # W = 6000 - 1000 - 1 = 4999 = last ms of [0, 5000): late
    Scenario("tumbling late event", TUMBLING, [ev(1, "k", 6000, 1), ev(2, "k", 0, 2)],
             [w("k", 5000, 10_000, 1)], [late(2, "k", 0, 2, 4999)]),
    Scenario("tumbling one ms before late", TUMBLING, [ev(1, "k", 5999, 1), ev(2, "k", 0, 2)],
             [w("k", 0, 5000, 2), w("k", 5000, 10_000, 1)], []),
    Scenario("tumbling allowed lateness keeps the window open", WindowSpec.of(allowed_lateness_ms=1),
             [ev(1, "k", 6000, 1), ev(2, "k", 0, 2)], [w("k", 0, 5000, 2), w("k", 5000, 10_000, 1)], []),
    Scenario("tumbling allowed lateness passed", WindowSpec.of(allowed_lateness_ms=1),
             [ev(1, "k", 6001, 1), ev(2, "k", 0, 2)], [w("k", 5000, 10_000, 1)], [late(2, "k", 0, 2, 5000)]),
    # one watermark for all keys, the maximum so far (not the previous event)
    Scenario("tumbling watermark is the max over all keys", TUMBLING,
             [ev(1, "a", 20_000, 1), ev(2, "b", 0, 2), ev(3, "a", 14_000, 3), ev(4, "b", 16_000, 4), ev(5, "a", -1, 5)],
             [w("a", 20_000, 25_000, 1), w("b", 15_000, 20_000, 4)],
             [late(2, "b", 0, 2, 18_999), late(3, "a", 14_000, 3, 18_999), late(5, "a", -1, 5, 18_999)]),
    Scenario("tumbling before 1970", TUMBLING,
             [ev(1, "a", -5001, 10), ev(2, "a", -1, 1), ev(3, "a", -5000, 3), ev(4, "a", 999, 4),
              ev(5, "a", -4000, 7), ev(6, "a", 1000, 8), ev(7, "a", -4500, 9)],
             [w("a", -10_000, -5000, 10), w("a", -5000, 0, 1, 3, 7), w("a", 0, 5000, 4, 8)],
             [late(7, "a", -4500, 9, -1)]),
    # sliding 10 s every 5 s: row 2 only in [0, 10000) ([-5000, 5000) is late), row 4 late in both,
    # row 5 only in [10000, 20000)
    Scenario("sliding counts an event in its windows that are not late", SLIDING,
             [ev(1, "k", 7000, 1), ev(2, "k", 2000, 2), ev(3, "k", 16_000, 3), ev(4, "k", 9000, 4), ev(5, "k", 12_000, 5)],
             [w("k", 0, 10_000, 1, 2), w("k", 5000, 15_000, 1), w("k", 10_000, 20_000, 3, 5), w("k", 15_000, 25_000, 3)],
             [late(4, "k", 9000, 4, 14_999)]),
    # size 7 not a multiple of slide 3: row 1 in [9,16) and [6,13); row 2 late in [3,10) and [0,7);
    # row 3 counted in [6,13) only
    Scenario("sliding size not a multiple of the slide", WindowSpec.of("sliding", size_ms=7, slide_ms=3, out_of_orderness_ms=0),
             [ev(1, "k", 10, 1), ev(2, "k", 4, 2), ev(3, "k", 6, 3)],
             [w("k", 6, 13, 1, 3), w("k", 9, 16, 1)], [late(2, "k", 4, 2, 9)]),
    # [0, 3000) and [3000, 6000) touch: one session
    Scenario("session windows that touch merge", SESSION, [ev(1, "k", 0, 1), ev(2, "k", 3000, 2)],
             [w("k", 0, 6000, 1, 2)], []),
    Scenario("session touching on the left merges", SESSION, [ev(1, "k", 3000, 1), ev(2, "k", 0, 2)],
             [w("k", 0, 6000, 1, 2)], []),
    Scenario("session one ms apart stays two", SESSION, [ev(1, "k", 0, 1), ev(2, "k", 3001, 2)],
             [w("k", 0, 3000, 1), w("k", 3001, 6001, 2)], []),
    # key x moves the watermark to 3999: k's [0, 3000) is closed; row 3 touches it but opens its own
    Scenario("session closed by the watermark takes no touching event", SESSION,
             [ev(1, "k", 0, 1), ev(2, "x", 5000, 9), ev(3, "k", 2000, 2)],
             [w("k", 0, 3000, 1), w("k", 2000, 5000, 2), w("x", 5000, 8000, 9)], []),
    # row 3 arrives behind row 2 and bridges the two open sessions [10000,13000) and [16000,19000)
    Scenario("session bridge merges two open sessions", WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=5000),
             [ev(1, "k", 10_000, 1), ev(2, "k", 16_000, 2), ev(3, "k", 13_000, 3)],
             [w("k", 10_000, 19_000, 1, 2, 3)], []),
    Scenario("session without the bridge", WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=5000),
             [ev(1, "k", 10_000, 1), ev(2, "k", 16_000, 2)],
             [w("k", 10_000, 13_000, 1), w("k", 16_000, 19_000, 2)], []),
    # W = 11999 before row 3: its own [8000, 11000) is late, but it touches the open [10000, 13000)
    Scenario("session late own window joins an open session", WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=0),
             [ev(1, "k", 10_000, 1), ev(2, "j", 12_000, 5), ev(3, "k", 8000, 2)],
             [w("j", 12_000, 15_000, 5), w("k", 8000, 13_000, 1, 2)], []),
    Scenario("session late own window touching exactly", WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=0),
             [ev(1, "k", 10_000, 1), ev(2, "j", 12_000, 5), ev(3, "k", 7000, 2)],
             [w("j", 12_000, 15_000, 5), w("k", 7000, 13_000, 1, 2)], []),
    Scenario("session late own window one ms short", WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=0),
             [ev(1, "k", 10_000, 1), ev(2, "j", 12_000, 5), ev(3, "k", 6999, 2)],
             [w("j", 12_000, 15_000, 5), w("k", 10_000, 13_000, 1)], [late(3, "k", 6999, 2, 11_999)]),
    # W = 2999 before row 3: [0, 3000) is closed without allowed lateness, open with 1 ms
    Scenario("session closed without allowed lateness", WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=0),
             [ev(1, "k", 0, 1), ev(2, "j", 3000, 5), ev(3, "k", 2500, 2)],
             [w("j", 3000, 6000, 5), w("k", 0, 3000, 1), w("k", 2500, 5500, 2)], []),
    Scenario("session allowed lateness keeps the session open",
             WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=0, allowed_lateness_ms=1),
             [ev(1, "k", 0, 1), ev(2, "j", 3000, 5), ev(3, "k", 2500, 2)],
             [w("j", 3000, 6000, 5), w("k", 0, 5500, 1, 2)], []),
    Scenario("session late event", SESSION, [ev(1, "k", 10_000, 1), ev(2, "k", 20_000, 2), ev(3, "k", 5000, 3)],
             [w("k", 10_000, 13_000, 1), w("k", 20_000, 23_000, 2)], [late(3, "k", 5000, 3, 18_999)]),
    # exact sums: 0.1 + 0.2 is 0.3, three times the largest amount does not overflow, +-0.0001 is 0
    Scenario("decimal sums are exact", TUMBLING,
             [ev(1, "k", 0, "0.1"), ev(2, "k", 1, "0.2"), ev(3, "m", 0, MAX), ev(4, "m", 1, MAX), ev(5, "m", 2, MAX),
              ev(6, "n", 0, "-0.0001"), ev(7, "n", 1, "0.0001")],
             [w("k", 0, 5000, "0.1", "0.2"), w("m", 0, 5000, MAX, MAX, MAX), w("n", 0, 5000, "-0.0001", "0.0001")], []),
]  # fmt: skip


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    result = replay(scenario.events, scenario.spec)
    assert result.windows == scenario.windows
    assert result.late == scenario.late


def test_lab_example_csv_is_the_scenario() -> None:
    with open(DATA / "lab_example.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    events = [(i, r["transaction_id"], utc_ms(r["timestamp"]), D(r["amount"])) for i, r in enumerate(rows, 1)]
    assert events == SCENARIOS[0].events
    result = replay(events)
    assert [float(sum_ / count) for _, _, _, count, sum_, _, _ in result.windows] == [150.0, 300.0]
    assert [w[3] for w in result.windows] == [2, 1]


def test_decimal_sums_are_exact_not_float() -> None:
    (k, m, n) = replay(SCENARIOS[-1].events).windows
    assert k[4] == D("0.3") and isinstance(k[4], Decimal)
    assert 0.1 + 0.2 != 0.3  # what a float sum would have given
    assert m[4] == D("299999999999999.9997") and n[4] == 0
    assert (n[5], n[6]) == (D("-0.0001"), D("0.0001"))


def test_contents_hold_each_windows_members_in_arrival_order() -> None:
    sliding = next(s for s in SCENARIOS if s.name.startswith("sliding counts"))
    result = replay(sliding.events, sliding.spec)
    assert list(result.contents) == [(k, s, e) for k, s, e, *_ in result.windows]
    assert result.contents[("k", 0, 10_000)] == [(7000, D(1)), (2000, D(2))]
    assert result.contents[("k", 10_000, 20_000)] == [(16_000, D(3)), (12_000, D(5))]
    bridge = next(s for s in SCENARIOS if s.name.startswith("session bridge"))
    assert replay(bridge.events, bridge.spec).contents == {
        ("k", 10_000, 19_000): [(10_000, 1), (16_000, 2), (13_000, 3)]
    }


def test_events_are_replayed_in_source_row_order_not_input_order() -> None:
    scenario = SCENARIOS[1]
    assert replay(list(reversed(scenario.events)), scenario.spec) == replay(scenario.events, scenario.spec)
    # rows numbered the other way round change the arrival order, and so the result
    swapped = [ev(2, "k", 6000, 1), ev(1, "k", 0, 2)]
    assert replay(swapped).late == [] and len(replay(swapped).windows) == 2


def test_duplicate_source_row_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate source_row 1"):
        replay([ev(1, "k", 0, 1), ev(2, "k", 5, 1), ev(1, "j", 1, 1)])


def test_invalid_spec_rejected() -> None:
    with pytest.raises(WindowSpecError, match="TXN_WINDOW_KIND"):
        replay([ev(1, "k", 0, 1)], WindowSpec(kind="hopping"))


def test_empty_replay_and_default_spec() -> None:
    assert replay([], SESSION) == ReplayResult(windows=[], late=[], contents={})
    assert replay(SCENARIOS[0].events) == replay(SCENARIOS[0].events, WindowSpec())


# --------------------------------------------------------------------------- #
# properties
# --------------------------------------------------------------------------- #
AMOUNTS = st.one_of(
    st.integers(-(10**18) + 1, 10**18 - 1).map(lambda units: D(units).scaleb(-4)),
    st.sampled_from([D("0.1"), D("0.2"), D("-0.0001"), D(0), D(MAX), D("-" + MAX)]),
)


@st.composite
def event_lists(draw, max_size: int = 40) -> list:
    rows = draw(st.lists(st.integers(-1000, 10_000), max_size=max_size, unique=True))
    base = draw(st.integers(-(10**12), 10**12))
    spread = draw(st.sampled_from([10, 3000, 30_000]))
    return [
        (row, draw(st.sampled_from("abc")), base + draw(st.integers(-spread, spread)), draw(AMOUNTS)) for row in rows
    ]


@st.composite
def aligned_specs(draw) -> WindowSpec:
    size = draw(st.integers(1, 8000))
    kind = draw(st.sampled_from(["tumbling", "sliding"]))
    slide = draw(st.integers(max(1, size // 20), size)) if kind == "sliding" else 0
    return WindowSpec.of(kind, size_ms=size, slide_ms=slide, out_of_orderness_ms=draw(st.integers(0, 3000)),
                         allowed_lateness_ms=draw(st.integers(0, 3000)))  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(events=event_lists(), spec=aligned_specs())
def test_aligned_windows_equal_a_brute_force_oracle(events, spec: WindowSpec) -> None:
    step = spec.slide_ms or spec.size_ms
    contents: dict[tuple, list] = {}
    expected_late = []
    highest = None
    for row, key, ts, amount in sorted(events):
        watermark = None if highest is None else highest - spec.out_of_orderness_ms - 1
        mine = [s for s in range(ts - spec.size_ms + 1, ts + 1) if s % step == 0]
        on_time = [s for s in mine if watermark is None or s + spec.size_ms - 1 + spec.allowed_lateness_ms > watermark]
        for start in on_time:
            contents.setdefault((key, start, start + spec.size_ms), []).append(amount)
        if not on_time:
            expected_late.append((row, key, ts, amount, watermark))
        highest = ts if highest is None else max(highest, ts)
    result = replay(events, spec)
    assert result.late == expected_late
    assert result.windows == [(*k, len(a), sum(a, D(0)), min(a), max(a)) for k, a in sorted(contents.items())]


@settings(max_examples=200, deadline=None)
@given(events=event_lists(), gap=st.integers(1, 5000))
def test_sessions_that_never_close_are_the_merged_intervals(events, gap: int) -> None:
    # an out-of-orderness longer than the whole span closes nothing before the end of input, so the
    # sessions are the classic merge of the intervals [ts, ts + gap) that overlap or touch, per key
    spec = WindowSpec.of("session", gap_ms=gap, out_of_orderness_ms=80_000)
    expected = []
    for key in sorted({e[1] for e in events}):
        merged: list[list] = []
        for ts, amount in sorted((e[2], e[3]) for e in events if e[1] == key):
            if merged and ts <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], ts + gap)
                merged[-1][2].append(amount)
            else:
                merged.append([ts, ts + gap, [amount]])
        expected += [(key, s, e, len(a), sum(a, D(0)), min(a), max(a)) for s, e, a in merged]
    result = replay(events, spec)
    assert result.late == []
    assert result.windows == expected


@settings(max_examples=200, deadline=None)
@given(events=event_lists(), gap=st.integers(1, 5000), ooo=st.integers(0, 3000), lateness=st.integers(0, 3000))
def test_session_invariants(events, gap: int, ooo: int, lateness: int) -> None:
    spec = WindowSpec.of("session", gap_ms=gap, out_of_orderness_ms=ooo, allowed_lateness_ms=lateness)
    result = replay(events, spec)
    by_row = sorted(events)
    # every event is in exactly one session or late
    assert sum(w[3] for w in result.windows) + len(result.late) == len(events)
    for (_key, start, end), members in result.contents.items():
        times = [ts for ts, _ in members]
        assert (start, end) == (min(times), max(times) + gap)
        # a session's members chain: sorted, each starts at or before the previous members' end
        reach = None
        for ts in sorted(times):
            assert reach is None or ts <= reach
            reach = ts + gap if reach is None else max(reach, ts + gap)
    for row, _key, ts, _amount, watermark in result.late:
        before = [e[2] for e in by_row if e[0] < row]
        assert watermark == max(before) - ooo - 1
        assert ts + gap - 1 + lateness <= watermark  # its own window was late


@settings(max_examples=100, deadline=None)
@given(events=event_lists(), spec=aligned_specs())
def test_sliding_with_slide_equal_to_size_is_tumbling(events, spec: WindowSpec) -> None:
    tumbling = WindowSpec.of("tumbling", size_ms=spec.size_ms, out_of_orderness_ms=spec.out_of_orderness_ms,
                             allowed_lateness_ms=spec.allowed_lateness_ms)  # fmt: skip
    sliding = WindowSpec.of("sliding", size_ms=spec.size_ms, slide_ms=spec.size_ms,
                            out_of_orderness_ms=spec.out_of_orderness_ms, allowed_lateness_ms=spec.allowed_lateness_ms)  # fmt: skip
    assert replay(events, sliding) == replay(events, tumbling)


@settings(max_examples=100, deadline=None)
@given(events=event_lists(), spec=aligned_specs(), extra=st.integers(1, 3000))
def test_more_allowed_lateness_never_adds_late_events(events, spec: WindowSpec, extra: int) -> None:
    lenient = WindowSpec.of(spec.kind, size_ms=spec.size_ms, slide_ms=spec.slide_ms,
                            out_of_orderness_ms=spec.out_of_orderness_ms,
                            allowed_lateness_ms=spec.allowed_lateness_ms + extra)  # fmt: skip
    assert {r[0] for r in replay(events, lenient).late} <= {r[0] for r in replay(events, spec).late}


@settings(max_examples=100, deadline=None)
@given(events=event_lists(), data=st.data())
def test_result_does_not_depend_on_the_order_of_the_list(events, data) -> None:
    spec = data.draw(st.one_of(aligned_specs(), st.integers(1, 5000).map(lambda g: WindowSpec.of("session", gap_ms=g))))
    shuffled = data.draw(st.permutations(events))
    assert replay(shuffled, spec) == replay(events, spec)
