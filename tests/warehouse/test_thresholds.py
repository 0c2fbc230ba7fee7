"""Tests for per-key anomaly thresholds (warehouse.thresholds), checked against the Python reference."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import duckdb
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from warehouse import schema
from warehouse.thresholds import MAD_SCALE, METHOD, replace_thresholds, thresholds_reference

WINDOW_MS = 5000


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "thresholds.duckdb"))
    connection.execute("SET TimeZone = 'UTC'")
    schema.create_tables(connection)
    try:
        yield connection
    finally:
        connection.close()


def load_windows(
    con: duckdb.DuckDBPyConnection, averages_by_key: Mapping[str, Sequence[float]], source_file: str = "a.csv"
) -> None:
    rows = []
    for key, averages in averages_by_key.items():
        for i, avg in enumerate(averages):
            start = i * WINDOW_MS
            rows.append((source_file, key, start, start + WINDOW_MS, float(avg), 1 + i % 3, start, start + WINDOW_MS))
    if rows:
        con.executemany(
            "INSERT INTO window_averages VALUES (?, ?, make_timestamptz(?::BIGINT * 1000), "
            "make_timestamptz(?::BIGINT * 1000), ?, ?, ?, ?)",
            rows,
        )


def thresholds_table(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, object]]:
    columns = [name for name, _ in schema.TABLES["anomaly_thresholds"]]
    rows = con.execute(f"SELECT {', '.join(columns)} FROM anomaly_thresholds ORDER BY key").fetchall()
    return {row[0]: dict(zip(columns, row)) for row in rows}


def check_against_reference(
    con: duckdb.DuckDBPyConnection, averages_by_key: Mapping[str, Sequence[float]], *, min_windows: int, z: float
) -> None:
    count = replace_thresholds(con, min_windows=min_windows, z=z)
    table = thresholds_table(con)
    expected = thresholds_reference(averages_by_key, min_windows=min_windows, z=z)

    assert count == len(table) == len(expected)
    assert set(table) == set(expected)
    for key, ref_threshold in expected.items():
        row = table[key]
        averages = list(averages_by_key[key])
        scale = max(abs(a) for a in averages)
        assert math.isclose(row["threshold"], ref_threshold, rel_tol=1e-12), (key, row, ref_threshold)
        median = statistics.median(averages)
        mad = statistics.median(abs(a - median) for a in averages)
        assert math.isclose(row["median_avg_amount"], median, rel_tol=1e-12)
        assert math.isclose(row["mad_avg_amount"], mad, rel_tol=1e-12, abs_tol=1e-12 * scale)
        assert row["max_avg_amount"] == max(averages)
        assert row["window_count"] == len(averages)
        assert row["method"] == METHOD
        # counted against the stored threshold, so ulp-level differences cannot flip a boundary window
        assert row["anomalous_windows"] == sum(a > row["threshold"] for a in averages)


# --------------------------------------------------------------------------- #
# agreement with the reference
# --------------------------------------------------------------------------- #
amounts = st.one_of(
    st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=10_000_000).map(lambda cents: cents / 100),
    st.sampled_from([10.0, 10.0, 99.99, 100.0]),  # ties make MAD = 0 likely
)
windows_by_key = st.dictionaries(
    keys=st.text(alphabet="abcxyz019-_", min_size=1, max_size=6),
    values=st.lists(amounts, min_size=1, max_size=25),
    max_size=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    averages_by_key=windows_by_key,
    min_windows=st.integers(min_value=1, max_value=8),
    z=st.floats(min_value=0.1, max_value=10.0, allow_nan=False),
)
def test_replace_thresholds_agrees_with_reference(
    con: duckdb.DuckDBPyConnection, averages_by_key: dict[str, list[float]], min_windows: int, z: float
) -> None:
    con.execute("DELETE FROM window_averages")  # the fixture's connection is shared by all examples
    load_windows(con, averages_by_key)
    check_against_reference(con, averages_by_key, min_windows=min_windows, z=z)


def test_replace_thresholds_agrees_with_reference_seeded_large(con: duckdb.DuckDBPyConnection) -> None:
    import random

    rng = random.Random(20240511)
    averages_by_key = {
        f"k{i:03d}": [round(rng.lognormvariate(4, 1.2), 2) for _ in range(rng.randint(1, 60))] for i in range(200)
    }
    # sprinkle outliers
    for key in list(averages_by_key)[::7]:
        averages_by_key[key].append(1e6)
    load_windows(con, averages_by_key)
    check_against_reference(con, averages_by_key, min_windows=5, z=3.5)


def test_empty_window_averages_gives_no_thresholds(con: duckdb.DuckDBPyConnection) -> None:
    assert replace_thresholds(con, min_windows=1, z=3.5) == 0
    assert thresholds_table(con) == {}


# --------------------------------------------------------------------------- #
# specific cases
# --------------------------------------------------------------------------- #
def test_worked_example(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"k": [1.0, 2.0, 3.0, 4.0, 100.0]})
    assert replace_thresholds(con, min_windows=5, z=3.5) == 1
    row = thresholds_table(con)["k"]
    # median 3, deviations [2, 1, 0, 1, 97] -> MAD 1
    assert row["median_avg_amount"] == 3.0
    assert row["mad_avg_amount"] == 1.0
    assert math.isclose(row["threshold"], 3.0 + 3.5 / MAD_SCALE, rel_tol=1e-12)
    assert row["max_avg_amount"] == 100.0
    assert row["window_count"] == 5
    assert row["anomalous_windows"] == 1


def test_keys_below_min_windows_get_no_row(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"few": [1.0, 2.0, 3.0, 4.0], "enough": [1.0, 2.0, 3.0, 4.0, 5.0], "one": [9.0]})
    assert replace_thresholds(con, min_windows=5, z=3.5) == 1
    assert set(thresholds_table(con)) == {"enough"}

    assert replace_thresholds(con, min_windows=4, z=3.5) == 2
    assert set(thresholds_table(con)) == {"enough", "few"}

    assert replace_thresholds(con, min_windows=1, z=3.5) == 3
    assert set(thresholds_table(con)) == {"enough", "few", "one"}


def test_mad_zero_threshold_equals_median(con: duckdb.DuckDBPyConnection) -> None:
    # more than half of the windows share one average -> MAD = 0
    load_windows(con, {"k": [10.0, 10.0, 10.0, 10.0, 12.0, 50.0, 9.0]})
    replace_thresholds(con, min_windows=5, z=3.5)
    row = thresholds_table(con)["k"]
    assert row["mad_avg_amount"] == 0.0
    assert row["median_avg_amount"] == 10.0
    assert row["threshold"] == 10.0
    assert row["anomalous_windows"] == 2  # 12 and 50; windows equal to the threshold are not anomalous
    assert thresholds_reference({"k": [10.0, 10.0, 10.0, 10.0, 12.0, 50.0, 9.0]}, min_windows=5, z=3.5) == {"k": 10.0}


def test_all_windows_equal_has_no_anomalies(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"k": [7.5] * 6})
    replace_thresholds(con, min_windows=5, z=3.5)
    row = thresholds_table(con)["k"]
    assert row["threshold"] == 7.5
    assert row["anomalous_windows"] == 0


def test_anomalous_windows_counts_windows_above_threshold(con: duckdb.DuckDBPyConnection) -> None:
    normal = [100.0, 101.0, 99.0, 100.5, 99.5, 100.0, 100.2, 99.8]
    load_windows(con, {"k": normal + [500.0, 1000.0, 250.0], "calm": normal})
    replace_thresholds(con, min_windows=5, z=3.5)
    table = thresholds_table(con)
    assert table["k"]["anomalous_windows"] == 3
    assert table["calm"]["anomalous_windows"] == 0
    # per key: one key's outliers do not count for another
    load_windows(con, {"calm": [10_000.0]}, source_file="b.csv")
    replace_thresholds(con, min_windows=5, z=3.5)
    table = thresholds_table(con)
    assert table["calm"]["anomalous_windows"] == 1
    assert table["k"]["anomalous_windows"] == 3


def test_larger_z_never_flags_more(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"k": [1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 13.0, 21.0, 34.0]})
    counts = []
    for z in (0.5, 1.0, 2.0, 3.5, 10.0):
        replace_thresholds(con, min_windows=1, z=z)
        counts.append(thresholds_table(con)["k"]["anomalous_windows"])
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > counts[-1]


def test_accumulates_over_all_source_files(con: duckdb.DuckDBPyConnection) -> None:
    first = [1.0, 2.0, 3.0]
    second = [4.0, 100.0]
    load_windows(con, {"k": first}, source_file="day1.csv")
    assert replace_thresholds(con, min_windows=5, z=3.5) == 0  # not enough history from one file

    load_windows(con, {"k": second}, source_file="day2.csv")
    assert replace_thresholds(con, min_windows=5, z=3.5) == 1
    row = thresholds_table(con)["k"]
    assert row["window_count"] == 5
    expected = thresholds_reference({"k": first + second}, min_windows=5, z=3.5)["k"]
    assert math.isclose(row["threshold"], expected, rel_tol=1e-12)
    assert row["max_avg_amount"] == 100.0
    assert row["anomalous_windows"] == 1


def test_replace_twice_gives_identical_table(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"a": [1.0, 2.0, 3.0, 50.0, 5.0], "b": [3.0, 3.0, 3.0, 4.0, 9.0], "c": [1.0]})
    first_count = replace_thresholds(con, min_windows=2, z=3.5)
    first = con.execute("SELECT * FROM anomaly_thresholds ORDER BY key").fetchall()
    second_count = replace_thresholds(con, min_windows=2, z=3.5)
    second = con.execute("SELECT * FROM anomaly_thresholds ORDER BY key").fetchall()
    assert first_count == second_count == 2
    assert first == second
    assert schema.fetch_one(con, "SELECT count(*), count(DISTINCT key) FROM anomaly_thresholds") == (2, 2)


def test_replace_drops_keys_that_no_longer_qualify(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})
    assert replace_thresholds(con, min_windows=3, z=3.5) == 2
    con.execute("DELETE FROM window_averages WHERE key = 'b' AND avg_amount = 3.0")
    assert replace_thresholds(con, min_windows=3, z=3.5) == 1
    assert set(thresholds_table(con)) == {"a"}


def test_result_is_written_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "persist.duckdb"
    with duckdb.connect(str(path)) as writer:
        schema.create_tables(writer)
        load_windows(writer, {"k": [1.0, 2.0, 3.0, 4.0, 100.0]})
        replace_thresholds(writer, min_windows=5, z=3.5)
    with duckdb.connect(str(path), read_only=True) as reader:
        assert reader.execute("SELECT key, anomalous_windows FROM anomaly_thresholds").fetchall() == [("k", 1)]
        assert schema.contract_mismatches(reader, "anomaly_thresholds") == []


# --------------------------------------------------------------------------- #
# argument validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("min_windows", [0, -1, -100])
def test_invalid_min_windows_raises(con: duckdb.DuckDBPyConnection, min_windows: int) -> None:
    load_windows(con, {"k": [1.0, 2.0, 3.0]})
    replace_thresholds(con, min_windows=1, z=3.5)
    before = con.execute("SELECT * FROM anomaly_thresholds").fetchall()
    with pytest.raises(ValueError, match="min_windows"):
        replace_thresholds(con, min_windows=min_windows, z=3.5)
    # validation happens before the old thresholds are deleted
    assert con.execute("SELECT * FROM anomaly_thresholds").fetchall() == before != []


@pytest.mark.parametrize("z", [0, 0.0, -1.0, -0.001, float("nan"), float("-inf"), float("inf")])
def test_invalid_z_raises(con: duckdb.DuckDBPyConnection, z: float) -> None:
    load_windows(con, {"k": [1.0, 2.0, 3.0]})
    replace_thresholds(con, min_windows=1, z=3.5)
    before = con.execute("SELECT * FROM anomaly_thresholds").fetchall()
    with pytest.raises(ValueError, match="z must be a finite number > 0"):
        replace_thresholds(con, min_windows=1, z=z)
    assert con.execute("SELECT * FROM anomaly_thresholds").fetchall() == before != []
