"""The threshold method (warehouse.thresholds): the DuckDB SQL against the plain-Python reference, and
the method's properties on plain data."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warehouse import schema, segments
from warehouse.thresholds import (
    BINS_PER_LOG_UNIT,
    MAD_TO_SIGMA,
    MEAN_AD_TO_SIGMA,
    METHOD,
    MIN_SCALE,
    Method,
    binned_y,
    fit_key,
    fit_keys,
    flag_windows,
    inverse_y,
    replace_thresholds,
    thresholds_reference,
    y_of,
)

WINDOW_MS = 5000

Windows = Mapping[str, Sequence[tuple[float, int]]]  # key -> [(avg_amount, txn_count), ...]


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "thresholds.duckdb"))
    connection.execute("SET TimeZone = 'UTC'")
    schema.create_tables(connection)
    try:
        yield connection
    finally:
        connection.close()


def load_windows(con: duckdb.DuckDBPyConnection, windows: Windows, source_file: str = "a.csv",
                 starts: Mapping[str, Sequence[int]] | None = None, length_ms: int = WINDOW_MS,
                 table: str = "window_averages") -> None:  # fmt: skip
    """Insert (avg_amount, txn_count) windows into window_averages, one tumbling window after another
    per key (or at `starts`), through a DataFrame: tests load tens of thousands of windows."""
    rows = []
    for key, values in windows.items():
        for i, (avg, n) in enumerate(values):
            start = starts[key][i] if starts else i * length_ms
            rows.append((source_file, key, start, start + length_ms, float(avg), int(n)))
    frame = pd.DataFrame(rows, columns=["source_file", "key", "s", "e", "avg_amount", "txn_count"])
    con.register("loaded_windows", frame)
    con.execute(
        f"INSERT INTO {table} SELECT source_file, key, epoch_ms(s)::TIMESTAMPTZ, epoch_ms(e)::TIMESTAMPTZ, "
        "avg_amount, txn_count, (avg_amount * txn_count)::DECIMAL(38,4), avg_amount::DECIMAL(18,4), "
        "avg_amount::DECIMAL(18,4), s, e, true FROM loaded_windows"
    )
    con.unregister("loaded_windows")


def singles(averages_by_key: Mapping[str, Sequence[float]]) -> dict[str, list[tuple[float, int]]]:
    return {key: [(a, 1) for a in averages] for key, averages in averages_by_key.items()}


def thresholds_table(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, object]]:
    columns = [name for name, _ in schema.TABLES["anomaly_thresholds"]]
    rows = con.execute(f"SELECT {', '.join(columns)} FROM anomaly_thresholds ORDER BY key").fetchall()
    return {row[0]: dict(zip(columns, row, strict=True)) for row in rows}


def check_against_reference(con: duckdb.DuckDBPyConnection, windows: Windows, *, min_windows: int, z: float) -> None:
    count = replace_thresholds(con, min_windows=min_windows, z=z)
    table = thresholds_table(con)
    method = Method(z=z, min_windows=min_windows)
    expected = fit_keys(windows, method)

    assert count == len(table) == len(expected)
    assert set(table) == set(expected)
    for key, fit in expected.items():
        row = table[key]
        averages = [a for a, _ in windows[key]]
        assert math.isclose(row["log_center"], fit.center, rel_tol=1e-12, abs_tol=1e-12), (key, row, fit)
        assert math.isclose(row["log_scale"], fit.scale, rel_tol=1e-9, abs_tol=1e-12), (key, row, fit)
        assert math.isclose(row["threshold"], fit.threshold(1), rel_tol=1e-9), (key, row, fit)
        # inv(center): the median average itself, to within half a bin, for an odd count (y is
        # monotone in the average)
        assert math.isclose(row["median_avg_amount"], inverse_y(fit.center), rel_tol=1e-9, abs_tol=1e-9)
        if len(averages) % 2:
            assert abs(y_of(statistics.median(averages)) - row["log_center"]) <= 0.5 / BINS_PER_LOG_UNIT + 1e-9
        assert row["max_avg_amount"] == max(averages)
        assert row["window_count"] == len(averages)
        assert row["txn_count"] == sum(n for _, n in windows[key])
        assert row["method"] == METHOD
        assert row["z"] == z
        assert json.loads(row["params"]) == method.params()
        # counted on the histogram against the stored fit, so ulp-level differences cannot flip a
        # boundary window
        stored = fit.__class__(center=row["log_center"], scale=row["log_scale"], window_count=0, z=z)
        expected_flags = sum(stored.is_counted_anomalous(a, n) for a, n in windows[key])
        assert abs(row["anomalous_windows"] - expected_flags) <= sum(
            math.isclose(binned_y(a), stored.center + z * stored.scale / math.sqrt(max(n, 1)), rel_tol=1e-9)
            for a, n in windows[key]
        )


# --------------------------------------------------------------------------- #
# agreement with the reference
# --------------------------------------------------------------------------- #
amounts = st.one_of(
    st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e4, max_value=-0.01, allow_nan=False),  # refunds
    st.integers(min_value=1, max_value=10_000_000).map(lambda cents: cents / 100),
    st.sampled_from([0.0, 10.0, 10.0, 99.99, 100.0]),  # ties make MAD = 0 likely
)
windows_by_key = st.dictionaries(
    keys=st.text(alphabet="abcxyz019-_", min_size=1, max_size=6),
    values=st.lists(st.tuples(amounts, st.integers(min_value=1, max_value=60)), min_size=1, max_size=25),
    max_size=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    windows=windows_by_key,
    min_windows=st.integers(min_value=1, max_value=8),
    z=st.floats(min_value=0.1, max_value=10.0, allow_nan=False),
)
def test_replace_thresholds_agrees_with_reference(
    con: duckdb.DuckDBPyConnection, windows: dict[str, list[tuple[float, int]]], min_windows: int, z: float
) -> None:
    con.execute("DELETE FROM window_averages")  # the fixture's connection is shared by all examples
    load_windows(con, windows)
    check_against_reference(con, windows, min_windows=min_windows, z=z)


def test_replace_thresholds_agrees_with_reference_seeded_large(con: duckdb.DuckDBPyConnection) -> None:
    import random

    rng = random.Random(20240511)
    windows = {
        f"k{i:03d}": [(round(rng.lognormvariate(4, 1.2), 2), rng.randint(1, 12)) for _ in range(rng.randint(1, 80))]
        for i in range(200)
    }
    for key in list(windows)[::7]:  # sprinkle outliers
        windows[key].append((1e6, 1))
    load_windows(con, windows)
    check_against_reference(con, windows, min_windows=30, z=3.5)


def test_empty_window_averages_gives_no_thresholds(con: duckdb.DuckDBPyConnection) -> None:
    assert replace_thresholds(con, min_windows=1, z=3.5) == 0
    assert thresholds_table(con) == {}


# --------------------------------------------------------------------------- #
# the method, on plain data
# --------------------------------------------------------------------------- #
def test_worked_example_by_hand() -> None:
    # y = ln(1 + a): the averages are e^k - 1, so y is exactly 1..5 (up to rounding) and 9
    windows = [(math.expm1(y), 1) for y in (1.0, 2.0, 3.0, 4.0, 5.0, 9.0)]
    fit = fit_key(windows, Method(z=3.5, min_windows=5))
    assert fit is not None
    # center = median(1,2,3,4,5,9) = 3.5; |d| = 2.5 1.5 .5 .5 1.5 5.5 -> MAD 1.5
    assert math.isclose(fit.center, 3.5, rel_tol=1e-12)
    assert math.isclose(fit.scale, MAD_TO_SIGMA * 1.5, rel_tol=1e-12)
    assert math.isclose(fit.threshold(1), math.expm1(3.5 + 3.5 * MAD_TO_SIGMA * 1.5), rel_tol=1e-12)
    assert math.isclose(fit.score(math.expm1(9.0), 1), 5.5 / (MAD_TO_SIGMA * 1.5), rel_tol=1e-12)
    # 9 is 2.47 robust sds above: not anomalous at z = 3.5; a window of 4 transactions is (x2)
    assert not fit.is_anomalous(math.expm1(9.0), 1)
    assert fit.is_anomalous(math.expm1(9.0), 4)


def test_busier_windows_have_lower_thresholds() -> None:
    fit = fit_key([(100.0 + i % 7, 1 + i % 5) for i in range(60)])
    assert fit is not None
    thresholds = [fit.threshold(n) for n in (1, 2, 5, 20, 100)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert thresholds[-1] > inverse_y(fit.center)  # always above the center


def test_an_average_that_is_common_for_one_transaction_is_anomalous_for_fifty() -> None:
    # a key whose single transactions vary a lot: 2x the median is normal for 1 transaction ...
    import random

    rng = random.Random(3)
    history = [(rng.lognormvariate(math.log(50), 0.5), 1) for _ in range(200)]
    fit = fit_key(history)
    assert fit is not None
    assert not fit.is_anomalous(100.0, 1)
    # ... but the mean of 50 such transactions does not drift to 2x
    assert fit.is_anomalous(100.0, 50)


def test_robust_to_the_outliers_it_finds() -> None:
    base = [(100.0 + (i % 11) - 5, 1 + i % 4) for i in range(200)]
    clean = fit_key(base)
    spiked = fit_key(base[:-10] + [(1e6, 1)] * 10)  # 5 % of the windows are huge
    assert clean is not None and spiked is not None
    assert math.isclose(spiked.center, clean.center, rel_tol=0.01)
    assert spiked.scale < 1.2 * clean.scale
    assert spiked.is_anomalous(1e6, 1)


def test_mad_zero_falls_back_to_mean_absolute_deviation() -> None:
    # more than half of the windows share one average -> MAD of the deviations = 0
    windows = [(10.0, 1)] * 6 + [(12.0, 1), (50.0, 1), (9.0, 1)]
    fit = fit_key(windows, Method(min_windows=5))
    assert fit is not None
    deviations = [abs(binned_y(a) - binned_y(10.0)) for a, _ in windows]
    assert math.isclose(fit.scale, max(MEAN_AD_TO_SIGMA * statistics.fmean(deviations), MIN_SCALE), rel_tol=1e-12)
    assert fit.is_anomalous(50.0, 1) and not fit.is_anomalous(12.0, 1) and not fit.is_anomalous(10.0, 1)


def test_constant_key_uses_the_scale_floor() -> None:
    fit = fit_key([(9.99, 1)] * 40)
    assert fit is not None
    assert fit.scale == MIN_SCALE
    assert not fit.is_anomalous(9.99, 1)
    assert not fit.is_anomalous(10.50, 1)  # +5 %: within the floor
    assert fit.is_anomalous(12.99, 1)  # a price rise of 30 %


def test_zero_and_negative_averages_are_judged_too() -> None:
    windows = [(-20.0 + (i % 5), 1) for i in range(40)] + [(0.0, 1)] * 3
    fit = fit_key(windows)
    assert fit is not None and fit.center < 0
    assert not fit.is_anomalous(-18.0, 1)
    assert fit.is_anomalous(500.0, 1)
    assert y_of(0.0) == 0.0 and y_of(-0.0) == 0.0
    assert inverse_y(y_of(-1234.5)) == pytest.approx(-1234.5, rel=1e-12)


def test_huge_threshold_is_infinite_not_an_error() -> None:
    assert inverse_y(800.0) == math.inf
    assert inverse_y(-800.0) == -math.inf


def test_keys_below_min_windows_get_no_fit() -> None:
    windows = {"few": [(1.0, 1)] * 4, "enough": [(1.0, 1)] * 5}
    assert set(fit_keys(windows, Method(min_windows=5))) == {"enough"}
    assert flag_windows([("few", 1e9, 1)] + [("few", 1.0, 1)] * 3, Method(min_windows=5)) == [False] * 4


def test_larger_z_never_flags_more() -> None:
    windows = [
        ("k", a, n) for a, n in zip([1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 13.0, 21.0, 34.0, 400.0], range(1, 11), strict=True)
    ]
    counts = [sum(flag_windows(windows, Method(z=z, min_windows=1))) for z in (0.5, 1.0, 2.0, 3.5, 10.0)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > counts[-1]


def test_params_name_every_parameter() -> None:
    params = Method(z=4.0, min_windows=12).params()
    assert params["z"] == 4.0 and params["min_windows"] == 12 and params["min_scale"] == MIN_SCALE
    assert "ln(1 + |a|)" in params["transform"]
    assert json.loads(Method().params_json()) == Method().params()


# --------------------------------------------------------------------------- #
# the table, in DuckDB
# --------------------------------------------------------------------------- #
def test_table_worked_example(con: duckdb.DuckDBPyConnection) -> None:
    windows = {"k": [(math.expm1(y), 1) for y in (1.0, 2.0, 3.0, 4.0, 5.0, 9.0)] + [(math.expm1(9.0), 4)]}
    load_windows(con, windows)
    assert replace_thresholds(con, min_windows=5, z=3.5) == 1
    row = thresholds_table(con)["k"]
    # center = median(1,2,3,4,5,9,9) = 4; |d| = 3 2 1 0 1 5 10 -> MAD 2
    assert math.isclose(row["log_center"], 4.0, rel_tol=1e-9)
    assert math.isclose(row["log_scale"], MAD_TO_SIGMA * 2.0, rel_tol=1e-9)
    assert row["window_count"] == 7 and row["txn_count"] == 10
    # 9 with 1 transaction: (9 - 4) / 2.97 = 1.7 sd; with 4: 3.4 sd; neither above 3.5
    assert row["anomalous_windows"] == 0
    replace_thresholds(con, min_windows=5, z=3.0)
    assert thresholds_table(con)["k"]["anomalous_windows"] == 1


def test_keys_below_min_windows_get_no_row(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, singles({"few": [1.0, 2.0, 3.0, 4.0], "enough": [1.0, 2.0, 3.0, 4.0, 5.0], "one": [9.0]}))
    assert replace_thresholds(con, min_windows=5, z=3.5) == 1
    assert set(thresholds_table(con)) == {"enough"}
    assert replace_thresholds(con, min_windows=4, z=3.5) == 2
    assert replace_thresholds(con, min_windows=1, z=3.5) == 3
    assert set(thresholds_table(con)) == {"enough", "few", "one"}


def test_anomalous_windows_counts_per_key(con: duckdb.DuckDBPyConnection) -> None:
    normal = [100.0, 101.0, 99.0, 100.5, 99.5, 100.0, 100.2, 99.8] * 4
    load_windows(con, singles({"k": normal + [500.0, 1000.0, 250.0], "calm": normal}))
    replace_thresholds(con, min_windows=5, z=3.5)
    table = thresholds_table(con)
    assert table["k"]["anomalous_windows"] == 3
    assert table["calm"]["anomalous_windows"] == 0
    # one key's outliers do not count for another
    load_windows(con, singles({"calm": [10_000.0]}), source_file="b.csv")
    replace_thresholds(con, min_windows=5, z=3.5)
    table = thresholds_table(con)
    assert table["calm"]["anomalous_windows"] == 1
    assert table["k"]["anomalous_windows"] == 3


def test_accumulates_over_all_source_files(con: duckdb.DuckDBPyConnection) -> None:
    first = [(1.0, 1), (2.0, 2), (3.0, 1)]
    second = [(4.0, 3), (100.0, 1)]
    load_windows(con, {"k": first}, source_file="day1.csv")
    assert replace_thresholds(con, min_windows=5, z=3.5) == 0  # not enough history from one file
    load_windows(con, {"k": second}, source_file="day2.csv")
    assert replace_thresholds(con, min_windows=5, z=3.5) == 1
    row = thresholds_table(con)["k"]
    fit = fit_key(first + second, Method(min_windows=5))
    assert row["window_count"] == 5 and row["txn_count"] == 8
    assert math.isclose(row["threshold"], fit.threshold(1), rel_tol=1e-9)


def test_replace_twice_gives_identical_table(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, singles({"a": [1.0, 2.0, 3.0, 50.0, 5.0], "b": [3.0, 3.0, 3.0, 4.0, 9.0], "c": [1.0]}))
    first_count = replace_thresholds(con, min_windows=2, z=3.5)
    first = con.execute("SELECT * FROM anomaly_thresholds ORDER BY key").fetchall()
    second_count = replace_thresholds(con, min_windows=2, z=3.5)
    second = con.execute("SELECT * FROM anomaly_thresholds ORDER BY key").fetchall()
    assert first_count == second_count == 2
    assert first == second
    assert schema.fetch_one(con, "SELECT count(*), count(DISTINCT key) FROM anomaly_thresholds") == (2, 2)


def test_replace_drops_keys_that_no_longer_qualify(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, singles({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}))
    assert replace_thresholds(con, min_windows=3, z=3.5) == 2
    con.execute("DELETE FROM window_averages WHERE key = 'b' AND avg_amount = 3.0")
    assert replace_thresholds(con, min_windows=3, z=3.5) == 1
    assert set(thresholds_table(con)) == {"a"}


def test_result_is_written_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "persist.duckdb"
    with duckdb.connect(str(path)) as writer:
        schema.create_tables(writer)
        load_windows(writer, singles({"k": [100.0 + i % 3 for i in range(30)] + [5000.0]}))
        replace_thresholds(writer, min_windows=30, z=3.5)
    with duckdb.connect(str(path), read_only=True) as reader:
        assert reader.execute("SELECT key, anomalous_windows FROM anomaly_thresholds").fetchall() == [("k", 1)]
        assert schema.contract_mismatches(reader, "anomaly_thresholds") == []


def test_a_table_of_the_old_contract_is_recreated(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE anomaly_thresholds")
    con.execute(  # the contract before this method
        "CREATE TABLE anomaly_thresholds (key VARCHAR, threshold DOUBLE, method VARCHAR, window_count BIGINT, "
        "median_avg_amount DOUBLE, mad_avg_amount DOUBLE, max_avg_amount DOUBLE, anomalous_windows BIGINT)"
    )
    con.execute("INSERT INTO anomaly_thresholds VALUES ('old', 1, 'm', 1, 1, 1, 1, 1)")
    load_windows(con, singles({"k": [100.0 + i % 3 for i in range(30)]}))
    assert replace_thresholds(con, min_windows=30, z=3.5) == 1
    assert schema.contract_mismatches(con, "anomaly_thresholds") == []
    assert set(thresholds_table(con)) == {"k"}


def test_thresholds_reference_keeps_its_old_signature() -> None:
    result = thresholds_reference({"k": [100.0 + i % 3 for i in range(30)], "few": [1.0]}, min_windows=5, z=3.5)
    assert set(result) == {"k"} and result["k"] > 102.0


# --------------------------------------------------------------------------- #
# argument validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("min_windows", [0, -1, -100])
def test_invalid_min_windows_raises(con: duckdb.DuckDBPyConnection, min_windows: int) -> None:
    load_windows(con, singles({"k": [1.0, 2.0, 3.0]}))
    replace_thresholds(con, min_windows=1, z=3.5)
    before = con.execute("SELECT * FROM anomaly_thresholds").fetchall()
    with pytest.raises(ValueError, match="min_windows"):
        replace_thresholds(con, min_windows=min_windows, z=3.5)
    # validation happens before the old thresholds are deleted
    assert con.execute("SELECT * FROM anomaly_thresholds").fetchall() == before != []


@pytest.mark.parametrize("z", [0, 0.0, -1.0, -0.001, float("nan"), float("-inf"), float("inf")])
def test_invalid_z_raises(con: duckdb.DuckDBPyConnection, z: float) -> None:
    load_windows(con, singles({"k": [1.0, 2.0, 3.0]}))
    replace_thresholds(con, min_windows=1, z=3.5)
    before = con.execute("SELECT * FROM anomaly_thresholds").fetchall()
    with pytest.raises(ValueError, match="z must be a finite number > 0"):
        replace_thresholds(con, min_windows=1, z=z)
    assert con.execute("SELECT * FROM anomaly_thresholds").fetchall() == before != []


@pytest.mark.parametrize("min_scale", [0.0, -0.1, float("nan")])
def test_invalid_min_scale_raises(min_scale: float) -> None:
    with pytest.raises(ValueError, match="min_scale"):
        Method(min_scale=min_scale).validate()


def test_problems_name_each_parameter_as_asked() -> None:
    """The settings reuse these rules and only rename the fields (to their env vars)."""
    method = Method(z=0.0, min_windows=0)
    assert method.problems() == ["min_windows must be >= 1, got 0", "z must be a finite number > 0, got 0.0"]
    assert method.problems({"z": "TXN_ANOMALY_Z"}) == [
        "min_windows must be >= 1, got 0",
        "TXN_ANOMALY_Z must be a finite number > 0, got 0.0",
    ]
    assert Method().problems() == []


# --------------------------------------------------------------------------- #
# the histogram
# --------------------------------------------------------------------------- #
def test_binned_y_rounds_to_the_nearest_bin() -> None:
    assert binned_y(0.0) == 0.0
    assert binned_y(math.e - 1) == 1.0
    for avg in (0.01, 1.0, 99.99, 123456.78, -50.0):
        assert abs(binned_y(avg) - y_of(avg)) <= 0.5 / BINS_PER_LOG_UNIT + 1e-12
        assert (binned_y(avg) * BINS_PER_LOG_UNIT).is_integer()


def test_binning_moves_the_center_by_at_most_half_a_bin() -> None:
    import random

    rng = random.Random(7)
    windows = [(rng.lognormvariate(4, 1), 1) for _ in range(301)]
    fit = fit_key(windows)
    assert fit is not None
    exact = statistics.median(y_of(a) for a, _ in windows)
    assert abs(fit.center - exact) <= 0.5 / BINS_PER_LOG_UNIT
    assert fit.center != exact  # it is the binned value, not the exact one


# --------------------------------------------------------------------------- #
# runs on a segmented warehouse: the cost of the file, the result of a full recompute
# --------------------------------------------------------------------------- #
@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[tuple[duckdb.DuckDBPyConnection, Path]]:
    """A segmented warehouse (the catalog and its segments folder), as the store keeps it."""
    connection = duckdb.connect(str(tmp_path / "catalog.duckdb"))
    connection.execute("SET TimeZone = 'UTC'")
    segments.prepare(connection, tmp_path / "segments")
    try:
        yield connection, tmp_path / "segments"
    finally:
        connection.close()


def run(warehouse: tuple[duckdb.DuckDBPyConnection, Path], run_id: str, files: Mapping[str, Windows], *,
        min_windows: int = 3, z: float = 3.5, refit: bool = True) -> None:  # fmt: skip
    """One pipeline run: replace each file's windows, refit (unless not), seal the staged rows."""
    con, segment_dir = warehouse
    for source_file, windows in files.items():
        target = segments.replace_file(con, "window_averages", source_file)
        load_windows(con, windows, source_file, length_ms=3000 if source_file == "day.csv" else WINDOW_MS, table=target)
    if refit:
        replace_thresholds(con, min_windows=min_windows, z=z, run_id=run_id)
    segments.seal(con, segment_dir, run_id)


