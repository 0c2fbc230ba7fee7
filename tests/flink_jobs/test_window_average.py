"""The PyFlink job itself: exact results, deterministic at every parallelism."""

from __future__ import annotations

import random

import pytest

from tests.conftest import (
    read_job_output,
    run_flink_job,
    transactions_db,
    write_staged_input,
)
from warehouse import reconcile, synthetic
from warehouse.replay import ReplayConfig, replay

LAB_MS = 1715421600000  # 2024-05-11 10:00:00 UTC


# --- real Flink runs --------------------------------------------------------------------------


@pytest.mark.flink
def test_lab_example_gives_the_two_lab_windows(tmp_path):
    staged = write_staged_input(
        tmp_path / "in.csv", [(1, "tx1", LAB_MS, 100.0), (2, "tx1", LAB_MS + 3000, 200.0), (3, "tx1", LAB_MS + 6000, 300.0)]
    )
    figures = run_flink_job(staged, tmp_path / "out", parallelism=2)
    windows, late = read_job_output(tmp_path / "out")
    assert windows.values.tolist() == [
        ["tx1", LAB_MS, LAB_MS + 5000, 150.0, 2],
        ["tx1", LAB_MS + 5000, LAB_MS + 10000, 300.0, 1],
    ]
    assert late.empty
    assert figures["windows"] == 2 and figures["late_events"] == 0


@pytest.mark.flink
def test_generated_data_equals_independent_recomputation_at_parallelism_1_and_4(tmp_path, generated_20k):
    events = synthetic.read_events(generated_20k)
    config = ReplayConfig()
    staged = write_staged_input(tmp_path / "in.csv", events)
    con = transactions_db(tmp_path / "reference.duckdb", events)
    expected_windows = reconcile.expected_window_averages(con, config, source_file="input.csv")
    expected_late = reconcile.expected_late_events(con, config, source_file="input.csv")
    assert len(expected_late) >= 0.05 * len(events), "the generated file must exercise lateness"

    outputs = {}
    for parallelism in (1, 4):
        windows, late = read_job_output_after(tmp_path / f"out{parallelism}", staged, parallelism)
        comparison = reconcile.compare_window_averages(windows, expected_windows)
        assert comparison["equal"], comparison["examples"]
        assert comparison["windows_compared"] == len(expected_windows)
        assert reconcile.compare_late_events(late, expected_late)["equal"]
        assert len(events) == windows["txn_count"].sum() + len(late)
        outputs[parallelism] = (windows, late)
    # identical, not merely equivalent, across parallelism
    assert outputs[1][0].equals(outputs[4][0]) and outputs[1][1].equals(outputs[4][1])


def read_job_output_after(output, staged, parallelism):
    run_flink_job(staged, output, parallelism=parallelism)
    return read_job_output(output)


@pytest.mark.flink
def test_awkward_keys_amounts_and_times_match_the_reference(tmp_path):
    """Keys with commas, quotes, newlines and Unicode; extreme amounts; times before 1970."""
    keys = ['a,b', 'say "hi"', "line\nbreak", "카드-7", "  padded  ", "x" * 300]
    rng = random.Random(11)
    amounts = [1e308, 1e308, -0.0, 5e-324, 0.1, 0.2, 0.3, -123.45, 99999999.99]
    events, ts = [], -86_400_000  # one day before the epoch
    for row in range(1, 601):
        ts += rng.randint(0, 900)
        delay = rng.choice([0, 0, 0, 300, 1500, 7000])
        events.append((row, rng.choice(keys), ts - delay, rng.choice(amounts)))
    config = ReplayConfig(window_size_ms=2000, out_of_orderness_ms=500, allowed_lateness_ms=250)
    staged = write_staged_input(tmp_path / "in.csv", events)
    run_flink_job(
        staged, tmp_path / "out", parallelism=3,
        window_size_ms=2000, out_of_orderness_ms=500, allowed_lateness_ms=250,
    )  # fmt: skip
    windows, late = read_job_output(tmp_path / "out")
    reference = replay(events, config)
    assert [tuple(r) for r in windows.itertuples(index=False)] == sorted(reference.windows)
    assert [tuple(r) for r in late.itertuples(index=False)] == reference.late
    assert set(windows["key"]) <= set(keys)
    assert len(late) > 0 and (windows["window_start_ms"] < 0).any()


def test_cli_help_describes_the_job():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "flink_jobs.window_average", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "--window-size-ms" in done.stdout and "--out-of-orderness-ms" in done.stdout
