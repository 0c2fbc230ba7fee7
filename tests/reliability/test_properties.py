"""Property-based tests: random CSVs of valid and invalid rows never crash a run and lose nothing.

For every generated file: data rows in the file = transactions + rejected_rows, every row lands where
the generator says it should (valid rows with their exact values, invalid rows with the expected
reason), and transactions = rows counted in windows + late events. Many examples go through ingest +
the reference replay (fast); a few go through the real pipeline (Dagster, Flink, DuckDB).
"""

from __future__ import annotations

import gzip
import io
import math
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.common import BLOCKING_CHECKS, check_results, failure_message, run_pipeline
from warehouse.ingest import read_transactions
from warehouse.replay import ReplayConfig, replay

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MIN_MS = (datetime(1, 1, 2, tzinfo=timezone.utc) - EPOCH) // timedelta(milliseconds=1)
MAX_MS = (datetime(9999, 12, 30, tzinfo=timezone.utc) - EPOCH) // timedelta(milliseconds=1)
BASE_MS = (datetime(2024, 5, 11, 10, tzinfo=timezone.utc) - EPOCH) // timedelta(milliseconds=1)

_KEY_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
KEYS = st.one_of(
    st.sampled_from(["tx1", "tx2", "k,ey", 'q"uote', "multi\nline", "ключ", "😀"]),
    st.text(_KEY_CHARS, min_size=1, max_size=12).filter(lambda k: k.strip() == k and k != ""),
)


def fmt_ts(ms: int, style: int) -> str:
    t = EPOCH + timedelta(milliseconds=ms)
    base = f"{t.year:04d}-{t.month:02d}-{t.day:02d}{' T'[style % 2]}{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if style >= 2 or ms % 1000:
        base += f".{ms % 1000:03d}"
    return base + ("Z" if style == 3 else "")


@st.composite
def valid_row(draw, near: bool):
    ms = draw(st.integers(BASE_MS - 20_000, BASE_MS + 60_000) if near else st.integers(MIN_MS, MAX_MS))
    amount = draw(st.floats(allow_nan=False, allow_infinity=False, width=64))
    style = draw(st.integers(0, 3))
    return {"fields": [draw(KEYS), fmt_ts(ms, style), repr(amount)], "valid": (ms, amount)}


# (fields or raw line, reason fragment)
INVALID = st.sampled_from([
    (["tx1", "2024-05-11 10:00:00", "1,234.50"], "thousands separators"),
    (["tx1", "2024-05-11 10:00:00", "nan"], "not a finite number"),
    (["tx1", "2024-05-11 10:00:00", "1e309"], "too large"),
    (["tx1", "2024-05-11 10:00:00", ""], "missing amount"),
    (["tx1", "2024-02-30 10:00:00", "1"], "does not exist"),
    (["tx1", "11/05/2024 10:00", "1"], "unparseable timestamp"),
    (["", "2024-05-11 10:00:00", "1"], "missing transaction_id"),
    (["   ", "2024-05-11 10:00:00", "1"], "missing transaction_id"),
    (["tx1", "2024-05-11 10:00:00"], "expected 3 fields, got 2"),
    (["tx1", "2024-05-11 10:00:00", "1", "x"], "expected 3 fields, got 4"),
    (["t\x00x", "2024-05-11 10:00:00", "1"], "NUL"),
    ('"tx1"x,2024-05-11 10:00:00,1', "malformed quoting"),
])


def quote(field: str, always: bool) -> str:
    """RFC 4180 quoting (csv.writer leaves a lone CR unquoted when the line terminator is LF)."""
    if always or any(c in field for c in ',"\r\n'):
        return '"' + field.replace('"', '""') + '"'
    return field


