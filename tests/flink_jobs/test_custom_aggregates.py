"""Your own AggregateFunction inside the Flink job (flink_jobs/custom_aggregates.py), by import path.

The Flink tests run the real job (`python -m flink_jobs.window_job --aggregate ...`) once per case
and compare every window's value with an independent computation over the reference's on-time
events (warehouse.replay.replay(...).contents); the others test the validation, the Python fold
and the failure sentences without a JVM.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from flink_jobs import custom_aggregates as ca
from tests.conftest import REPO_ROOT, job_windows, transactions_db
from tests.flink_jobs import custom_aggregate_examples as examples
from tests.flink_jobs.disorder import disordered_events
from warehouse import custom_aggregates, flink_output, replay
from warehouse.windows import WindowSpec

LAB_SEED = REPO_ROOT.parent / "shared" / "seed"  # the lab's job, read-only, outside the repository
EX = "tests.flink_jobs.custom_aggregate_examples"
MEDIAN = "flink_jobs.aggregates.median:MedianAmount"
# The lab's own (sum, count) -> average class, unchanged, when its job is next to the repository;
# otherwise our stand-in with the same interface and arithmetic, so the test runs everywhere.
LAB = "lab_job:AverageAggregate" if (LAB_SEED / "lab_job.py").is_file() else f"{EX}:SumCountAverage"
AGGREGATES = [f"{EX}:WeightedSum", f"{EX}:Partials", MEDIAN, f"{EX}:NoneForSingles", LAB]
SPECS = {
    # windows large enough that many hold more than PARTIAL_EVENTS events of a key (split + merge)
    "tumbling": WindowSpec.of("tumbling", size_ms=30_000, out_of_orderness_ms=1000, allowed_lateness_ms=700),
    "sliding": WindowSpec.of(
        "sliding", size_ms=30_000, slide_ms=10_000, out_of_orderness_ms=1000, allowed_lateness_ms=300
    ),  # fmt: skip
    "session": WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=1000, allowed_lateness_ms=500),
}
CASES = [("tumbling", 1), ("sliding", 4), ("session", 1), ("session", 4)]
EVENTS = disordered_events(6000, seed=11)


def run_job(workdir: Path, spec: WindowSpec, parallelism: int, aggregates: list[str], events=EVENTS):
    """The real job as the asset runs it, its output loaded into a real DuckDB file."""
    workdir.mkdir(parents=True, exist_ok=True)
    con = transactions_db(workdir / "w.duckdb", events)
    staged, output = workdir / "staged.csv", workdir / "output"
    flink_output.stage_input(con, "input.csv", staged)
    command = [sys.executable, "-m", "flink_jobs.window_job", "--input", str(staged), "--output", str(output),
               "--parallelism", str(parallelism), *spec.job_arguments()]  # fmt: skip
    for path in aggregates:
        command += ["--aggregate", path]
    pythonpath = os.pathsep.join(p for p in (str(LAB_SEED), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": pythonpath})  # fmt: skip
    return con, done, output


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(kind, parallelism) -> (DuckDB connection, job figures, reference), each job run once."""
    runs: dict[tuple[str, int], tuple] = {}

    def get(kind: str, parallelism: int):
        if (kind, parallelism) not in runs:
            workdir = tmp_path_factory.mktemp(f"{kind}-p{parallelism}")
            con, done, output = run_job(workdir, SPECS[kind], parallelism, AGGREGATES)
            assert done.returncode == 0, done.stderr[-4000:]
            flink_output.load_output(con, output, "input.csv", SPECS[kind])
            custom_aggregates.load_output(con, output, "input.csv")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            runs[(kind, parallelism)] = (con, figures, replay.replay(EVENTS, SPECS[kind]))
        return runs[(kind, parallelism)]

    yield get
    for con, _, _ in runs.values():
        con.close()


def values(con, aggregate: str) -> dict[tuple[str, int, int], float | None]:
    rows = con.execute(
        "SELECT key, window_start_ms, window_end_ms, value FROM custom_aggregates WHERE aggregate = ?", [aggregate]
    ).fetchall()
    found = {(key, start, end): value for key, start, end, value in rows}
    assert len(found) == len(rows), "one row per window and aggregate"
    return found


def exact_median(amounts: list[Decimal]) -> float:
    ordered = sorted(float(a) for a in amounts)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# --- the real job --------------------------------------------------------------------------------


