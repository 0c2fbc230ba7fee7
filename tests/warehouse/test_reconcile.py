"""Tests for the DuckDB recomputation (warehouse.reconcile): it equals the plain-Python reference
(warehouse.replay) on the hand-computed scenarios and on random data for every window kind, and
`compare_tables` finds every kind of corruption of the loaded tables."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import transactions_db
from tests.flink_jobs.disorder import disordered_events
from tests.warehouse.test_replay import SCENARIOS, Scenario
from warehouse import flink_output, schema
from warehouse.reconcile import OverlappedRecomputation, compare_tables, expected_late_events, expected_windows
from warehouse.replay import ReplayResult, replay
from warehouse.windows import WindowSpec, WindowSpecError

D = Decimal
FILE = "input.csv"


def insert_events(con: duckdb.DuckDBPyConnection, events, source_file: str) -> None:
    """More transactions in an existing database (the same columns as tests.conftest.transactions_db)."""
    frame = pd.DataFrame([(row, key, ts, str(amount)) for row, key, ts, amount in events],
                         columns=["source_row", "key", "event_time_ms", "amount"])  # fmt: skip
    con.register("_events", frame)
    try:
        con.execute(
            "INSERT INTO transactions SELECT ?, source_row, source_row, key, key, "
            "epoch_ms(event_time_ms)::TIMESTAMPTZ, event_time_ms, amount::DECIMAL(18,4) FROM _events",
            [source_file],
        )
    finally:
        con.unregister("_events")


def write_job_output(directory: Path, result: ReplayResult) -> Path:
    """The reference result in the Flink job's output format (flink_jobs/window_job.py)."""
    (directory / "windows").mkdir(parents=True, exist_ok=True)
    (directory / "late").mkdir(parents=True, exist_ok=True)
    hexed = lambda key: key.encode("utf-8").hex().upper()  # noqa: E731
    (directory / "windows" / "part-0.csv").write_text(
        "".join(f"{hexed(k)},{s},{e},{n},{total:f},{lo:f},{hi:f}\n" for k, s, e, n, total, lo, hi in result.windows)
    )
    (directory / "late" / "part-0.csv").write_text(
        "".join(f"{row},{ts},{amount:f},{wm},{hexed(k)}\n" for row, k, ts, amount, wm in result.late)
    )
    return directory


def load_reference(con, directory: Path, spec: WindowSpec, events, source_file: str = FILE) -> ReplayResult:
    """Replay `events` with the reference and load it into window_averages and late_events exactly as
    the pipeline loads the Flink job's output (warehouse.flink_output.load_output)."""
    result = replay(events, spec)
    flink_output.load_output(con, write_job_output(directory, result), source_file, spec)
    return result


def late_rows(con, spec: WindowSpec, source_file: str = FILE) -> list[tuple]:
    """The recomputed late events without their window columns, like ReplayResult.late."""
    return [row[:5] for row in expected_late_events(con, spec, source_file)]


# --------------------------------------------------------------------------- #
# the hand-computed scenarios
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(tmp_path, scenario: Scenario) -> None:
    con = transactions_db(tmp_path / "w.duckdb", scenario.events)
    assert expected_windows(con, scenario.spec, FILE) == scenario.windows
    assert late_rows(con, scenario.spec) == scenario.late


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("tumbling late event", (0, 5000)),
        ("tumbling before 1970", (-5000, 0)),
        ("sliding counts an event in its windows that are not late", (5000, 15_000)),  # the latest of its windows
        ("sliding size not a multiple of the slide", (3, 10)),
        ("session late event", (5000, 8000)),  # its own window
    ],
)
def test_late_events_carry_their_latest_window(tmp_path, name: str, window: tuple[int, int]) -> None:
    scenario = next(s for s in SCENARIOS if s.name == name)
    con = transactions_db(tmp_path / "w.duckdb", scenario.events)
    (row,) = expected_late_events(con, scenario.spec, FILE)
    assert row[5:] == window


def test_source_rows_give_the_order_not_the_insert_order(tmp_path) -> None:
    con = transactions_db(tmp_path / "w.duckdb", [(2, "k", 0, D(2)), (1, "k", 6000, D(1))])
    assert late_rows(con, WindowSpec()) == [(2, "k", 0, D(2), 4999)]