def full_recompute(con: duckdb.DuckDBPyConnection, tmp_path: Path, *, min_windows: int, z: float) -> list[tuple]:
    """The table a full recompute gives on a plain copy of the same windows."""
    other = duckdb.connect(str(tmp_path / "full.duckdb"))
    schema.create_tables(other)
    other.register("copied", con.execute("SELECT * FROM window_averages").df())
    other.execute("INSERT INTO window_averages SELECT * FROM copied")
    replace_thresholds(other, min_windows=min_windows, z=z)
    rows = other.execute("SELECT * FROM anomaly_thresholds ORDER BY key").fetchall()
    other.close()
    (tmp_path / "full.duckdb").unlink()
    return rows


def table_rows(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("SELECT * FROM anomaly_thresholds ORDER BY key").fetchall()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=windows_by_key, old=windows_by_key, new=windows_by_key, min_windows=st.integers(1, 6))
def test_a_run_updates_the_histogram_by_its_file_and_equals_a_full_recompute(
    tmp_path_factory: pytest.TempPathFactory, history: Windows, old: Windows, new: Windows, min_windows: int
) -> None:
    tmp_path = tmp_path_factory.mktemp("run")
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"))
    segments.prepare(con, tmp_path / "segments")
    wh = (con, tmp_path / "segments")
    try:
        run(wh, "r1", {"history.csv": history, "day.csv": old}, min_windows=min_windows)
        run(wh, "r2", {"day.csv": new}, min_windows=min_windows)  # the file is replayed
        assert table_rows(con) == full_recompute(con, tmp_path, min_windows=min_windows, z=3.5)
        kept = con.execute("SELECT * FROM threshold_histogram ORDER BY ALL").fetchall()
        con.execute("DELETE FROM threshold_key_files")  # forget the ledger: the next refit rebuilds
        replace_thresholds(con, min_windows=min_windows, z=3.5, run_id="r3")
        assert con.execute("SELECT * FROM threshold_histogram ORDER BY ALL").fetchall() == kept
    finally:
        con.close()


