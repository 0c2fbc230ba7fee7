"""Stream mode under real Dagster runs (real Flink job with savepoints, real DuckDB file): files that
continue one another give the windows and late events of ONE replay of their concatenation."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.conftest import SAMPLE
from tests.orchestration.test_pipeline import run_pipeline

pytestmark = pytest.mark.flink

WINDOW_COLUMNS = "key, window_start_ms, window_end_ms, txn_count, sum_amount, min_amount, max_amount, avg_amount"
LATE_COLUMNS = "key, event_time_ms, amount, watermark_ms, window_start, window_end"


def cut(source: Path, folder: Path, rows_per_file: list[int], names: list[str] | None = None) -> list[Path]:
    """`source`'s data rows cut into consecutive files of the given sizes (the rest goes to the last)."""
    header, *rows = source.read_text().splitlines(keepends=True)
    folder.mkdir(parents=True, exist_ok=True)
    files, start = [], 0
    for index, size in enumerate(rows_per_file + [len(rows)]):
        if start >= len(rows):
            break
        path = folder / (names[index] if names else f"part_{index + 1}.csv")
        path.write_text(header + "".join(rows[start : start + size]))
        files.append(path)
        start += size
    return files


def tables(warehouse: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            "windows": con.execute(f"SELECT {WINDOW_COLUMNS} FROM window_averages ORDER BY ALL").fetchall(),
            "late": con.execute(f"SELECT {LATE_COLUMNS} FROM late_events ORDER BY ALL").fetchall(),
            "provisional": con.execute("SELECT count(*) FROM window_averages WHERE NOT is_final").fetchall()[0][0],
            "stream": con.execute("SELECT position, source_file FROM stream_files ORDER BY position").fetchall(),
        }


def test_sample_cut_in_two_equals_one_replay_of_the_whole(tmp_path):
    first, second = cut(SAMPLE, tmp_path / "in", [6000])
    whole = run_pipeline(SAMPLE, tmp_path / "whole.duckdb")
    assert whole.success
    warehouse = tmp_path / "stream.duckdb"
    for path in (first, second):
        result = run_pipeline(path, warehouse, replay_mode="stream")
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.check_name in ("matches_independent_replay", "transactions_conserved"):
                assert evaluation.passed, evaluation.metadata
    expected, actual = tables(tmp_path / "whole.duckdb"), tables(warehouse)
    assert actual["windows"] == expected["windows"]
    assert actual["late"] == expected["late"]
    assert len(set((w[0], w[1], w[2]) for w in actual["windows"])) == len(actual["windows"])  # no duplicates
    assert actual["stream"] == [(1, str(first)), (2, str(second))]