@pytest.mark.parametrize("spec", [WindowSpec(), WindowSpec.of("sliding", size_ms=5000, slide_ms=5000),
                                  WindowSpec.of("sliding", size_ms=10_000, slide_ms=5000)], ids=lambda s: s.describe())  # fmt: skip
def test_a_window_whose_every_event_is_late_is_no_window(tmp_path, spec: WindowSpec) -> None:
    """Tumbling (and sliding with slide = size) take the one-pass path, wider sliding windows the pairs."""
    events = [(1, "k", 12_000, D(1)), (2, "k", 1_000, D(2)), (3, "k", 1_500, D(3)), (4, "j", 2_000, D(4))]
    con = transactions_db(tmp_path / "w.duckdb", events)
    reference = replay(events, spec)
    assert expected_windows(con, spec, FILE) == sorted(reference.windows)
    assert late_rows(con, spec) == sorted(reference.late)
    assert [row[0] for row in reference.late] == [2, 3, 4]  # late for every window they belong to
    assert reference.windows and all(w[1] >= 5_000 for w in reference.windows)  # so those windows are none


def test_files_are_replayed_independently(tmp_path) -> None:
    a = [(1, "k", 6000, D(1)), (2, "k", 0, D(2))]
    b = [(1, "k", 0, D(4)), (2, "k", 1, D(6))]
    con = transactions_db(tmp_path / "w.duckdb", a, source_file="a.csv")
    insert_events(con, b, "b.csv")
    for spec in (WindowSpec(), WindowSpec.of("session", gap_ms=3000)):
        for name, events in (("a.csv", a), ("b.csv", b)):
            assert expected_windows(con, spec, name) == replay(events, spec).windows
            assert late_rows(con, spec, name) == replay(events, spec).late
    assert expected_windows(con, WindowSpec(), "missing.csv") == []
    assert expected_late_events(con, WindowSpec(), "missing.csv") == []


def test_source_file_is_a_parameter_not_sql(tmp_path) -> None:
    name = "it's; DROP TABLE transactions; --.csv"
    con = transactions_db(tmp_path / "w.duckdb", [(1, "k", 0, D(1)), (2, "k", 9000, D(2)), (3, "k", 1, D(3))],
                          source_file=name)  # fmt: skip
    spec = WindowSpec()
    assert [w[3] for w in expected_windows(con, spec, name)] == [1, 1]
    load_reference(con, tmp_path / "out", spec, [(1, "k", 0, D(1)), (2, "k", 9000, D(2)), (3, "k", 1, D(3))], name)
    windows, late = compare_tables(con, spec, name)
    assert windows["equal"] and late["equal"] and late["expected"] == 1
    assert schema.fetch_one(con, "SELECT count(*) FROM transactions") == (3,)


def test_invalid_spec_is_refused(tmp_path) -> None:
    con = transactions_db(tmp_path / "w.duckdb", [(1, "k", 0, D(1))])
    with pytest.raises(WindowSpecError, match="TXN_WINDOW_SLIDE_MS"):
        expected_windows(con, WindowSpec(slide_ms=100), FILE)


# --------------------------------------------------------------------------- #
# random data: the recomputation equals the reference, for every kind
# --------------------------------------------------------------------------- #
KEYS = st.sampled_from(["a", "b", "ü", 'k,"x"\ny'])
AMOUNTS = st.one_of(
    st.integers(-(10**18) + 1, 10**18 - 1).map(lambda units: D(units).scaleb(-4)),
    st.sampled_from([D("0.1"), D("-0.0001"), D(0), D("99999999999999.9999")]),
)


@st.composite
def event_lists(draw, max_size: int = 40) -> list:
    rows = draw(st.lists(st.integers(-100, 100_000), max_size=max_size, unique=True))
    base = draw(st.one_of(st.just(0), st.integers(-(10**13), 10**13)))
    spread = draw(st.sampled_from([10, 3000, 30_000]))
    events, pool = [], []
    for row in rows:
        if pool and draw(st.integers(0, 3)) == 0:
            key, ts, amount = draw(st.sampled_from(pool))  # an exact duplicate of an earlier event
        else:
            key, ts, amount = draw(KEYS), base + draw(st.integers(-spread, spread)), draw(AMOUNTS)
            pool.append((key, ts, amount))
        events.append((row, key, ts, amount))
    return events