def test_a_run_does_not_read_the_other_files_windows(
    warehouse: tuple[duckdb.DuckDBPyConnection, Path], tmp_path: Path
) -> None:
    con, _ = warehouse
    run(warehouse, "r1", {"history.csv": singles({"a": [1.0, 2.0, 3.0, 4.0], "b": [5.0, 6.0, 7.0, 8.0]})})
    run(warehouse, "r2", {"day.csv": singles({"a": [2.0, 2.5], "c": [9.0, 9.0, 9.5]})})
    (history_segment,) = [
        Path(path) for (path,) in con.execute(
            "SELECT path FROM segments WHERE table_name = 'window_averages' AND source_file = 'history.csv'"
        ).fetchall()
    ]  # fmt: skip
    target = segments.replace_file(con, "window_averages", "day.csv")
    load_windows(con, singles({"a": [2.0, 30.0], "c": [9.0, 9.0]}), "day.csv", length_ms=3000, table=target)
    hidden = history_segment.with_name("hidden")
    history_segment.rename(hidden)  # a refit that opened it would fail
    try:
        replace_thresholds(con, min_windows=3, z=3.5, run_id="r3")
    finally:
        hidden.rename(history_segment)
    segments.seal(con, warehouse[1], "r3")
    assert table_rows(con) == full_recompute(con, tmp_path, min_windows=3, z=3.5)
    assert thresholds_table(con)["a"]["max_avg_amount"] == 30.0


