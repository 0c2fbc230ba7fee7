"""The `anomalies` table (warehouse.anomalies) and the method's measured precision, recall and false-flag
rate on generated data, in a real DuckDB file."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest

from tests.warehouse.test_thresholds import load_windows
from warehouse import anomalies, schema
from warehouse.thresholds import METHOD, Method, fit_keys, flag_windows, replace_thresholds

Z, MIN_WINDOWS = 3.5, 30


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "anomalies.duckdb"))
    connection.execute("SET TimeZone = 'UTC'")
    schema.create_tables(connection)
    try:
        yield connection
    finally:
        connection.close()


def generate(seed: int, *, keys: int, windows: int, noise: str, spread: tuple[float, float], max_txn: int = 10,
             planted_fraction: float = 0.0, factor: float = 6.0):  # fmt: skip
    """{key: [(avg_amount, txn_count), ...]} and the set of planted (key, index) windows.

    Each key has its own level (lognormal across keys, around 45) and spread. A window holds 1 to
    `max_txn` transactions; its average is the mean of their amounts, x`factor` when planted.
    noise="normal": amount = level * (1 + spread * N(0, 1)), at least 0.01;
    noise="lognormal": amount = level * exp(spread * N(0, 1)) (heavy right tail)."""
    rng = np.random.default_rng(seed)
    data: dict[str, list[tuple[float, int]]] = {}
    planted: set[tuple[str, int]] = set()
    for k in range(keys):
        key = f"k{k:03d}"
        level = float(np.exp(rng.normal(np.log(45.0), 0.9)))
        sd = float(rng.uniform(*spread))
        counts = rng.integers(1, max_txn + 1, windows)
        chosen = set(rng.choice(windows, size=round(windows * planted_fraction), replace=False).tolist())
        rows = []
        for i, n in enumerate(counts):
            draws = rng.standard_normal(int(n))
            amounts = level * (np.maximum(1 + sd * draws, 0.01 / level) if noise == "normal" else np.exp(sd * draws))
            avg = round(float(amounts.mean()), 4) * (factor if i in chosen else 1.0)
            rows.append((avg, int(n)))
        data[key] = rows
        planted |= {(key, i) for i in chosen}
    return data, planted


def flagged_by_sql(con: duckdb.DuckDBPyConnection, data, source_file: str = "gen.csv") -> set[tuple[str, int]]:
    load_windows(con, data, source_file=source_file)
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    anomalies.replace_anomalies(con, source_file, "run-1")
    rows = con.execute("SELECT key, window_start_ms FROM anomalies WHERE source_file = ?", [source_file]).fetchall()
    return {(key, start // 5000) for key, start in rows}


def precision_recall(flagged: set, planted: set) -> tuple[float, float]:
    hits = len(flagged & planted)
    return (hits / len(flagged) if flagged else 1.0), (hits / len(planted) if planted else 1.0)


def old_rule_flags(data) -> int:
    """The rule this method replaced: median + 3.5 * MAD / 0.6745 of the raw averages, min 5 windows."""
    flagged = 0
    for rows in data.values():
        averages = [a for a, _ in rows]
        median = statistics.median(averages)
        mad = statistics.median(abs(a - median) for a in averages)
        flagged += sum(a > median + 3.5 * mad / 0.6745 for a in averages)
    return flagged


# --------------------------------------------------------------------------- #
# measured quality
# --------------------------------------------------------------------------- #
def test_planted_anomalies_in_normal_noise_are_found(con: duckdb.DuckDBPyConnection) -> None:
    # 40 keys x 500 windows, noise sd 5-25 % of the level, x6 in exactly 1 % of the windows
    data, planted = generate(1, keys=40, windows=500, noise="normal", spread=(0.05, 0.25), planted_fraction=0.01)
    assert len(planted) == 200
    flagged = flagged_by_sql(con, data)
    precision, recall = precision_recall(flagged, planted)
    print(f"normal noise, x6 in 1 %: {len(flagged)} flagged, precision {precision:.4f}, recall {recall:.4f}")
    assert recall >= 0.95
    assert precision >= 0.9
    # the SQL and the plain-Python reference flag the same windows
    ids = [(key, i) for key, rows in data.items() for i in range(len(rows))]
    windows = [(key, avg, n) for key, rows in data.items() for avg, n in rows]
    flags = flag_windows(windows, Method(z=Z, min_windows=MIN_WINDOWS))
    assert {window for window, flag in zip(ids, flags, strict=True) if flag} == flagged


def test_planted_anomalies_in_skewed_amounts_are_found(con: duckdb.DuckDBPyConnection) -> None:
    # lognormal amounts (log-sd 0.2-0.4): skewed, but x6 is still far outside for every count
    data, planted = generate(2, keys=40, windows=500, noise="lognormal", spread=(0.2, 0.4), planted_fraction=0.01)
    flagged = flagged_by_sql(con, data)
    precision, recall = precision_recall(flagged, planted)
    print(f"lognormal 0.2-0.4, x6 in 1 %: {len(flagged)} flagged, precision {precision:.4f}, recall {recall:.4f}")
    assert recall >= 0.95
    assert precision >= 0.9


def test_clean_heavy_tailed_data_is_rarely_flagged(con: duckdb.DuckDBPyConnection) -> None:
    # lognormal amounts with log-sd 0.8-1.5 (the top 1 % of single amounts is 6-30x the median), nothing planted
    data, _ = generate(3, keys=40, windows=500, noise="lognormal", spread=(0.8, 1.5))
    total = sum(len(rows) for rows in data.values())
    flagged = flagged_by_sql(con, data)
    old = old_rule_flags(data)
    print(f"clean lognormal 0.8-1.5: {len(flagged)} of {total} flagged ({len(flagged) / total:.3%}); "
          f"old rule {old} ({old / total:.2%})")  # fmt: skip
    assert len(flagged) <= 0.01 * total
    assert old > 5 * max(1, len(flagged))  # what the issue was about


def test_clean_single_transaction_windows_are_rarely_flagged(con: duckdb.DuckDBPyConnection) -> None:
    # mostly 1-2 transactions per window, like 1M amounts over many keys
    data, _ = generate(4, keys=40, windows=500, noise="lognormal", spread=(1.0, 1.0), max_txn=2)
    total = sum(len(rows) for rows in data.values())
    flagged = flagged_by_sql(con, data)
    print(f"clean lognormal 1.0, 1-2 txn: {len(flagged)} of {total} ({len(flagged) / total:.3%})")
    assert len(flagged) <= 0.01 * total


# --------------------------------------------------------------------------- #
# the table
# --------------------------------------------------------------------------- #
def steady(n: int = 40, spike_at: int | None = None, spike: float = 1000.0) -> list[tuple[float, int]]:
    rows = [(100.0 + (i % 5) - 2, 1 + i % 3) for i in range(n)]
    if spike_at is not None:
        rows[spike_at] = (spike, 1)
    return rows


def anomaly_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    names = [name for name, _ in schema.TABLES["anomalies"]]
    rows = con.execute(
        f"SELECT {', '.join(names)} FROM anomalies ORDER BY source_file, key, window_start_ms"
    ).fetchall()
    return [dict(zip(names, row, strict=True)) for row in rows]


def test_a_row_holds_the_window_and_what_it_was_judged_against(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"a": steady(spike_at=7), "b": steady()})
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    assert anomalies.replace_anomalies(con, "a.csv", "run-1") == 1
    (row,) = anomaly_rows(con)
    fit = fit_keys({"a": steady(spike_at=7)}, Method(z=Z, min_windows=MIN_WINDOWS))["a"]
    assert row["source_file"] == "a.csv" and row["key"] == "a" and row["run_id"] == "run-1"
    assert (row["window_start_ms"], row["window_end_ms"], row["txn_count"]) == (35_000, 40_000, 1)
    assert row["window_start"].timestamp() * 1000 == 35_000 and row["window_end"].timestamp() * 1000 == 40_000
    assert row["avg_amount"] == 1000.0
    assert math.isclose(row["threshold"], fit.threshold(1), rel_tol=1e-9) and row["threshold"] < 1000.0
    assert math.isclose(row["score"], fit.score(1000.0, 1), rel_tol=1e-9) and row["score"] > Z
    assert row["method"] == METHOD
    assert json.loads(row["params"]) == Method(z=Z, min_windows=MIN_WINDOWS).params()
    assert anomalies.consistency_problems(con, "a.csv") == []
    assert schema.contract_mismatches(con, "anomalies") == []


def test_replaying_a_file_replaces_only_its_rows(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"a": steady(spike_at=3)}, source_file="day1.csv")
    load_windows(con, {"a": steady(spike_at=5)}, source_file="day2.csv")
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    assert anomalies.replace_anomalies(con, "day1.csv", "run-1") == 1
    assert anomalies.replace_anomalies(con, "day2.csv", "run-2") == 1
    day1 = [r for r in anomaly_rows(con) if r["source_file"] == "day1.csv"]
    for run in ("run-3", "run-4"):  # replaying day2 twice
        assert anomalies.replace_anomalies(con, "day2.csv", run) == 1
    rows = anomaly_rows(con)
    assert len(rows) == 2
    assert [r for r in rows if r["source_file"] == "day1.csv"] == day1  # untouched, with its run id
    assert [r["run_id"] for r in rows if r["source_file"] == "day2.csv"] == ["run-4"]


def test_a_file_without_anomalies_clears_its_old_rows(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"a": steady(spike_at=3)}, source_file="f.csv")
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    assert anomalies.replace_anomalies(con, "f.csv", "run-1") == 1
    con.execute("UPDATE window_averages SET avg_amount = 100.0 WHERE avg_amount = 1000.0")  # the file, corrected
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    assert anomalies.replace_anomalies(con, "f.csv", "run-2") == 0
    assert anomaly_rows(con) == []


def test_keys_with_too_little_history_are_not_judged(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"new": steady(n=MIN_WINDOWS - 1, spike_at=2), "old": steady(spike_at=2)})
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    assert anomalies.replace_anomalies(con, "a.csv", "r") == 1
    assert [r["key"] for r in anomaly_rows(con)] == ["old"]


def test_busier_window_is_judged_against_its_own_lower_threshold(con: duckdb.DuckDBPyConnection) -> None:
    history = [(50.0 * (1 + 0.3 * math.sin(i)), 1) for i in range(60)]  # single transactions, +-30 %
    load_windows(con, {"k": history + [(75.0, 1), (75.0, 40)]})
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    anomalies.replace_anomalies(con, "a.csv", "r")
    rows = anomaly_rows(con)
    # +50 % is within the spread of single transactions, not for the mean of 40
    assert [(r["avg_amount"], r["txn_count"]) for r in rows] == [(75.0, 40)]
    (threshold_1,) = schema.fetch_one(con, "SELECT threshold FROM anomaly_thresholds")
    assert rows[0]["threshold"] < 75.0 < threshold_1


@pytest.mark.parametrize("kind", ["sliding", "session"])
def test_every_window_kind(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    # sliding: 10 s windows every 5 s (they overlap); sessions: windows of different lengths
    n = 60
    if kind == "sliding":
        starts, lengths = [i * 5000 for i in range(n)], [10_000] * n
    else:
        starts = [i * 100_000 for i in range(n)]
        lengths = [60_000 + 7_000 * (i % 4) for i in range(n)]
    rows = [(100.0 + i % 3, 2) for i in range(n)]
    rows[10] = rows[11] = (900.0, 2)  # one spike seen by two overlapping sliding windows
    for (avg, count), start, length in zip(rows, starts, lengths, strict=True):
        load_windows(con, {"k": [(avg, count)]}, starts={"k": [start]}, length_ms=length)
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    assert anomalies.replace_anomalies(con, "a.csv", "r") == 2
    found = [(r["window_start_ms"], r["window_end_ms"]) for r in anomaly_rows(con)]
    assert found == [(starts[i], starts[i] + lengths[i]) for i in (10, 11)]
    assert anomalies.consistency_problems(con, "a.csv") == []


def test_top_orders_by_score_and_gives_epoch_ms(con: duckdb.DuckDBPyConnection) -> None:
    rows = steady(n=60)
    rows[5], rows[9], rows[20] = (2000.0, 1), (5000.0, 1), (3000.0, 1)
    load_windows(con, {"k": rows})
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    assert anomalies.replace_anomalies(con, "a.csv", "r") == 3
    top = anomalies.top(con, "a.csv", 2)
    assert [t["avg_amount"] for t in top] == [5000.0, 3000.0]
    assert (top[0]["window_start"], top[0]["window_end"]) == (45_000, 50_000)
    assert top[0]["score"] > top[1]["score"] > Z
    assert anomalies.count(con, "a.csv") == 3


def test_consistency_problems_finds_broken_rows(con: duckdb.DuckDBPyConnection) -> None:
    load_windows(con, {"k": steady(spike_at=4)})
    replace_thresholds(con, min_windows=MIN_WINDOWS, z=Z)
    anomalies.replace_anomalies(con, "a.csv", "r")
    con.execute("INSERT INTO anomalies SELECT * FROM anomalies")  # duplicated
    con.execute("UPDATE anomalies SET threshold = 'inf'::DOUBLE")
    problems = anomalies.consistency_problems(con, "a.csv")
    assert "1 windows are listed more than once" in problems
    assert "2 anomalies are not above a finite threshold" in problems
    con.execute("DELETE FROM anomalies")
    con.execute(
        "INSERT INTO anomalies VALUES ('a.csv', 'k', now(), now(), 5.0, 1.0, 1.0, 'm', '{\"z\": 3.5}', 1, 1, 2, 'r')"
    )
    problems = anomalies.consistency_problems(con, "a.csv")
    assert "1 anomalies are not a window of window_averages" in problems
    assert "1 anomalies have a score that is not finite and above z" in problems