DURATIONS = st.sampled_from([1, 7, 1000, 3000, 5000]) | st.integers(1, 20_000)
LATENESS = st.sampled_from([0, 1, 1000]) | st.integers(0, 5000)


@st.composite
def specs(draw, kind: str) -> WindowSpec:
    ooo, lateness = draw(LATENESS), draw(LATENESS)
    if kind == "session":
        return WindowSpec.of("session", gap_ms=draw(DURATIONS), out_of_orderness_ms=ooo, allowed_lateness_ms=lateness)
    size = draw(DURATIONS)
    slide = draw(st.integers(max(1, size // 30), size)) if kind == "sliding" else 0
    return WindowSpec.of(kind, size_ms=size, slide_ms=slide, out_of_orderness_ms=ooo, allowed_lateness_ms=lateness)


@pytest.fixture(scope="module")
def shared_con(tmp_path_factory):
    con = transactions_db(tmp_path_factory.mktemp("reconcile") / "property.duckdb", [])
    yield con
    con.close()


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session"])
def test_recomputation_equals_reference_on_random_data(shared_con, kind: str) -> None:
    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(events=event_lists(), other=event_lists(max_size=10), spec=specs(kind))
    def check(events, other, spec: WindowSpec) -> None:
        shared_con.execute("DELETE FROM transactions")
        insert_events(shared_con, events, "main.csv")
        insert_events(shared_con, other, "other.csv")  # must not influence main.csv
        expected = replay(events, spec)
        assert expected_windows(shared_con, spec, "main.csv") == expected.windows
        late = expected_late_events(shared_con, spec, "main.csv")
        assert [row[:5] for row in late] == expected.late
        assert [row[5:] for row in late] == [spec.windows_of(row[2])[0] for row in late]

    check()


@pytest.mark.parametrize(
    "spec",
    [
        WindowSpec.of("tumbling", size_ms=5000, out_of_orderness_ms=1000, allowed_lateness_ms=700),
        WindowSpec.of("sliding", size_ms=10_000, slide_ms=3000, out_of_orderness_ms=1000, allowed_lateness_ms=300),
        WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=1000, allowed_lateness_ms=500),
    ],
    ids=lambda s: s.kind,
)
def test_recomputation_equals_reference_on_disordered_data(tmp_path, spec: WindowSpec) -> None:
    events = disordered_events(3000, seed=5)
    con = transactions_db(tmp_path / "w.duckdb", events)
    expected = replay(events, spec)
    assert len(expected.late) >= 0.05 * len(events)  # the data exercises lateness
    assert expected_windows(con, spec, FILE) == expected.windows
    assert late_rows(con, spec) == expected.late
    windows, late = compare_tables(con, spec, FILE)  # nothing loaded yet: everything is missing
    assert windows["missing"] == len(expected.windows) and late["missing"] == len(expected.late)
    assert not windows["equal"] and not late["equal"]


# --------------------------------------------------------------------------- #
# compare_tables
# --------------------------------------------------------------------------- #
KIND_SPECS = {
    "tumbling": WindowSpec.of("tumbling", size_ms=5000, out_of_orderness_ms=1000),
    "sliding": WindowSpec.of("sliding", size_ms=10_000, slide_ms=5000, out_of_orderness_ms=1000),
    "session": WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=1000),
}


def compared_events() -> list:
    events = disordered_events(400, seed=3)
    last = max(e[2] for e in events) + 100_000
    # a window whose exact mean is 0 (so a stored -0.0 is a one-bit mismatch), last, so that it
    # changes nobody's lateness
    return [*events, (401, "zero", last, D("1.5")), (402, "zero", last, D("-1.5"))]


@pytest.fixture(params=list(KIND_SPECS))
def loaded(request, tmp_path):
    """(con, spec, reference result) with the reference loaded for FILE and, for other.csv, rows
    that disagree with everything (they must be ignored)."""
    spec = KIND_SPECS[request.param]
    events = compared_events()
    con = transactions_db(tmp_path / "w.duckdb", events)
    result = load_reference(con, tmp_path / "out", spec, events)
    assert len(result.late) >= 2 and len(result.windows) > 10
    insert_events(con, events[:50], "other.csv")
    other = replay(events[100:], spec)  # other.csv's tables hold another replay, with extra rows
    flink_output.load_output(con, write_job_output(tmp_path / "other", other), "other.csv", spec)
    return con, spec, result


def test_compare_tables_equal_on_the_reference(loaded) -> None:
    con, spec, result = loaded
    windows, late = compare_tables(con, spec, FILE)
    assert windows["equal"] and late["equal"], (windows, late)
    assert windows["expected"] == windows["actual"] == windows["compared"] == len(result.windows)
    assert late["expected"] == late["actual"] == late["compared"] == len(result.late)
    for report in (windows, late):
        assert report["missing"] == report["unexpected"] == report["value_mismatches"] == 0
        assert report["duplicates_actual"] == report["duplicates_expected"] == 0 and report["examples"] == []
    assert windows["max_abs_diff"] == 0.0
    # the pairs the rule counts: every member of every window
    assert windows["expected_pairs"] == sum(len(members) for members in result.contents.values())
    zero = schema.fetch_one(con, "SELECT avg_amount, signbit(avg_amount) FROM window_averages "
                                 f"WHERE source_file = '{FILE}' AND key = 'zero' LIMIT 1")  # fmt: skip
    assert zero == (0.0, False)


def test_compare_tables_leaves_no_tables_behind(loaded) -> None:
    con, spec, _ = loaded
    before = con.execute("SELECT table_name FROM duckdb_tables() ORDER BY ALL").fetchall()
    compare_tables(con, spec, FILE)
    expected_windows(con, spec, FILE)
    expected_late_events(con, spec, FILE)
    assert con.execute("SELECT table_name FROM duckdb_tables() ORDER BY ALL").fetchall() == before


@pytest.mark.parametrize("corrupt", [False, True])
def test_the_overlapped_recomputation_judges_output_loaded_after_it_started(loaded, corrupt: bool) -> None:
    """As in a run: the recomputation starts before the job's output exists, and compares it once loaded."""
    con, spec, result = loaded
    before = con.execute("SELECT table_name FROM duckdb_tables() ORDER BY ALL").fetchall()
    con.execute(f"CREATE TEMP TABLE saved_w AS FROM window_averages WHERE source_file = '{FILE}'")
    con.execute(f"CREATE TEMP TABLE saved_l AS FROM late_events WHERE source_file = '{FILE}'")
    con.execute(f"DELETE FROM window_averages WHERE source_file = '{FILE}'")
    con.execute(f"DELETE FROM late_events WHERE source_file = '{FILE}'")
    with OverlappedRecomputation(con, spec, FILE) as recomputation:
        con.execute("INSERT INTO window_averages FROM saved_w")
        con.execute("INSERT INTO late_events FROM saved_l")
        if corrupt:
            con.execute(f"UPDATE window_averages SET txn_count = txn_count + 1 WHERE source_file = '{FILE}' "
                        "AND key = 'zero'")  # fmt: skip
        windows, late = recomputation.compare()
    assert (windows, late) == compare_tables(con, spec, FILE)
    assert windows["equal"] is not corrupt and late["equal"]
    zero_windows = sum(1 for window in result.windows if window[0] == "zero")
    assert windows["value_mismatches"] == (zero_windows if corrupt else 0) and zero_windows >= 1
    assert windows["compared"] == len(result.windows)
    con.execute("DROP TABLE saved_w")
    con.execute("DROP TABLE saved_l")
    assert con.execute("SELECT table_name FROM duckdb_tables() ORDER BY ALL").fetchall() == before


def test_leaving_the_overlapped_recomputation_early_leaves_nothing_behind(loaded) -> None:
    con, spec, _ = loaded
    before = con.execute("SELECT table_name FROM duckdb_tables() ORDER BY ALL").fetchall()
    with pytest.raises(RuntimeError, match="the job failed"):
        with OverlappedRecomputation(con, spec, FILE):
            raise RuntimeError("the job failed")
    assert con.execute("SELECT table_name FROM duckdb_tables() ORDER BY ALL").fetchall() == before
    assert compare_tables(con, spec, FILE)[0]["equal"]


def _where(window: tuple) -> tuple[str, list]:
    return (f"source_file = '{FILE}' AND key = ? AND window_start_ms = ? AND window_end_ms = ?", list(window[:3]))


def _window(result: ReplayResult, index: int = 3) -> tuple:
    return result.windows[index]


def corrupt_window_value(column: str, change: str):
    def corrupt(con, result):
        where, params = _where(_window(result))
        con.execute(f"UPDATE window_averages SET {column} = {change} WHERE {where}", params)

    return corrupt


def corrupt_avg_ulp(con, result):
    where, params = _where(_window(result))
    (avg,) = schema.fetch_one(con, f"SELECT avg_amount FROM window_averages WHERE {where}", params)
    con.execute(f"UPDATE window_averages SET avg_amount = ? WHERE {where}", [math.nextafter(avg, math.inf), *params])


def corrupt_negative_zero(con, result):
    zero = next(w for w in result.windows if w[0] == "zero")
    where, params = _where(zero)
    # DuckDB skips an UPDATE to a value that compares equal (-0.0 = 0.0), so go through 1.0
    con.execute(f"UPDATE window_averages SET avg_amount = 1.0 WHERE {where}", params)
    con.execute(f"UPDATE window_averages SET avg_amount = ? WHERE {where}", [-0.0, *params])
    assert schema.fetch_one(con, f"SELECT signbit(avg_amount) FROM window_averages WHERE {where}", params) == (True,)


def delete_window(con, result):
    where, params = _where(_window(result))
    con.execute(f"DELETE FROM window_averages WHERE {where}", params)


def add_window(con, result):
    con.execute(f"INSERT INTO window_averages SELECT * REPLACE ('nobody' AS key) FROM window_averages "
                f"WHERE source_file = '{FILE}' ORDER BY ALL LIMIT 1")  # fmt: skip


def duplicate_window(con, result):
    where, params = _where(_window(result))
    con.execute(f"INSERT INTO window_averages SELECT * FROM window_averages WHERE {where}", params)


def duplicate_window_in_place_of_another(con, result):
    """The counts stay equal: only the join of every expected window finds what is wrong."""
    duplicate_window(con, result)
    where, params = _where(_window(result, 4))
    con.execute(f"DELETE FROM window_averages WHERE {where}", params)


def replace_window_by_another(con, result):
    delete_window(con, result)
    add_window(con, result)


def _late_where(result: ReplayResult) -> str:
    return f"source_file = '{FILE}' AND source_row = {result.late[1][0]}"


def delete_late(con, result):
    con.execute(f"DELETE FROM late_events WHERE {_late_where(result)}")


def add_late(con, result):
    con.execute(f"INSERT INTO late_events SELECT * REPLACE (10000000 AS source_row) FROM late_events "
                f"WHERE {_late_where(result)}")  # fmt: skip


def duplicate_late(con, result):
    con.execute(f"INSERT INTO late_events SELECT * FROM late_events WHERE {_late_where(result)}")


def corrupt_late_value(column: str, change: str):
    def corrupt(con, result):
        con.execute(f"UPDATE late_events SET {column} = {change} WHERE {_late_where(result)}")

    return corrupt


# name -> (corruption, expected window report entries, expected late report entries)
CORRUPTIONS = {
    "missing window": (delete_window, {"missing": 1, "actual": -1, "compared": -1}, {}),
    "unexpected window": (add_window, {"unexpected": 1, "actual": 1}, {}),
    "count + 1": (corrupt_window_value("txn_count", "txn_count + 1"), {"value_mismatches": 1}, {}),
    "sum + 0.0001": (corrupt_window_value("sum_amount", "sum_amount + 0.0001"), {"value_mismatches": 1}, {}),
    "min - 0.0001": (corrupt_window_value("min_amount", "min_amount - 0.0001"), {"value_mismatches": 1}, {}),
    "max + 0.0001": (corrupt_window_value("max_amount", "max_amount + 0.0001"), {"value_mismatches": 1}, {}),
    "avg one ulp": (corrupt_avg_ulp, {"value_mismatches": 1}, {}),
    "avg -0.0 for 0.0": (corrupt_negative_zero, {"value_mismatches": 1}, {}),
    "duplicated window": (duplicate_window, {"duplicates_actual": 1, "actual": 1}, {}),
    "a window duplicated in place of another": (
        duplicate_window_in_place_of_another,
        {"missing": 1, "duplicates_actual": 1, "compared": -1},
        {},
    ),
    "a window replaced by an unexpected one": (
        replace_window_by_another,
        {"missing": 1, "unexpected": 1, "compared": -1},
        {},
    ),
    "missing late event": (delete_late, {}, {"missing": 1, "actual": -1, "compared": -1}),
    "unexpected late event": (add_late, {}, {"unexpected": 1, "actual": 1}),
    "duplicated late event": (duplicate_late, {}, {"duplicates_actual": 1, "actual": 1}),
    "late watermark - 1": (corrupt_late_value("watermark_ms", "watermark_ms - 1"), {}, {"value_mismatches": 1}),
    "late amount + 0.0001": (corrupt_late_value("amount", "amount + 0.0001"), {}, {"value_mismatches": 1}),
    "late key": (corrupt_late_value("key", "key || '!'"), {}, {"value_mismatches": 1}),
    "late event time + 1": (corrupt_late_value("event_time_ms", "event_time_ms + 1"), {}, {"value_mismatches": 1}),
    "late window start": (
        corrupt_late_value("window_start", "window_start + INTERVAL 1 MILLISECOND"),
        {},
        {"value_mismatches": 1},
    ),  # fmt: skip
}
COUNTS = ("missing", "unexpected", "value_mismatches", "duplicates_actual", "duplicates_expected")


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_compare_tables_detects(loaded, name: str) -> None:
    con, spec, result = loaded
    corrupt, window_changes, late_changes = CORRUPTIONS[name]
    corrupt(con, result)
    windows, late = compare_tables(con, spec, FILE)
    for report, changes, total in (
        (windows, window_changes, len(result.windows)),
        (late, late_changes, len(result.late)),
    ):
        assert report["expected"] == total, name
        for field in ("actual", "compared"):
            assert report[field] == total + changes.get(field, 0), (name, field, report)
        for field in COUNTS:
            assert report[field] == changes.get(field, 0), (name, field, report)
        assert report["equal"] is not bool(changes), (name, report)
        assert bool(report["examples"]) == bool(set(changes) & {"missing", "unexpected", "value_mismatches"}), report
    for report, label in ((windows, "window"), (late, "late event")):
        for example in report["examples"]:
            assert example.startswith((f"missing {label} ", f"unexpected {label} ", f"{label} differs ")), example


def test_compare_tables_ignores_other_files_even_when_they_are_wrong(loaded) -> None:
    con, spec, _ = loaded
    con.execute("UPDATE window_averages SET txn_count = txn_count + 1, avg_amount = -avg_amount "
                "WHERE source_file = 'other.csv'")  # fmt: skip
    con.execute("DELETE FROM late_events WHERE source_file = 'other.csv'")
    windows, late = compare_tables(con, spec, FILE)
    assert windows["equal"] and late["equal"]
    other_windows, other_late = compare_tables(con, spec, "other.csv")
    assert not other_windows["equal"] and not other_late["equal"]


def test_max_abs_diff_measures_the_largest_avg_difference(loaded) -> None:
    con, spec, result = loaded
    where, params = _where(_window(result))
    con.execute(f"UPDATE window_averages SET avg_amount = avg_amount + 0.5 WHERE {where}", params)
    windows, _ = compare_tables(con, spec, FILE)
    assert windows["value_mismatches"] == 1 and windows["max_abs_diff"] == pytest.approx(0.5)


def test_avg_amount_is_derived_from_the_exact_sum(tmp_path) -> None:
    """avg_amount = sum_amount::DOUBLE / txn_count (documented): the exact sum, then one division."""
    events = [(1, "k", 0, D("0.1")), (2, "k", 1, D("0.1")), (3, "k", 2, D("0.1"))]
    con = transactions_db(tmp_path / "w.duckdb", events)
    load_reference(con, tmp_path / "out", WindowSpec(), events)
    (avg,) = schema.fetch_one(con, "SELECT avg_amount FROM window_averages")
    assert avg == float(D("0.3")) / 3 == 0.09999999999999999
