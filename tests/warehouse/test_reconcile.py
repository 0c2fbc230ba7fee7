"""Tests for the DuckDB SQL recomputation (warehouse.reconcile), cross-checked
against the plain-Python reference (warehouse.replay)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
import math
from pathlib import Path

import duckdb
from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np
import pandas as pd
import pytest

from warehouse.reconcile import (
    LATE_COLUMNS,
    WINDOW_COLUMNS,
    _exact_mean_udf,
    compare_late_events,
    compare_tables,
    compare_window_averages,
    expected_late_events,
    expected_window_averages,
    register_exact_mean,
)
from warehouse.replay import ReplayConfig, ReplayResult, replay
from warehouse.synthetic import read_events

DATA = Path(__file__).resolve().parents[2] / "data"

CREATE_TRANSACTIONS = """
CREATE TABLE transactions (
    source_file VARCHAR,
    source_row BIGINT,
    transaction_id VARCHAR,
    key VARCHAR,
    event_time TIMESTAMPTZ,
    event_time_ms BIGINT,
    amount DOUBLE
)
"""

Event = tuple[int, str, int, float]


def new_db(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(CREATE_TRANSACTIONS)
    return con


def load(con: duckdb.DuckDBPyConnection, events: Iterable[Event], source_file: str) -> None:
    frame = pd.DataFrame(
        list(events), columns=["source_row", "key", "event_time_ms", "amount"]
    ).astype({"source_row": "int64", "key": "object", "event_time_ms": "int64", "amount": "float64"})
    frame.insert(0, "source_file", source_file)
    con.register("_events", frame)
    try:
        con.execute(
            """
            INSERT INTO transactions
            SELECT source_file, source_row, key, key, epoch_ms(event_time_ms)::TIMESTAMPTZ,
                   event_time_ms, amount
            FROM _events
            """
        )
    finally:
        con.unregister("_events")


def windows_frame(result: ReplayResult) -> pd.DataFrame:
    return pd.DataFrame(result.windows, columns=WINDOW_COLUMNS).astype(
        {"window_start_ms": "int64", "window_end_ms": "int64", "avg_amount": "float64",
         "txn_count": "int64"}
    )


def late_frame(result: ReplayResult) -> pd.DataFrame:
    return pd.DataFrame(result.late, columns=LATE_COLUMNS).astype(
        {"source_row": "int64", "event_time_ms": "int64", "amount": "float64",
         "watermark_ms": "int64"}
    )


def sql_result(con, config: ReplayConfig, source_file: str | None) -> tuple[list, list]:
    windows = expected_window_averages(con, config, source_file)
    late = expected_late_events(con, config, source_file)
    return (
        list(windows.itertuples(index=False, name=None)),
        list(late.itertuples(index=False, name=None)),
    )


def bits(x: float) -> int:
    return int(np.float64(x).view(np.int64))


def assert_same(sql: tuple[list, list], ref: ReplayResult) -> None:
    sql_windows, sql_late = sql
    assert [w[:3] + w[4:] for w in sql_windows] == [w[:3] + w[4:] for w in ref.windows]
    assert [bits(w[3]) for w in sql_windows] == [bits(w[3]) for w in ref.windows]
    assert sql_late == ref.late


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = new_db(tmp_path / "reconcile.duckdb")
    yield connection
    connection.close()


def utc_ms(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1_000_000)


# --------------------------------------------------------------------------- #
# Hand-built cases
# --------------------------------------------------------------------------- #
def test_lab_example(con) -> None:
    load(con, read_events(DATA / "lab_example.csv"), "lab_example.csv")
    windows = expected_window_averages(con, ReplayConfig(), "lab_example.csv")
    assert list(windows.columns) == WINDOW_COLUMNS
    assert list(windows.itertuples(index=False, name=None)) == [
        ("tx1", utc_ms("2024-05-11 10:00:00"), utc_ms("2024-05-11 10:00:05"), 150.0, 2),
        ("tx1", utc_ms("2024-05-11 10:00:05"), utc_ms("2024-05-11 10:00:10"), 300.0, 1),
    ]
    late = expected_late_events(con, ReplayConfig(), "lab_example.csv")
    assert list(late.columns) == LATE_COLUMNS and late.empty


@pytest.mark.parametrize(
    ("leader_ts", "ts", "lateness", "late"),
    [
        (6000, 0, 0, True),  # W = 4999 == last ms of [0, 5000)
        (5999, 0, 0, False),
        (6001, 0, 0, True),
        (6000, 0, 1, False),
        (6001, 0, 1, True),
        (6000, 4999, 0, True),  # event exactly at W
        (6000, 5000, 0, False),  # one ms after
        (6000, 4998, 0, True),  # one ms before
        (1000, -5000, 0, True),  # negative window [-5000, 0): last ms -1 == W
        (999, -5000, 0, False),
        (1000, -1, 0, True),
        (-4000, -10000, 0, True),  # [-10000, -5000): last ms -5001 == W
        (-4001, -10000, 0, False),
        (-4000, -10000, 1, False),
        (-3999, -10000, 1, True),
    ],
)
def test_lateness_boundaries(con, leader_ts: int, ts: int, lateness: int, late: bool) -> None:
    config = ReplayConfig(allowed_lateness_ms=lateness)
    events = [(1, "k", leader_ts, 1.0), (2, "k", ts, 2.0)]
    load(con, events, "f.csv")
    windows, late_rows = sql_result(con, config, "f.csv")
    assert [r[0] for r in late_rows] == ([2] if late else [])
    if late:
        assert late_rows == [(2, "k", ts, 2.0, leader_ts - 1001)]
    assert_same((windows, late_rows), replay(events, config))


def test_negative_timestamps_window_starts(con) -> None:
    events = [(i, "n", ts, 1.0) for i, ts in enumerate([-1, -4999, -5000, -5001, -9999, -10000])]
    load(con, events, "neg.csv")
    config = ReplayConfig(out_of_orderness_ms=100_000)  # nothing late
    windows = expected_window_averages(con, config, "neg.csv")
    assert list(windows[["window_start_ms", "window_end_ms", "txn_count"]].itertuples(
        index=False, name=None
    )) == [(-10000, -5000, 3), (-5000, 0, 3)]


def test_rows_processed_in_source_row_order(con) -> None:
    # Inserted out of order: the watermark follows source_row, not insertion order.
    load(con, [(2, "k", 0, 2.0), (1, "k", 6000, 1.0)], "f.csv")
    late = expected_late_events(con, ReplayConfig(), "f.csv")
    assert late["source_row"].tolist() == [2]


def test_files_are_replayed_independently(con) -> None:
    a = [(1, "k", 6000, 1.0), (2, "k", 0, 2.0)]  # row 2 late within file a
    b = [(1, "k", 0, 4.0), (2, "k", 1, 6.0)]  # on time within file b
    load(con, a, "a.csv")
    load(con, b, "b.csv")
    config = ReplayConfig()
    assert_same(sql_result(con, config, "a.csv"), replay(a, config))
    assert_same(sql_result(con, config, "b.csv"), replay(b, config))

    everything = expected_window_averages(con, config)
    assert list(everything.columns) == ["source_file", *WINDOW_COLUMNS]
    assert list(everything.itertuples(index=False, name=None)) == [
        ("a.csv", "k", 5000, 10000, 1.0, 1),
        ("b.csv", "k", 0, 5000, 5.0, 2),
    ]
    late_all = expected_late_events(con, config)
    assert list(late_all.columns) == ["source_file", *LATE_COLUMNS]
    assert list(late_all.itertuples(index=False, name=None)) == [("a.csv", 2, "k", 0, 2.0, 4999)]


def test_source_file_is_a_parameter_not_sql(con) -> None:
    name = "it's; DROP TABLE transactions; --.csv"
    load(con, [(1, "k", 0, 1.0)], name)
    windows = expected_window_averages(con, ReplayConfig(), name)
    assert windows["txn_count"].tolist() == [1]
    assert con.execute("SELECT count(*) FROM transactions").fetchone() == (1,)


def test_unknown_file_gives_empty_typed_frames(con) -> None:
    load(con, [(1, "k", 0, 1.0)], "f.csv")
    windows = expected_window_averages(con, ReplayConfig(), "other.csv")
    late = expected_late_events(con, ReplayConfig(), "other.csv")
    assert windows.empty and list(windows.columns) == WINDOW_COLUMNS
    assert late.empty and list(late.columns) == LATE_COLUMNS
    assert windows["txn_count"].dtype == np.int64 and late["watermark_ms"].dtype == np.int64


def test_exact_mean_in_sql_is_exact(con) -> None:
    load(con, [(1, "k", 0, 1e16), (2, "k", 1, 1.0), (3, "k", 2, -1e16)], "f.csv")
    windows = expected_window_averages(con, ReplayConfig(), "f.csv")
    assert windows["avg_amount"].tolist() == [1 / 3]


def test_invalid_config_rejected(con) -> None:
    class Bad:
        window_size_ms = 0
        out_of_orderness_ms = 0
        allowed_lateness_ms = 0

    with pytest.raises(ValueError):
        expected_window_averages(con, Bad())


# --------------------------------------------------------------------------- #
# UDF
# --------------------------------------------------------------------------- #
def test_register_exact_mean_is_idempotent() -> None:
    con = duckdb.connect()
    register_exact_mean(con)
    register_exact_mean(con)
    assert con.execute("SELECT exact_mean([0.1, 0.1, 0.1]::DOUBLE[])").fetchone() == (0.1,)
    assert con.execute("SELECT exact_mean(NULL::DOUBLE[])").fetchone() == (None,)


def test_register_exact_mean_replaces_a_foreign_udf() -> None:
    con = duckdb.connect()
    con.create_function("exact_mean", lambda xs: -1.0, ["DOUBLE[]"], "DOUBLE")
    register_exact_mean(con)
    assert con.execute("SELECT exact_mean([1.0, 2.0]::DOUBLE[])").fetchone() == (1.5,)


def test_exact_mean_udf_rejects_null_and_non_finite() -> None:
    with pytest.raises(ValueError):
        _exact_mean_udf([1.0, None])
    with pytest.raises((ValueError, OverflowError)):
        _exact_mean_udf([math.inf])
    assert _exact_mean_udf([]) is None


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=50))
def test_exact_mean_udf_matches_fraction(xs: list[float]) -> None:
    expected = float(sum(map(Fraction, xs)) / len(xs))
    assert bits(_exact_mean_udf(xs)) == bits(expected)
    assert bits(_exact_mean_udf(list(reversed(xs)))) == bits(expected)


# --------------------------------------------------------------------------- #
# Property: SQL recomputation == Python reference
# --------------------------------------------------------------------------- #
@st.composite
def event_lists(draw) -> list[Event]:
    n = draw(st.integers(0, 50))
    rows = draw(st.lists(st.integers(-100, 100_000), min_size=n, max_size=n, unique=True))
    base = draw(st.one_of(st.just(0), st.integers(-(10**13), 10**13)))
    spread = draw(st.sampled_from([10, 3_000, 30_000]))
    pool: list[tuple[str, int, float]] = []
    events: list[Event] = []
    for row in rows:
        if pool and draw(st.booleans()) and draw(st.booleans()):
            key, ts, amount = draw(st.sampled_from(pool))  # exact duplicate event
        else:
            key = draw(st.sampled_from(["a", "b", "tx0001", "ü"]))
            ts = base + draw(st.integers(-spread, spread))  # ties likely for spread 10
            amount = draw(st.one_of(finite, st.sampled_from([0.1, 100.0, 19.99, -0.0])))
            pool.append((key, ts, amount))
        events.append((row, key, ts, amount))
    return events


configs = st.builds(
    ReplayConfig,
    window_size_ms=st.sampled_from([1, 7, 1000, 5000]) | st.integers(1, 20_000),
    out_of_orderness_ms=st.sampled_from([0, 1, 1000]) | st.integers(0, 5_000),
    allowed_lateness_ms=st.sampled_from([0, 1]) | st.integers(0, 5_000),
)


@pytest.fixture(scope="module")
def shared_con(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    connection = new_db(tmp_path_factory.mktemp("reconcile") / "property.duckdb")
    yield connection
    connection.close()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_lists(), other=event_lists(), config=configs)
def test_sql_agrees_with_replay(shared_con, events, other, config) -> None:
    shared_con.execute("DELETE FROM transactions")
    load(shared_con, events, "main.csv")
    load(shared_con, other, "other.csv")  # must not influence main.csv
    ref = replay(events, config)
    windows = expected_window_averages(shared_con, config, "main.csv")
    late = expected_late_events(shared_con, config, "main.csv")

    assert_same(
        (
            list(windows.itertuples(index=False, name=None)),
            list(late.itertuples(index=False, name=None)),
        ),
        ref,
    )
    assert len(events) == sum(w[4] for w in ref.windows) + len(ref.late)
    assert compare_window_averages(windows_frame(ref), windows)["equal"]
    assert compare_late_events(late_frame(ref), late)["equal"]


# --------------------------------------------------------------------------- #
# Comparison helpers
# --------------------------------------------------------------------------- #
def _expected() -> pd.DataFrame:
    return pd.DataFrame(
        [("a", 0, 5000, 1.5, 2), ("a", 5000, 10000, 0.1, 1), ("b", -5000, 0, 3.0, 1)],
        columns=WINDOW_COLUMNS,
    )


def test_compare_windows_equal() -> None:
    actual = _expected().sample(frac=1.0, random_state=1)  # row order does not matter
    actual["txn_count"] = actual["txn_count"].astype("int32")
    report = compare_window_averages(actual, _expected())
    assert report["equal"] is True
    assert report["windows_compared"] == 3
    assert report["max_abs_diff"] == 0.0
    assert report["missing"] == report["unexpected"] == report["count_mismatches"] == 0


def test_compare_windows_one_ulp_is_a_mismatch() -> None:
    actual = _expected()
    actual.loc[1, "avg_amount"] = math.nextafter(0.1, 1.0)
    report = compare_window_averages(actual, _expected())
    assert report["equal"] is False
    assert report["avg_mismatches"] == 1
    assert 0 < report["max_abs_diff"] < 1e-16


def test_compare_windows_missing_unexpected_counts() -> None:
    actual = _expected().drop(index=2)
    actual.loc[0, "txn_count"] = 3
    extra = pd.DataFrame([("c", 0, 5000, 1.0, 1)], columns=WINDOW_COLUMNS)
    report = compare_window_averages(pd.concat([actual, extra]), _expected())
    assert (report["missing"], report["unexpected"], report["count_mismatches"]) == (1, 1, 1)
    assert report["windows_compared"] == 2 and report["equal"] is False
    assert report["examples"]


def test_compare_windows_duplicates_are_not_equal() -> None:
    actual = pd.concat([_expected(), _expected().iloc[[0]]])
    report = compare_window_averages(actual, _expected())
    assert report["duplicates_actual"] == 1 and report["equal"] is False


def test_compare_windows_uses_source_file_when_both_have_it() -> None:
    exp = _expected().assign(source_file="x.csv")
    act = _expected().assign(source_file="y.csv")
    assert compare_window_averages(act, exp)["equal"] is False
    assert compare_window_averages(act.drop(columns="source_file"), exp)["equal"] is True


def test_compare_late_events() -> None:
    exp = pd.DataFrame([(3, "a", 0, 1.0, 4999), (9, "b", 5, 2.0, 5000)], columns=LATE_COLUMNS)
    assert compare_late_events(exp.iloc[::-1], exp)["equal"] is True
    # Only source_row sets are compared; the actual side may lack other columns.
    assert compare_late_events(pd.DataFrame({"source_row": [9, 3]}), exp)["equal"] is True
    report = compare_late_events(pd.DataFrame({"source_row": [3, 4]}), exp)
    assert (report["missing"], report["unexpected"], report["equal"]) == (1, 1, False)
    empty = compare_late_events(exp.iloc[:0], exp.iloc[:0])
    assert empty["equal"] is True and empty["late_expected"] == 0


# --------------------------------------------------------------------------- #
# Bundled sample
# --------------------------------------------------------------------------- #
def test_sample_file_sql_matches_replay(con) -> None:
    events = read_events(DATA / "sample_transactions.csv")
    load(con, events, "sample_transactions.csv")
    config = ReplayConfig()
    ref = replay(events, config)
    windows = expected_window_averages(con, config, "sample_transactions.csv")
    late = expected_late_events(con, config, "sample_transactions.csv")
    report = compare_window_averages(windows, windows_frame(ref))
    assert report["equal"], report
    assert report["windows_compared"] == len(ref.windows)
    assert compare_late_events(late, late_frame(ref))["equal"]
    assert_same(sql_result(con, config, "sample_transactions.csv"), ref)
    assert len(events) == int(windows["txn_count"].sum()) + len(late)


def test_compare_late_events_checks_every_shared_column():
    base = pd.DataFrame(
        {"source_row": [3, 9], "key": ["a", "b"], "event_time_ms": [10, 20], "amount": [1.5, 2.5], "watermark_ms": [99, 99]}
    )
    assert compare_late_events(base.copy(), base)["equal"]
    for column, value in (("key", "z"), ("event_time_ms", 11), ("watermark_ms", 98), ("amount", 1.5000000000000002)):
        changed = base.copy()
        changed.loc[0, column] = value
        report = compare_late_events(changed, base)
        assert report["value_mismatches"] == 1 and report["equal"] is False, column
    signed_zero = base.copy()
    signed_zero["amount"] = [0.0, 2.5]
    negative_zero = signed_zero.copy()
    negative_zero["amount"] = [-0.0, 2.5]
    assert compare_late_events(negative_zero, signed_zero)["value_mismatches"] == 1


# --------------------------------------------------------------------------- #
# compare_tables: the same reports, computed inside DuckDB
# --------------------------------------------------------------------------- #
_TABLES_FILE = "tables.csv"


def _tables_events() -> list[Event]:
    events = read_events(DATA / "sample_transactions.csv")[:3000]
    # a window whose exact mean is 0.0 (so -0.0 is a one-bit mismatch) and a one-row window of -0.0
    return [*events, (10_001, "zero", 4_102_444_800_000, 1.5), (10_002, "zero", 4_102_444_800_001, -1.5),
            (10_003, "negzero", 4_102_444_900_000, -0.0)]  # fmt: skip


def _write_tables(con, windows: pd.DataFrame, late: pd.DataFrame) -> None:
    con.execute("CREATE OR REPLACE TABLE window_averages (source_file VARCHAR, key VARCHAR, window_start_ms BIGINT, "
                "window_end_ms BIGINT, avg_amount DOUBLE, txn_count BIGINT)")  # fmt: skip
    con.execute("CREATE OR REPLACE TABLE late_events (source_file VARCHAR, source_row BIGINT, key VARCHAR, "
                "event_time_ms BIGINT, amount DOUBLE, watermark_ms BIGINT)")  # fmt: skip
    for table, frame in (("window_averages", windows), ("late_events", late)):
        con.register("_frame", frame)
        con.execute(f"INSERT INTO {table} SELECT $f, * FROM _frame", {"f": _TABLES_FILE})
        # another file's rows must not count
        con.execute(f"INSERT INTO {table} SELECT 'other.csv', * FROM _frame")
        con.unregister("_frame")


def _corruptions(windows: pd.DataFrame, late: pd.DataFrame):
    def w(frame=windows, l=late):
        return frame.copy(), l.copy()

    yield "none", w()
    yield "missing window", w(windows.drop(index=windows.index[5]))
    extra = pd.DataFrame([("nobody", 0, 5000, 1.0, 1)], columns=WINDOW_COLUMNS)
    yield "unexpected window", w(pd.concat([windows, extra], ignore_index=True))
    frame = windows.copy()
    frame.loc[frame.index[7], "txn_count"] += 1
    yield "count", w(frame)
    frame = windows.copy()
    frame.loc[frame.index[9], "avg_amount"] = math.nextafter(frame.loc[frame.index[9], "avg_amount"], math.inf)
    yield "one ulp", w(frame)
    frame = windows.copy()
    zero = frame.index[frame["key"] == "zero"][0]
    assert frame.loc[zero, "avg_amount"] == 0.0 and not math.copysign(1, frame.loc[zero, "avg_amount"]) < 0
    frame.loc[zero, "avg_amount"] = -0.0
    yield "negative zero", w(frame)
    yield "duplicate window", w(pd.concat([windows, windows.iloc[[3]]], ignore_index=True))
    yield "missing late", w(l=late.drop(index=late.index[0]))
    extra_late = pd.DataFrame([(999_999, "x", 0, 1.0, 5)], columns=LATE_COLUMNS)
    yield "unexpected late", w(l=pd.concat([late, extra_late], ignore_index=True))
    for column, change in (("key", lambda v: v + "!"), ("event_time_ms", lambda v: v + 1),
                           ("watermark_ms", lambda v: v - 1), ("amount", lambda v: -v)):  # fmt: skip
        frame = late.copy()
        frame.loc[frame.index[1], column] = change(frame.loc[frame.index[1], column])
        yield f"late {column}", w(l=frame)
    yield "duplicate late", w(l=pd.concat([late, late.iloc[[2]]], ignore_index=True))


def test_compare_tables_agrees_with_the_frame_comparisons(con) -> None:
    events = _tables_events()
    load(con, events, _TABLES_FILE)
    config = ReplayConfig()
    ref = replay(events, config)
    windows, late = windows_frame(ref), late_frame(ref)
    assert len(late) > 3
    negzero = windows[windows["key"] == "negzero"]["avg_amount"].tolist()
    assert negzero == [0.0] and math.copysign(1, negzero[0]) > 0  # the mean of {-0.0} is +0.0 everywhere
    seen_unequal = 0
    for name, (actual_windows, actual_late) in _corruptions(windows, late):
        _write_tables(con, actual_windows, actual_late)
        got_windows, got_late = compare_tables(con, config, _TABLES_FILE)
        want_windows = compare_window_averages(actual_windows, windows)
        want_late = compare_late_events(actual_late, late)
        for got, want in ((got_windows, want_windows), (got_late, want_late)):
            assert {k: v for k, v in got.items() if k != "examples"} == {
                k: v for k, v in want.items() if k != "examples"
            }, name
            assert bool(got["examples"]) == (not got["equal"]), name
        assert (got_windows["equal"] and got_late["equal"]) == (name == "none"), name
        seen_unequal += not (got_windows["equal"] and got_late["equal"])
    assert seen_unequal == 13
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '_expected%'").fetchall() == [(0,)]