@pytest.mark.flink
@pytest.mark.parametrize("kind,parallelism", CASES)
def test_values_equal_an_independent_computation_over_the_on_time_events(job, kind, parallelism):
    con, figures, expected = job(kind, parallelism)
    contents = expected.contents
    assert len(expected.late) >= 50, "the data must have late events (which no aggregate may see)"
    assert job_windows(con) == expected.windows  # the windows themselves are the reference's
    assert figures["custom_aggregate_rows"] == len(AGGREGATES) * len(contents)
    weighted = values(con, f"{EX}:WeightedSum")
    assert weighted.keys() == contents.keys()
    assert weighted == {w: examples.weighted_sum(w[0], events) for w, events in contents.items()}
    assert values(con, MEDIAN) == {w: exact_median([a for _, a in events]) for w, events in contents.items()}
    singles = values(con, f"{EX}:NoneForSingles")
    assert singles == {w: None if len(events) == 1 else float(len(events)) for w, events in contents.items()}
    assert None in singles.values(), "the data must have one-event windows (NULL values)"


@pytest.mark.flink
@pytest.mark.parametrize("kind,parallelism", CASES)
def test_merge_combines_partial_accumulators(job, kind, parallelism):
    """Every piece is folded in chunks of PARTIAL_EVENTS and the partials are merged; sessions that
    Flink merged arrive as several pieces, which adds partials."""
    con, _, expected = job(kind, parallelism)
    partials = values(con, f"{EX}:Partials")
    chunks = {w: math.ceil(len(events) / ca.PARTIAL_EVENTS) for w, events in expected.contents.items()}
    assert partials.keys() == chunks.keys()
    assert max(partials.values()) >= 2, "some windows must be merged from partial accumulators"
    if kind == "session":
        assert all(partials[w] >= chunks[w] for w in chunks)
        assert any(partials[w] > chunks[w] for w in chunks), "some sessions must come from Flink's merges"
    else:
        assert partials == {w: float(n) for w, n in chunks.items()}


@pytest.mark.flink
def test_session_results_do_not_depend_on_parallelism(job):
    rows = [
        job("session", p)[0]
        .execute("SELECT aggregate, key, window_start_ms, window_end_ms, value FROM custom_aggregates ORDER BY ALL")
        .fetchall()  # fmt: skip
        for p in (1, 4)
    ]
    assert rows[0] == rows[1] and len(rows[0]) > 1000


@pytest.mark.flink
@pytest.mark.parametrize("kind,parallelism", CASES)
def test_the_labs_average_aggregate_equals_avg_amount(job, kind, parallelism):
    """The lab's AverageAggregate (or, without ../shared/seed, its stand-in: see LAB)."""
    con, _, expected = job(kind, parallelism)
    lab = values(con, LAB)
    averages = {
        (key, start, end): avg
        for key, start, end, avg in con.execute(
            "SELECT key, window_start_ms, window_end_ms, avg_amount FROM window_averages"
        ).fetchall()
    }
    assert lab.keys() == averages.keys() == expected.contents.keys()
    for window, events in expected.contents.items():
        # a float sum of n terms is within n * eps * sum(|a|) of the exact sum (recursive summation)
        bound = len(events) * 2.0**-52 * sum(abs(float(a)) for _, a in events) / len(events)
        assert abs(lab[window] - averages[window]) <= bound, (window, lab[window], averages[window])


# --- without a JVM -------------------------------------------------------------------------------


def problem(spec_text) -> str:
    with pytest.raises(ValueError) as raised:
        ca.load_aggregates(spec_text)
    return str(raised.value)


def test_load_aggregates_names_the_value_and_what_is_wrong():
    assert problem("lab_job.AverageAggregate") == (
        "TXN_AGGREGATE entry 'lab_job.AverageAggregate' is not package.module:ClassName (a dotted module path, "
        "a colon, then the class name)"
    )
    assert "TXN_AGGREGATE=' a:B,' has an empty entry" in problem(" a:B,")
    assert problem(f"{MEDIAN},{MEDIAN}") == f"TXN_AGGREGATE lists '{MEDIAN}' twice"
    message = problem("no_such_module_xyz:Median")
    assert message.startswith("TXN_AGGREGATE entry 'no_such_module_xyz:Median': module 'no_such_module_xyz' was "
                              "not found on PYTHONPATH")  # fmt: skip
    assert problem("flink_jobs.aggregates.median:Mean") == (
        "TXN_AGGREGATE entry 'flink_jobs.aggregates.median:Mean': module 'flink_jobs.aggregates.median' "
        f"({REPO_ROOT / 'flink_jobs' / 'aggregates' / 'median.py'}) has no attribute 'Mean'"
    )
    assert problem(f"{EX}:LacksMerge") == (
        f"TXN_AGGREGATE entry '{EX}:LacksMerge': LacksMerge lacks merge (an AggregateFunction needs all of "
        "create_accumulator, add, merge and get_result)"
    )
    assert "weight is a function without any of the methods" in problem(f"{EX}:weight")
    # several problems: one sentence each
    assert problem(f"{EX}:LacksMerge,{EX}:weight").count("TXN_AGGREGATE entry") == 2
    assert [path for path, _ in ca.load_aggregates(f" {MEDIAN} , {EX}:Partials ")] == [MEDIAN, f"{EX}:Partials"]
    assert ca.load_aggregates("  ") == []


