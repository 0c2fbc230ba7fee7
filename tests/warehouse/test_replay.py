"""Tests for the plain-Python reference replay (warehouse.replay)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from fractions import Fraction
import math
from pathlib import Path

from hypothesis import given, settings, strategies as st
import pytest

from warehouse.replay import (
    ReplayConfig,
    ReplayResult,
    exact_mean,
    is_late,
    replay,
    window_start,
)

DATA = Path(__file__).resolve().parents[2] / "data"


def utc_ms(text: str) -> int:
    dt = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


# --------------------------------------------------------------------------- #
# Lab example
# --------------------------------------------------------------------------- #
LAB_EVENTS = [
    (1, "tx1", utc_ms("2024-05-11 10:00:00"), 100.0),
    (2, "tx1", utc_ms("2024-05-11 10:00:03"), 200.0),
    (3, "tx1", utc_ms("2024-05-11 10:00:06"), 300.0),
]


def test_lab_example_two_windows() -> None:
    result = replay(LAB_EVENTS, ReplayConfig())
    assert result.late == []
    assert result.windows == [
        ("tx1", utc_ms("2024-05-11 10:00:00"), utc_ms("2024-05-11 10:00:05"), 150.0, 2),
        ("tx1", utc_ms("2024-05-11 10:00:05"), utc_ms("2024-05-11 10:00:10"), 300.0, 1),
    ]


def test_lab_example_csv_matches_inline_events() -> None:
    from warehouse.synthetic import read_events

    assert read_events(DATA / "lab_example.csv") == LAB_EVENTS


# --------------------------------------------------------------------------- #
# window_start / is_late
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("ts", "size", "start"),
    [
        (0, 5000, 0),
        (4999, 5000, 0),
        (5000, 5000, 5000),
        (-1, 5000, -5000),
        (-4999, 5000, -5000),
        (-5000, 5000, -5000),
        (-5001, 5000, -10000),
        (7, 1, 7),
        (-7, 1, -7),
        (1715421603000, 5000, 1715421600000),
    ],
)
def test_window_start(ts: int, size: int, start: int) -> None:
    assert window_start(ts, size) == start


@given(st.integers(-(10**15), 10**15), st.integers(1, 10**7))
def test_window_start_contains_ts(ts: int, size: int) -> None:
    start = window_start(ts, size)
    assert start <= ts < start + size
    assert start % size == 0


def test_window_start_rejects_bad_size() -> None:
    with pytest.raises(ValueError):
        window_start(1, 0)


def test_is_late_without_watermark_is_never_late() -> None:
    assert not is_late(-(10**12), None, 5000, 0)


@pytest.mark.parametrize(
    ("ts", "watermark", "lateness", "late"),
    [
        # window [0, 5000): last ms 4999
        (0, 4999, 0, True),  # last ms == watermark -> late
        (0, 4998, 0, False),  # one ms before -> on time
        (0, 5000, 0, True),
        (0, 4999, 1, False),  # allowed lateness shifts the boundary
        (0, 5000, 1, True),
        (4999, 4999, 0, True),  # event exactly at the watermark, window ends there
        (5000, 4999, 0, False),  # one ms after: next window
        (4998, 4999, 0, True),  # one ms before
        (-1, -1, 0, True),  # window [-5000, 0): last ms -1
        (-1, -2, 0, False),
        (-5000, -1, 0, True),
        (-5001, -5001, 0, True),  # window [-10000, -5000)
        (-5001, -5002, 0, False),
    ],
)
def test_is_late_boundaries(ts: int, watermark: int, lateness: int, late: bool) -> None:
    assert is_late(ts, watermark, 5000, lateness) is late


# --------------------------------------------------------------------------- #
# Replay at exact boundaries
# --------------------------------------------------------------------------- #
def _late_rows(result: ReplayResult) -> list[int]:
    return [row[0] for row in result.late]


@pytest.mark.parametrize(
    ("leader_ts", "lateness", "late"),
    [
        # W = leader - 1000 - 1; event at ts 0 (window [0, 5000), last ms 4999)
        (6000, 0, True),  # W = 4999: exactly at the boundary -> late
        (5999, 0, False),  # W = 4998
        (6001, 0, True),  # W = 5000
        (6000, 1, False),  # lateness 1 moves the boundary to W = 5000
        (6001, 1, True),
        (6002, 2, True),
        (6001, 2, False),
    ],
)
def test_replay_boundary(leader_ts: int, lateness: int, late: bool) -> None:
    config = ReplayConfig(allowed_lateness_ms=lateness)
    events = [(1, "k", leader_ts, 1.0), (2, "k", 0, 2.0)]
    result = replay(events, config)
    assert _late_rows(result) == ([2] if late else [])
    if late:
        assert result.late == [(2, "k", 0, 2.0, leader_ts - 1001)]
        assert result.windows == [("k", 5000, 10000, 1.0, 1)]
    else:
        assert result.windows == [("k", 0, 5000, 2.0, 1), ("k", 5000, 10000, 1.0, 1)]


@pytest.mark.parametrize(
    ("ts", "late"),
    [(4999, True), (4998, True), (5000, False), (5001, False)],
)
def test_replay_event_at_watermark(ts: int, late: bool) -> None:
    # Leader 6000 -> W = 4999 for the second event.
    result = replay([(1, "k", 6000, 1.0), (2, "k", ts, 2.0)], ReplayConfig())
    assert _late_rows(result) == ([2] if late else [])


def test_zero_out_of_orderness() -> None:
    config = ReplayConfig(window_size_ms=10, out_of_orderness_ms=0)
    # W = 10 - 0 - 1 = 9 = last ms of window [0, 10) -> late
    assert _late_rows(replay([(1, "a", 10, 1.0), (2, "a", 0, 1.0)], config)) == [2]
    # W = 8 -> on time
    assert _late_rows(replay([(1, "a", 9, 1.0), (2, "a", 0, 1.0)], config)) == []


def test_negative_timestamps() -> None:
    events = [
        (1, "a", -5001, 10.0),  # window [-10000, -5000)
        (2, "a", -1, 1.0),  # [-5000, 0); W = -5001 - 1001
        (3, "a", -5000, 3.0),  # same window; W = -1 - 1001 = -1002 < -1
        (4, "b", 0, 4.0),  # [0, 5000)
        (5, "a", 6000, 5.0),  # [5000, 10000); W = 0 - 1001
        (6, "a", -4000, 7.0),  # W = 6000 - 1001 = 4999 >= -1 -> late
        (7, "a", -10001, 8.0),  # [-15000, -10000), late as well
    ]
    result = replay(events, ReplayConfig())
    assert result.windows == [
        ("a", -10000, -5000, 10.0, 1),
        ("a", -5000, 0, 2.0, 2),
        ("a", 5000, 10000, 5.0, 1),
        ("b", 0, 5000, 4.0, 1),
    ]
    assert result.late == [(6, "a", -4000, 7.0, 4999), (7, "a", -10001, 8.0, 4999)]


def test_negative_lateness_boundary() -> None:
    # Window [-5000, 0) has last ms -1: late iff W >= -1, i.e. leader >= 1000.
    assert _late_rows(replay([(1, "a", 1000, 1.0), (2, "a", -5000, 1.0)])) == [2]
    assert _late_rows(replay([(1, "a", 999, 1.0), (2, "a", -5000, 1.0)])) == []


def test_watermark_is_max_not_last() -> None:
    events = [(1, "a", 20000, 1.0), (2, "a", 0, 1.0), (3, "a", 14000, 1.0), (4, "a", 16000, 1.0)]
    result = replay(events, ReplayConfig())
    # Rows 2-4 are judged against max(...) - 1001 = 18999, not against the
    # previous row's timestamp: [10000, 15000) (last ms 14999) is closed,
    # [15000, 20000) (last ms 19999) is not.
    assert result.late == [(2, "a", 0, 1.0, 18999), (3, "a", 14000, 1.0, 18999)]
    assert result.windows == [("a", 15000, 20000, 1.0, 1), ("a", 20000, 25000, 1.0, 1)]


def test_first_event_never_late_and_keys_are_independent_windows() -> None:
    result = replay([(10, "b", -(10**12), 1.5), (11, "a", -(10**12), 2.5)], ReplayConfig())
    assert result.late == []  # W = -10**12 - 1001 is before the shared window end
    assert [w[0] for w in result.windows] == ["a", "b"]


def test_events_processed_in_source_row_order_not_input_order() -> None:
    events = [(2, "k", 0, 2.0), (1, "k", 6000, 1.0)]
    assert _late_rows(replay(events, ReplayConfig())) == [2]
    assert _late_rows(replay(list(reversed(events)), ReplayConfig())) == [2]


def test_duplicate_source_row_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate source_row"):
        replay([(1, "k", 0, 1.0), (1, "k", 1, 1.0)], ReplayConfig())


def test_empty_replay() -> None:
    assert replay([], ReplayConfig()) == ReplayResult(windows=[], late=[])


def test_default_config_used_when_omitted() -> None:
    assert replay(LAB_EVENTS) == replay(LAB_EVENTS, ReplayConfig())


# --------------------------------------------------------------------------- #
# ReplayConfig
# --------------------------------------------------------------------------- #
def test_config_defaults() -> None:
    config = ReplayConfig()
    assert (config.window_size_ms, config.out_of_orderness_ms, config.allowed_lateness_ms) == (
        5000,
        1000,
        0,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_size_ms": 0}, "window_size_ms must be > 0"),
        ({"window_size_ms": -5}, "window_size_ms must be > 0"),
        ({"out_of_orderness_ms": -1}, "out_of_orderness_ms must be >= 0"),
        ({"allowed_lateness_ms": -1}, "allowed_lateness_ms must be >= 0"),
        ({"window_size_ms": 5000.0}, "must be an int"),
        ({"allowed_lateness_ms": True}, "must be an int"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReplayConfig(**kwargs)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ReplayConfig().window_size_ms = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- #
# exact_mean
# --------------------------------------------------------------------------- #
def test_exact_mean_is_exact_where_naive_is_not() -> None:
    assert exact_mean([0.1, 0.1, 0.1]) == 0.1
    assert sum([0.1, 0.1, 0.1]) / 3 != 0.1  # the naive mean is off by an ulp
    assert exact_mean([1e16, 1.0, -1e16]) == 1 / 3
    assert exact_mean([1e308, 1e308]) == 1e308  # no overflow in the sum
    assert exact_mean([5e-324, 0.0]) == 0.0  # rounds half to even, once


def test_exact_mean_rejects_empty_and_non_finite() -> None:
    with pytest.raises(ValueError):
        exact_mean([])
    with pytest.raises(ValueError):
        exact_mean([1.0, math.nan])
    with pytest.raises(ValueError):
        exact_mean([math.inf])


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_exact_mean_order_independent(xs: list[float], rnd) -> None:
    shuffled = list(xs)
    rnd.shuffle(shuffled)
    assert exact_mean(shuffled) == exact_mean(xs)
    assert exact_mean(reversed(xs)) == exact_mean(xs)


@given(st.lists(finite, min_size=1, max_size=40))
def test_exact_mean_is_correctly_rounded(xs: list[float]) -> None:
    exact = sum(map(Fraction, xs)) / len(xs)
    got = exact_mean(xs)
    assert min(xs) <= got <= max(xs)
    # No double is strictly closer to the exact mean than the result.
    for neighbour in (math.nextafter(got, -math.inf), math.nextafter(got, math.inf)):
        if math.isfinite(neighbour):
            assert abs(Fraction(got) - exact) <= abs(Fraction(neighbour) - exact)


# --------------------------------------------------------------------------- #
# Properties of replay
# --------------------------------------------------------------------------- #
configs = st.builds(
    ReplayConfig,
    window_size_ms=st.integers(1, 10_000),
    out_of_orderness_ms=st.integers(0, 3_000),
    allowed_lateness_ms=st.integers(0, 3_000),
)


@st.composite
def event_lists(draw) -> list[tuple[int, str, int, float]]:
    n = draw(st.integers(0, 60))
    rows = draw(st.lists(st.integers(-1000, 10_000), min_size=n, max_size=n, unique=True))
    base = draw(st.integers(-20_000, 20_000))
    events = []
    for row in rows:
        ts = base + draw(st.integers(-25_000, 25_000))
        events.append((row, draw(st.sampled_from(["a", "b", "c"])), ts, draw(finite)))
    return events


@settings(max_examples=200)
@given(event_lists(), configs)
def test_replay_properties(events, config: ReplayConfig) -> None:
    result = replay(events, config)
    size = config.window_size_ms

    # Conservation: every event is either counted in exactly one window or late.
    assert len(events) == sum(w[4] for w in result.windows) + len(result.late)

    # Output ordering and shape.
    assert [(w[0], w[1]) for w in result.windows] == sorted((w[0], w[1]) for w in result.windows)
    assert len({(w[0], w[1]) for w in result.windows}) == len(result.windows)
    assert [r[0] for r in result.late] == sorted(r[0] for r in result.late)
    for key, start, end, avg, count in result.windows:
        assert start % size == 0 and end == start + size and count >= 1

    # Independent per-event oracle for lateness and watermarks.
    ordered = sorted(events)
    late_expected = []
    for i, (row, key, ts, amount) in enumerate(ordered):
        if i == 0:
            continue
        wm = max(e[2] for e in ordered[:i]) - config.out_of_orderness_ms - 1
        last_ms = (ts - ts % size) + size - 1
        if last_ms + config.allowed_lateness_ms <= wm:
            late_expected.append((row, key, ts, amount, wm))
    assert result.late == late_expected

    # Window averages from the on-time events.
    late_rows = {r[0] for r in late_expected}
    groups: dict[tuple[str, int], list[float]] = {}
    for row, key, ts, amount in ordered:
        if row not in late_rows:
            groups.setdefault((key, ts - ts % size), []).append(amount)
    assert {(w[0], w[1]): (w[3], w[4]) for w in result.windows} == {
        g: (float(sum(map(Fraction, xs)) / len(xs)), len(xs)) for g, xs in groups.items()
    }


@given(event_lists(), st.randoms(use_true_random=False))
def test_replay_independent_of_input_order(events, rnd) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert replay(shuffled, ReplayConfig()) == replay(events, ReplayConfig())


@given(event_lists(), st.integers(0, 2_000))
def test_more_allowed_lateness_never_adds_late_events(events, extra: int) -> None:
    strict = {r[0] for r in replay(events, ReplayConfig()).late}
    lenient = {r[0] for r in replay(events, ReplayConfig(allowed_lateness_ms=extra)).late}
    assert lenient <= strict
