"""Readers during runs: several processes query the published warehouse while runs publish repeatedly.

Two readers open/query/close in a tight loop, one keeps long-lived connections (reconnecting every
~2 s). Meanwhile the pipeline materializes a different file into the same warehouse several times, so
every published state is distinct. Required: zero failed runs, zero failed queries, and every state a
reader saw is one of the published states, each satisfying count(transactions) = sum(txn_count) +
count(late_events) per file (checked inside the same single SQL statement).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestration.settings import REPO_ROOT
from tests.conftest import LAB_EXAMPLE
from tests.reliability.common import published_state, run_pipeline
from warehouse import synthetic

pytestmark = pytest.mark.flink

RUNS = 3
READERS = ("reconnect", "reconnect", "long")


def test_readers_never_fail_and_always_see_a_published_state(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    sources = [LAB_EXAMPLE]
    for i in range(1, RUNS):
        path = tmp_path / f"day{i}.csv"
        synthetic.write_transactions_csv(path, rows=400 * i, keys=5, seed=i, late_fraction=0.05)
        sources.append(path)

    assert run_pipeline(sources[0], warehouse).success  # readers start on a published file
    known = [json.dumps([list(r) for r in published_state(warehouse)])]
    stop = tmp_path / "stop"
    readers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.reader",
                str(warehouse),
                str(stop),
                mode,
                str(tmp_path / f"reader{i}.json"),
            ],
            cwd=REPO_ROOT,
        )
        for i, mode in enumerate(READERS)
    ]
    failed_runs = []
    try:
        for source in sources[1:] + sources[:1]:  # the last run replays the first file again
            result = run_pipeline(source, warehouse)
            if not result.success:
                failed_runs.append(str(source))
            known.append(json.dumps([list(r) for r in published_state(warehouse)]))
    finally:
        stop.touch()
        for reader in readers:
            reader.wait(120)
    reports = [json.loads((tmp_path / f"reader{i}.json").read_text()) for i in range(len(READERS))]

    queries = sum(r["queries"] for r in reports)
    failures = [f for r in reports for f in r["failures"]]
    seen = {s for r in reports for s in r["states"]}
    print(
        f"\nreaders: runs={RUNS} (+1 initial) failed_runs={len(failed_runs)} queries={queries} "
        f"failed_queries={len(failures)} distinct_states_seen={len(seen)} of {len(set(known))} published; "
        + ", ".join(f"{r['mode']}:{r['queries']}" for r in reports)
    )
    assert failed_runs == []
    assert all(reader.returncode == 0 for reader in readers)
    assert failures == []
    assert all(r["inconsistent"] == [] for r in reports)
    assert seen <= set(known), "a reader saw a state that was never published"
    assert len(set(known)) == RUNS and all(r["queries"] > 0 for r in reports)
    assert len(seen) >= 2, "the readers saw at least one publish happen"
