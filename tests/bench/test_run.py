"""The benchmark reads what the pipeline logs: its parser follows the job's finish line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from flink_jobs.window_job import finished_line

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bench_parses_the_steps_and_the_jobs_finish_line() -> None:
    bench = load_bench()
    figures = {"wall_seconds": 14.93, "flink_net_runtime_ms": 12_640, "flink_job_id": "6c04818300fdca88724ad288f1deca3b",
               "windows": 6_792_482, "late_events": 623_428}  # fmt: skip
    log = "\n".join(
        [
            'dagster - DEBUG - run - 1 - ingest_transactions - STEP_SUCCESS - Finished execution of step "ingest_transactions" in 15.5s.',
            f"dagster - INFO - run - replay_event_time_windows - {finished_line(figures)}",
            "dagster - INFO - run - replay_event_time_windows - Loaded 6,792,482 windows and 623,428 late events (31.2 s); comparing",
            'dagster - DEBUG - run - 1 - replay_event_time_windows - STEP_SUCCESS - Finished execution of step "replay_event_time_windows" in 1m2s.',
        ]
    )
    parsed = bench.parse_dagster_output(log)
    assert parsed["steps"] == {"ingest_transactions": 15.5, "replay_event_time_windows": 62.0}
    assert parsed["replay_loaded_s"] == 31.2
    assert parsed["flink_in_run"] == {**figures, "wall_seconds": 14.9, "flink_net_runtime_ms": 12_600}