def test_a_run_that_skipped_the_refit_is_caught_up_by_the_next(
    warehouse: tuple[duckdb.DuckDBPyConnection, Path], tmp_path: Path
) -> None:
    """A run that published the file's windows without this step (a selection without the anomaly
    assets) leaves a ledger naming windows that are gone: the next run rebuilds the histogram."""
    con, _ = warehouse
    run(
        warehouse,
        "r1",
        {"history.csv": singles({"a": [1.0, 2.0, 3.0, 4.0]}), "day.csv": singles({"a": [1.0, 1.0, 9.0]})},
    )
    run(warehouse, "r2", {"day.csv": singles({"a": [8.0, 8.0, 9.0]})}, refit=False)  # same count and max
    before = thresholds_table(con)["a"]
    run(warehouse, "r3", {"other.csv": singles({"b": [1.0, 1.0, 1.0]})})
    assert thresholds_table(con)["a"]["log_center"] != before["log_center"]
    assert table_rows(con) == full_recompute(con, tmp_path, min_windows=3, z=3.5)


def test_a_row_changed_by_another_tool_is_refitted(
    warehouse: tuple[duckdb.DuckDBPyConnection, Path], tmp_path: Path
) -> None:
    con, _ = warehouse
    run(warehouse, "r1", {"history.csv": singles({"a": [1.0, 2.0, 3.0, 4.0], "b": [5.0, 6.0, 7.0, 8.0]})})
    con.execute("UPDATE anomaly_thresholds SET max_avg_amount = 0, threshold = 0 WHERE key = 'b'")
    con.execute("DELETE FROM anomaly_thresholds WHERE key = 'a'")
    run(warehouse, "r2", {"new.csv": singles({"c": [1.0, 1.0, 1.0]})})
    assert set(thresholds_table(con)) == {"a", "b", "c"} and thresholds_table(con)["b"]["max_avg_amount"] == 8.0
    assert table_rows(con) == full_recompute(con, tmp_path, min_windows=3, z=3.5)