def batch(windows: list[tuple[str, int, int, list[list[tuple[int, str]]]]]) -> str:
    """The columnar batch WindowBatches (Java) builds from window lines."""
    return "\n".join([
        ",".join(key.encode().hex() for key, _, _, _ in windows),
        ",".join(str(start) for _, start, _, _ in windows),
        ",".join(str(end) for _, _, end, _ in windows),
        ",".join(";".join(str(len(piece)) for piece in pieces) for _, _, _, pieces in windows),
        ",".join(str(ts) for *_, pieces in windows for piece in pieces for ts, _ in piece),
        ",".join(amount for *_, pieces in windows for piece in pieces for _, amount in piece),
    ])  # fmt: skip


def answer_lines(answer: str) -> list[str]:
    """What ResultLines (Java) makes of the answer: aggregate,hex(key),start,end,value."""
    hexes, starts, ends, *per_aggregate = answer.split("\n")
    lines = []
    for line in per_aggregate:
        path, *texts = line.split(",")
        lines += [f"{path},{h},{s},{e},{t}" for h, s, e, t in zip(hexes.split(","), starts.split(","), ends.split(","), texts)]  # fmt: skip
    return lines


def test_batch_fold_splits_pieces_into_partials_and_merges_them():
    big = [(1000 + i, f"{i}.5000") for i in range(ca.PARTIAL_EVENTS * 2 + 1)]
    windows = [('k, "1"\n', 0, 5000, [big]), ("ключ", 5000, 10000, [[(5001, "-2.0000")], [(5002, "4.2500")]])]
    fold = ca.BatchAggregator([f"{EX}:Partials", MEDIAN, f"{EX}:NoneForSingles"])
    lines = answer_lines(fold(batch(windows)))
    k1, k2 = b'k, "1"\n'.hex(), "ключ".encode().hex()
    assert lines == [
        f"{EX}:Partials,{k1},0,5000,3.0", f"{EX}:Partials,{k2},5000,10000,2.0",
        f"{MEDIAN},{k1},0,5000,16.5", f"{MEDIAN},{k2},5000,10000,1.125",
        f"{EX}:NoneForSingles,{k1},0,5000,33.0", f"{EX}:NoneForSingles,{k2},5000,10000,2.0",
    ]  # fmt: skip
    single = [("k", 0, 5000, [[(1, "7.0000")]])]
    assert answer_lines(ca.BatchAggregator([f"{EX}:NoneForSingles"])(batch(single))) == [
        f"{EX}:NoneForSingles,6b,0,5000,"
    ]


def test_a_failing_method_or_a_result_that_is_no_number_names_class_method_key_and_window():
    windows = [("tx1", 1715421600000, 1715421605000, [[(1715421600000, "100.0000"), (1715421603000, "200.0000")]])]
    with pytest.raises(ca.CustomAggregateError) as raised:
        ca.BatchAggregator([f"{EX}:RaisesInAdd"])(batch(windows))
    assert str(raised.value) == (
        f"custom aggregate {EX}:RaisesInAdd failed in the Flink job: RaisesInAdd.add raised "
        "ValueError('amount 100.0 is not welcome') for key 'tx1' in window "
        "[2024-05-11 10:00:00.000, 2024-05-11 10:00:05.000) UTC"
    )
    with pytest.raises(ca.CustomAggregateError) as raised:
        ca.BatchAggregator([f"{EX}:ReturnsText"])(batch(windows))
    assert str(raised.value) == (
        f"custom aggregate {EX}:ReturnsText failed in the Flink job: ReturnsText.get_result returned "
        "'300.00 EUR' (a str), not a number or None, for key 'tx1' in window "
        "[2024-05-11 10:00:00.000, 2024-05-11 10:00:05.000) UTC"
    )
    # the sentence survives Flink's Java exception text, whatever the key holds
    java = ("org.apache.flink.runtime.client.JobExecutionException: Job execution failed.\n\tat ...\n"
            "Caused by: pemja.core.PythonException: <class 'flink_jobs.custom_aggregates.CustomAggregateError'>: "
            f"{raised.value}\n\tat /work/main/flink_jobs/custom_aggregates.__call__(custom_aggregates.py:1)\n")  # fmt: skip
    assert ca.failure_sentence(java) == str(raised.value)
    assert ca.failure_sentence("java.lang.OutOfMemoryError: Java heap space") is None