@st.composite
def csv_files(draw, max_rows: int = 40, near: bool | None = None):
    near = draw(st.booleans()) if near is None else near
    rows = draw(st.lists(st.one_of(valid_row(near), INVALID.map(lambda x: {"fields": x[0], "reason": x[1]})),
                         max_size=max_rows))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO()
    out.write(f"transaction_id,timestamp,amount{newline}")
    quote_all = draw(st.booleans())
    for row in rows:
        if isinstance(row["fields"], str):
            out.write(row["fields"] + newline)
        else:
            out.write(",".join(quote(f, quote_all) for f in row["fields"]) + newline)
    data = out.getvalue().encode("utf-8")
    compressed = draw(st.booleans())
    return (gzip.compress(data, mtime=0) if compressed else data), rows, compressed


def ingest(path: Path, chunk_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    chunks = list(read_transactions(path, chunk_rows=chunk_rows))
    return (pd.concat([c.valid for c in chunks], ignore_index=True),
            pd.concat([c.rejected for c in chunks], ignore_index=True))


def assert_landed_as_generated(rows, valid: pd.DataFrame, rejected: pd.DataFrame) -> None:
    assert len(valid) + len(rejected) == len(rows)  # raw data rows = transactions + rejected_rows
    assert sorted(valid["source_row"].tolist() + rejected["source_row"].tolist()) == list(range(1, len(rows) + 1))
    by_row_valid = valid.set_index("source_row")
    by_row_rejected = rejected.set_index("source_row")
    for number, row in enumerate(rows, start=1):
        if "valid" in row:
            ms, amount = row["valid"]
            got = by_row_valid.loc[number]
            assert got["key"] == row["fields"][0].strip()
            assert got["event_time_ms"] == ms
            assert got["amount"] == amount and math.copysign(1, got["amount"]) == math.copysign(1, amount)
        else:
            assert row["reason"] in by_row_rejected.loc[number, "reason"]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(file=csv_files(), chunk_rows=st.sampled_from([1, 3, 200_000]),
       config=st.builds(ReplayConfig, window_size_ms=st.sampled_from([1, 1000, 5000]),
                        out_of_orderness_ms=st.sampled_from([0, 1000]),
                        allowed_lateness_ms=st.sampled_from([0, 2000])))
def test_random_files_through_ingest_and_replay(file, chunk_rows, config):
    data, rows, _ = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.csv"
        path.write_bytes(data)
        valid, rejected = ingest(path, chunk_rows)
    assert_landed_as_generated(rows, valid, rejected)
    result = replay(list(zip(valid["source_row"], valid["key"], valid["event_time_ms"], valid["amount"])), config)
    counted = sum(w[4] for w in result.windows)
    assert counted + len(result.late) == len(valid)  # transactions = counted + late


@pytest.mark.flink
@settings(max_examples=3, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(file=csv_files(max_rows=60, near=True))
def test_random_files_through_the_real_pipeline(file):
    data, rows, compressed = file
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / ("random.csv.gz" if compressed else "random.csv")
        source.write_bytes(data)
        warehouse = Path(folder) / "warehouse.duckdb"
        result = run_pipeline(source, warehouse)
        assert result.success, failure_message(result)
        checks = check_results(result)
        assert all(checks[name] for name in BLOCKING_CHECKS), checks

        import duckdb

        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            valid = con.execute("SELECT source_row, line, transaction_id, key, event_time_ms, amount "
                                "FROM transactions ORDER BY source_row").fetchdf()
            rejected = con.execute("SELECT source_row, line, raw, reason FROM rejected_rows "
                                   "ORDER BY source_row").fetchdf()
            windows = con.execute("SELECT key, window_start_ms, window_end_ms, avg_amount, txn_count "
                                  "FROM window_averages ORDER BY key, window_start_ms").fetchall()
            late = con.execute("SELECT source_row, key, event_time_ms, amount, watermark_ms "
                               "FROM late_events ORDER BY source_row").fetchall()
        finally:
            con.close()
    assert_landed_as_generated(rows, valid, rejected)
    expected = replay(list(zip(valid["source_row"], valid["key"], valid["event_time_ms"], valid["amount"])))
    assert sum(w[4] for w in windows) + len(late) == len(valid)
    assert windows == sorted(expected.windows) and late == expected.late  # Flink = reference, bit for bit