def test_other_parameters_refit_every_key(warehouse: tuple[duckdb.DuckDBPyConnection, Path], tmp_path: Path) -> None:
    con, _ = warehouse
    run(warehouse, "r1", {"history.csv": singles({"a": [1.0, 2.0, 3.0, 40.0], "b": [5.0, 6.0, 7.0, 80.0]})})
    run(warehouse, "r2", {"new.csv": singles({"c": [1.0, 2.0, 3.0]})}, z=2.0)
    assert {row["z"] for row in thresholds_table(con).values()} == {2.0}
    assert table_rows(con) == full_recompute(con, tmp_path, min_windows=3, z=2.0)


def test_a_file_whose_windows_are_gone_leaves_the_histogram(
    warehouse: tuple[duckdb.DuckDBPyConnection, Path], tmp_path: Path
) -> None:
    con, _ = warehouse
    run(warehouse, "r1", {"history.csv": singles({"a": [1.0, 2.0, 3.0]}), "day.csv": singles({"d": [1.0, 2.0, 3.0]})})
    run(warehouse, "r2", {"day.csv": {}})  # replayed with no windows (every row rejected)
    assert set(thresholds_table(con)) == {"a"}
    assert con.execute("SELECT count(*) FROM threshold_histogram WHERE key = 'd'").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM threshold_key_files WHERE key = 'd'").fetchone() == (0,)
    assert table_rows(con) == full_recompute(con, tmp_path, min_windows=3, z=3.5)


def test_a_refit_without_a_run_id_is_rebuilt_by_the_next_run(
    warehouse: tuple[duckdb.DuckDBPyConnection, Path], tmp_path: Path
) -> None:
    """A script's refit without `run_id` leaves a ledger that names no writer: the next run must not
    add the file's windows a second time."""
    con, segment_dir = warehouse
    target = segments.replace_file(con, "window_averages", "history.csv")
    load_windows(con, singles({"a": [1.0, 2.0, 3.0, 4.0], "b": [5.0, 6.0, 7.0]}), "history.csv", table=target)
    replace_thresholds(con, min_windows=3, z=3.5)
    segments.seal(con, segment_dir, "script")
    run(warehouse, "r2", {"day.csv": singles({"a": [2.0, 2.5], "c": [9.0, 9.0, 9.5]})})
    assert con.execute("SELECT sum(windows) FROM threshold_histogram").fetchone() == (
        con.execute("SELECT count(*) FROM window_averages").fetchone()
    )
    assert set(con.execute("SELECT DISTINCT run_id FROM threshold_key_files").fetchall()) == {("script",), ("r2",)}
    assert table_rows(con) == full_recompute(con, tmp_path, min_windows=3, z=3.5)
