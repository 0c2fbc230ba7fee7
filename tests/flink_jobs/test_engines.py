"""The two engines (`--engine datastream|sql`) give identical, exact output."""

from __future__ import annotations

import math
import random
import struct
from fractions import Fraction

import pytest

from flink_jobs import exact_sql
from flink_jobs.window_average import PartialAverageAggregate
from tests.conftest import read_job_output, run_flink_job, transactions_db, write_staged_input
from warehouse import reconcile, synthetic
from warehouse.replay import ReplayConfig, exact_mean, replay

ENGINES = ("datastream", "sql")


def _from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


# Values at the edges of the exact decomposition: zeros, subnormals, the normal/subnormal border,
# powers of two and their neighbours (where FLOOR(LOG2(x)) may be off by one), exponent-bucket
# borders, money-like values and the largest doubles.
AWKWARD_AMOUNTS = sorted(
    {
        0.0, -0.0, 5e-324, -5e-324, 1e-323, _from_bits(0x000FFFFFFFFFFFFF), _from_bits(0x0010000000000000),
        _from_bits(0x0010000000000001), 2.2250738585072014e-308, 1e-300, 0.1, 0.2, 0.3, 1 / 3, 0.01, 1.0,
        -1.0, 1e308, -1e308, 1.7976931348623157e308, -1.7976931348623157e308, 8.98846567431158e307,
        123456.789, 99999999.99, 2.0**53, 2.0**53 + 2, 2.0**63, 2.0**64, 2.0**-1022, 2.0**-1000,
    }
    | {math.nextafter(2.0**k, 0.0) for k in range(-1074, 1024, 7)}
    | {2.0**k for k in range(-1074, 1024, 11)}
    | {math.nextafter(2.0**k, math.inf) for k in (-1023, -1022, -30, -1, 0, 1, 22, 30, 52, 53, 1000, 1022)}
    | {-(2.0**k) * 1.5 for k in (-1060, -500, 10, 900)},
    key=lambda x: (x, math.copysign(1.0, x)),
)


# --- the exact arithmetic on partials (no Flink) ----------------------------------------------


