"""Implausible event times under real Dagster runs: quarantined before the replay, nothing else changed.

Each file is replayed twice, with its implausible rows and without them; apart from the quarantined
rows (rejected_rows, with a reason), every table's content must be the same.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.conftest import SAMPLE
from tests.orchestration.test_pipeline import check_evaluation, check_results, run_pipeline
from warehouse.summary import summarize
from warehouse.time_outliers import REASON_PREFIX

pytestmark = pytest.mark.flink

HEADER, *ROWS = SAMPLE.read_text().splitlines()


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def retime(row: str, old: str, new: str) -> str:
    tid, timestamp, amount = row.split(",")
    assert timestamp.startswith(old)
    return ",".join([tid, new + timestamp[len(old) :], amount])


def content(warehouse: Path) -> dict[str, list[tuple]]:
    """What a replay produced, without row numbers (the files differ by the quarantined rows)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {
            "transactions": con.execute(
                "SELECT transaction_id, key, event_time_ms, amount FROM transactions ORDER BY ALL"
            ).fetchall(),
            "windows": con.execute(
                "SELECT key, window_start_ms, window_end_ms, txn_count, sum_amount, min_amount, max_amount, avg_amount "
                "FROM window_averages ORDER BY ALL"
            ).fetchall(),
            "late": con.execute(
                "SELECT key, event_time_ms, amount, watermark_ms, window_start, window_end FROM late_events ORDER BY ALL"
            ).fetchall(),
            "thresholds": con.execute("SELECT * FROM anomaly_thresholds ORDER BY ALL").fetchall(),
            "anomalies": con.execute("SELECT * EXCLUDE (source_file, run_id) FROM anomalies ORDER BY ALL").fetchall(),
            "advice": con.execute("SELECT * EXCLUDE (source_file) FROM watermark_advice ORDER BY ALL").fetchall(),
        }
    finally:
        con.close()


def rejected(warehouse: Path) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute("SELECT source_row, line, raw, reason FROM rejected_rows ORDER BY source_row").fetchall()
    finally:
        con.close()


def test_the_typod_year_in_the_sample_is_the_one_rejected_row(tmp_path: Path):
    """The issue's scenario: one row of the sample repeated with the year 2204 (a typo)."""
    typo = retime(ROWS[5999], "2024-05-11", "2204-05-11")
    source = write(tmp_path / "typo.csv", [*ROWS[:6000], typo, *ROWS[6000:]])
    result = run_pipeline(source, tmp_path / "typo.duckdb")
    assert result.success
    assert run_pipeline(SAMPLE, tmp_path / "sample.duckdb").success

    ((row, line, raw, reason),) = rejected(tmp_path / "typo.duckdb")
    assert (row, line, raw) == (6001, 6002, typo)
    assert reason.startswith(f"{REASON_PREFIX}: 2204-05-11T10:05:00.066Z is 180.0 years")
    assert "TXN_MAX_TIME_JUMP_MS=86400000" in reason and "2024-05-11T10:05:00" in reason
    with_typo, sample = content(tmp_path / "typo.duckdb"), content(tmp_path / "sample.duckdb")
    assert len(with_typo["windows"]) == 2652 and len(with_typo["thresholds"]) == 24
    assert with_typo == sample

    evaluation = check_evaluation(result, "transactions.event_times_plausible")
    assert not evaluation.passed and evaluation.metadata["implausible_time_rows"].value == 1
    assert check_results(result)["transactions.every_row_accounted_for"]
    (rejected_mat,) = [
        m
        for m in result.asset_materializations_for_node("ingest_transactions")
        if m.asset_key.path == ["rejected_rows"]
    ]
    assert rejected_mat.metadata["implausible_time_rows"].value == 1
    assert "2204-05-11 10:05:00.066" in rejected_mat.metadata["implausible_time_preview"].value
    summary = summarize(tmp_path / "typo.duckdb")
    assert "1 row quarantined for an implausible event time" in summary and typo in summary


def test_every_kind_of_outlier_is_quarantined_and_nothing_else_changes(tmp_path: Path):
    """First and last row, a year and a month typo, a burst of four, and a real jump of three days."""
    rows = [*ROWS]
    cases = {
        0: retime(rows[0], "2024-05-11", "2204-05-11"),  # the first row
        1999: retime(rows[1999], "2024-05-11", "2204-05-11"),  # a year typo
        3999: retime(rows[3999], "2024-05-11", "2024-06-11"),  # a month typo
        **{i: retime(rows[i], "2024-05-11", "2099-01-01") for i in range(4999, 5003)},  # a burst
        11999: retime(rows[11999], "2024-05-11", "2024-06-20"),  # the last row
    }
    for i in range(6000, 11999):  # the data goes quiet and resumes three days later: kept
        rows[i] = retime(rows[i], "2024-05-11", "2024-05-14")
    clean = write(tmp_path / "clean.csv", [row for i, row in enumerate(rows) if i not in cases])
    rows = [cases.get(i, row) for i, row in enumerate(rows)]
    dirty = write(tmp_path / "dirty.csv", rows)

    for source, kind in ((dirty, "session"), (clean, "session")):
        assert run_pipeline(source, tmp_path / f"{source.stem}.duckdb", window_kind=kind).success
    got = rejected(tmp_path / "dirty.duckdb")
    assert [(row, raw) for row, _, raw, _ in got] == [(i + 1, cases[i]) for i in sorted(cases)]
    assert all(reason.startswith(REASON_PREFIX) for *_, reason in got)
    assert "no rows follow it in the file" in got[-1][3]
    assert content(tmp_path / "dirty.duckdb") == content(tmp_path / "clean.duckdb")
    assert rejected(tmp_path / "clean.duckdb") == []


def test_a_one_row_file_and_the_rule_switched_off(tmp_path: Path):
    one = write(tmp_path / "one.csv", [retime(ROWS[0], "2024-05-11", "2204-05-11")])
    assert run_pipeline(one, tmp_path / "one.duckdb").success
    assert rejected(tmp_path / "one.duckdb") == []
    assert len(content(tmp_path / "one.duckdb")["windows"]) == 1

    typo = write(tmp_path / "typo.csv", [*ROWS[:100], retime(ROWS[100], "2024-05-11", "2204-05-11"), *ROWS[101:200]])
    assert run_pipeline(typo, tmp_path / "off.duckdb", max_time_jump_ms=0).success
    assert rejected(tmp_path / "off.duckdb") == []
    late = content(tmp_path / "off.duckdb")["late"]
    behind_the_typo = [row for row in late if row[3] > 4_102_444_800_000]  # a watermark after 2100-01-01
    assert len(behind_the_typo) == 99, "switched off, the typo moves the watermark and every row after it is late"
