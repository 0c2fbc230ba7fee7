"""The Flink job (Flink's own WindowOperator) against the plain-Python reference and the DuckDB
recomputation, for every window kind, at parallelism 1 and 4, on generated data with disorder."""

from __future__ import annotations

import pytest

from tests.conftest import job_late, job_windows, run_window_job, transactions_db
from tests.flink_jobs.disorder import disordered_events
from warehouse import reconcile, replay
from warehouse.windows import WindowSpec

pytestmark = pytest.mark.flink

SPECS = {
    "tumbling": WindowSpec.of("tumbling", size_ms=5000, out_of_orderness_ms=1000, allowed_lateness_ms=700),
    "sliding": WindowSpec.of(
        "sliding", size_ms=10_000, slide_ms=5000, out_of_orderness_ms=1000, allowed_lateness_ms=300
    ),
    "session": WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=1000, allowed_lateness_ms=500),
}
EVENTS = disordered_events(6000, seed=11)


@pytest.mark.parametrize("parallelism", [1, 4])
@pytest.mark.parametrize("kind", list(SPECS))
def test_job_equals_reference_and_recomputation(tmp_path, kind, parallelism):
    spec = SPECS[kind]
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    figures = run_window_job(con, tmp_path, spec, parallelism=parallelism)
    expected = replay.replay(EVENTS, spec)
    assert len(expected.late) >= 0.05 * len(EVENTS), "the data must have >= 5% late events"
    assert job_windows(con) == expected.windows
    assert job_late(con) == expected.late
    assert reconcile.expected_windows(con, spec, "input.csv") == expected.windows
    windows_report, late_report = reconcile.compare_tables(con, spec, "input.csv")
    assert windows_report["equal"] and late_report["equal"], (windows_report, late_report)
    assert figures["windows"] == len(expected.windows) and figures["late_events"] == len(expected.late)
    # nothing lost: every event is counted in a window or late
    assert sum(w[3] for w in expected.windows) >= len(EVENTS) - len(expected.late)