def _decompose(x: float) -> tuple[int, int, int, int]:
    """What the SQL decomposition computes, in Python (for the unit tests of the finishing step)."""
    if x == 0:
        return exact_sql.MIN_EXPONENT, 0, 0, 0
    m, d = abs(x).as_integer_ratio()
    e = m.bit_length() - d.bit_length()  # floor(log2|x|)
    q = max(32 * ((e - 54) // 32), exact_sql.MIN_EXPONENT)
    scaled = Fraction(m, d) / Fraction(2) ** q
    assert scaled.denominator == 1 and scaled < 2**87
    mm = scaled.numerator
    sign = -1 if x < 0 else 1
    return q, sign * (mm >> 58), sign * ((mm >> 29) & (2**29 - 1)), sign * (mm & (2**29 - 1))


def test_partials_combine_to_the_exact_mean_in_any_order():
    rng = random.Random(5)
    values = AWKWARD_AMOUNTS + [rng.uniform(-1e6, 1e6) for _ in range(300)]
    parts = [(*_decompose(v), 1) for v in values]
    for q, hi, mid, lo, _ in parts:
        assert abs(hi) < 2**30 and abs(mid) < 2**29 and abs(lo) < 2**29
    assert exact_sql.exact_mean_of_partials(parts) == (exact_mean(values), len(values))
    rng.shuffle(parts)
    agg = PartialAverageAggregate()
    left = agg.create_accumulator()
    for p in parts[:100]:
        left = agg.add(("k", 0, *p), left)
    right = agg.create_accumulator()
    for p in parts[100:]:
        right = agg.add(("k", 0, *p), right)
    assert agg.get_result(agg.merge(right, left)) == (exact_mean(values), len(values))


def test_every_awkward_value_round_trips_through_partials():
    assert len(AWKWARD_AMOUNTS) > 400
    for x in AWKWARD_AMOUNTS:
        mean, count = exact_sql.exact_mean_of_partials([(*_decompose(x), 1)])
        assert count == 1 and struct.pack("<d", mean) == struct.pack("<d", x + 0.0), x


def test_finish_partials_writes_the_exact_mean_per_window_in_any_batch_size(tmp_path):
    """The sql engine's client step, on partial files shaped as Flink's JSON sink writes them."""
    import json

    rng = random.Random(11)
    windows = {}
    for i in range(300):
        key = rng.choice(["a", "b", 'quote"d', "ünï"])
        start = rng.randrange(-5, 5) * 5000
        windows.setdefault((key, start), []).extend(rng.sample(AWKWARD_AMOUNTS, rng.randint(1, 4)))
    partial_dir = tmp_path / "partials"
    partial_dir.mkdir()
    files = [open(partial_dir / f"part-{n}", "w", encoding="utf-8") for n in range(3)]
    for (key, start), values in windows.items():
        by_q = {}
        for v in values:
            q, hi, mid, lo = _decompose(v)
            acc = by_q.setdefault(q, [0, 0, 0, 0])
            acc[0] += hi; acc[1] += mid; acc[2] += lo; acc[3] += 1  # fmt: skip
        for q, (hi, mid, lo, n) in by_q.items():  # a window's partials spread over several files
            record = {"key": key, "window_start_ms": start, "q": q, "hi": hi, "mid": mid, "lo": lo, "txn_count": n}
            rng.choice(files).write(json.dumps(record) + "\n")
    for handle in files:
        handle.close()
    outputs = []
    for batch_rows in (1, 3, 200_000):
        out = tmp_path / f"windows_{batch_rows}"
        assert exact_sql.finish_partials(partial_dir, out, 5000, batch_rows=batch_rows) == len(windows)
        outputs.append(sorted((out / "part-0.jsonl").read_text(encoding="utf-8").splitlines()))
    assert outputs[0] == outputs[1] == outputs[2]
    got = {(w["key"], w["window_start_ms"]): w for w in map(json.loads, outputs[0])}
    assert got.keys() == windows.keys()
    for (key, start), values in windows.items():
        w = got[key, start]
        assert w["window_end_ms"] == start + 5000 and w["txn_count"] == len(values)
        assert struct.pack("<d", w["avg_amount"]) == struct.pack("<d", exact_mean(values)), (key, start)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "part-0").write_text("")
    assert exact_sql.finish_partials(empty, tmp_path / "none", 5000) == 0
    assert (tmp_path / "none" / "part-0.jsonl").read_text() == ""


# --- real Flink runs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated_reference(tmp_path_factory, generated_20k):
    """The 20k-row test data (disorder, > 5% late), staged, plus its DuckDB recomputation."""
    tmp = tmp_path_factory.mktemp("engines")
    events = synthetic.read_events(generated_20k)
    staged = write_staged_input(tmp / "in.csv", events)
    con = transactions_db(tmp / "reference.duckdb", events)
    config = ReplayConfig()
    expected = (
        reconcile.expected_window_averages(con, config, source_file="input.csv"),
        reconcile.expected_late_events(con, config, source_file="input.csv"),
    )
    con.close()
    assert len(expected[1]) >= 0.05 * len(events)
    return events, staged, expected


@pytest.mark.flink
def test_both_engines_equal_the_recomputation_and_each_other_at_parallelism_1_and_4(
    tmp_path, generated_reference
):
    events, staged, (expected_windows, expected_late) = generated_reference
    outputs = {}
    for engine in ENGINES:
        for parallelism in (1, 4):
            out = tmp_path / f"{engine}-{parallelism}"
            figures = run_flink_job(staged, out, parallelism=parallelism, engine=engine)
            windows, late = read_job_output(out)
            comparison = reconcile.compare_window_averages(windows, expected_windows)
            assert comparison["equal"], (engine, parallelism, comparison["examples"])
            assert comparison["windows_compared"] == len(expected_windows)
            assert reconcile.compare_late_events(late, expected_late)["equal"], (engine, parallelism)
            assert len(events) == windows["txn_count"].sum() + len(late)
            assert figures["windows"] == len(windows) and figures["late_events"] == len(late)
            outputs[(engine, parallelism)] = (windows, late)
    reference_windows, reference_late = outputs[("datastream", 1)]
    for key, (windows, late) in outputs.items():
        # identical frames, avg_amount compared as bits
        assert windows.equals(reference_windows), key
        assert late.equals(reference_late), key
        assert (
            windows["avg_amount"].to_numpy().view("int64") == reference_windows["avg_amount"].to_numpy().view("int64")
        ).all()


@pytest.fixture(scope="module")
def awkward_events():
    """Awkward keys and times before 1970 with mixed extreme amounts (several values per window),
    plus every awkward amount alone in its own window (so its average must be itself)."""
    keys = ['a,b', 'say "hi"', "line\nbreak", "카드-7", "  padded  ", "x" * 300]
    rng = random.Random(11)
    mixed = [1e308, 1e308, -0.0, 5e-324, 0.1, 0.2, 0.3, -123.45, 99999999.99, -1e308, 2.0**-1022]
    events, ts = [], -86_400_000  # one day before the epoch
    for row in range(1, 601):
        ts += rng.randint(0, 900)
        delay = rng.choice([0, 0, 0, 300, 1500, 7000])
        events.append((row, rng.choice(keys), ts - delay, rng.choice(mixed)))
    # singletons: far in the future, in file order, 10 s apart (never late, one value per window)
    base = 4_000_000_000_000
    for i, amount in enumerate(AWKWARD_AMOUNTS):
        events.append((len(events) + 1, f"single-{i}", base + 10_000 * i, amount))
    return events


@pytest.mark.flink
@pytest.mark.parametrize("engine", ENGINES)
def test_awkward_values_match_the_reference(tmp_path, awkward_events, engine):
    config = ReplayConfig(window_size_ms=2000, out_of_orderness_ms=500, allowed_lateness_ms=250)
    staged = write_staged_input(tmp_path / "in.csv", awkward_events)
    run_flink_job(
        staged, tmp_path / "out", parallelism=3, engine=engine,
        window_size_ms=2000, out_of_orderness_ms=500, allowed_lateness_ms=250,
    )  # fmt: skip
    windows, late = read_job_output(tmp_path / "out")
    reference = replay(awkward_events, config)
    actual = [tuple(r) for r in windows.itertuples(index=False)]
    assert len(actual) == len(reference.windows)
    for got, want in zip(actual, sorted(reference.windows)):
        assert got[:3] == want[:3] and got[4] == want[4], (got, want)
        assert struct.pack("<d", got[3]) == struct.pack("<d", want[3]), (got, want)
    assert [tuple(r) for r in late.itertuples(index=False)] == reference.late
    assert len(late) > 0 and (windows["window_start_ms"] < 0).any()
    singles = windows[windows["key"].str.startswith("single-")]
    assert [struct.pack("<d", a) for a in singles.sort_values("window_start_ms")["avg_amount"]] == [
        struct.pack("<d", x + 0.0) for x in AWKWARD_AMOUNTS  # + 0.0: the mean of -0.0 is 0.0
    ]


def test_cli_accepts_both_engines():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "flink_jobs.window_average", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "{sql,datastream}" in done.stdout


def test_aggregate_does_not_overflow_or_divide_by_zero():
    agg = PartialAverageAggregate()
    acc = agg.create_accumulator()
    for _ in range(2):
        acc = agg.add(("k", 0, *_decompose(1e308), 1), acc)
    assert agg.get_result(acc) == (1e308, 2)  # the plain float sum would be inf
    assert agg.get_result(agg.create_accumulator()) == (None, 0)
