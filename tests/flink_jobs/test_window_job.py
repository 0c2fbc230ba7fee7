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


# Aligned kinds get a watermark only when it crosses a cleanup time (k * slide + size - 1 + allowed lateness,
# flink_jobs/java/.../ReplayOperators.PerEventWatermarkOperator): the decisions must stay those of a watermark
# after every event, also before 1970, with a lateness longer than the windows, a slide that does not
# divide the size, and an out-of-orderness of 0.
EDGE_SPECS = {
    "tumbling, lateness > size, before 1970": (
        WindowSpec.of("tumbling", size_ms=2000, out_of_orderness_ms=0, allowed_lateness_ms=4500),
        -86_400_000,
    ),
    "sliding, slide not dividing size": (
        WindowSpec.of("sliding", size_ms=7000, slide_ms=3000, out_of_orderness_ms=250, allowed_lateness_ms=1),
        1_715_421_600_000,
    ),
}


@pytest.mark.parametrize("name", list(EDGE_SPECS))
def test_sparse_watermarks_keep_every_decision(tmp_path, name):
    spec, start_ms = EDGE_SPECS[name]
    events = disordered_events(4000, seed=23, start_ms=start_ms)
    con = transactions_db(tmp_path / "w.duckdb", events)
    run_window_job(con, tmp_path, spec, parallelism=2)
    expected = replay.replay(events, spec)
    assert expected.late, "the data must have late events"
    assert job_windows(con) == expected.windows
    assert job_late(con) == expected.late  # incl. the watermark each late event was judged against
