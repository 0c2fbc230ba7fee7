"""Tests for DuckDB work beside the Flink job (warehouse.background)."""

from __future__ import annotations

import time

import duckdb
import pytest

from warehouse.background import OnOwnCursor


def _make_table(cursor: duckdb.DuckDBPyConnection, n: int) -> int:
    cursor.execute(f"CREATE TEMP TABLE _made AS SELECT range AS i FROM range({n})")
    return cursor.execute("SELECT sum(i) FROM _made").fetchall()[0][0]


def test_the_work_runs_on_a_cursor_of_its_own_and_its_temp_tables_go_with_it() -> None:
    con = duckdb.connect()
    with OnOwnCursor(con, _make_table, 1000, name="test") as work:
        assert work.result() == sum(range(1000))
        assert work.cursor.execute("SELECT count(*) FROM _made").fetchall() == [(1000,)]
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '_made'").fetchall() == [(0,)]
    with pytest.raises(duckdb.ConnectionException):
        work.cursor.execute("SELECT 1")


def test_an_error_of_the_work_is_raised_by_result() -> None:
    con = duckdb.connect()
    with OnOwnCursor(con, lambda cursor: cursor.execute("SELECT * FROM no_such_table"), name="test") as work:
        with pytest.raises(duckdb.CatalogException, match="no_such_table"):
            work.result()


def test_leaving_the_block_interrupts_work_still_running() -> None:
    con = duckdb.connect()
    started = time.monotonic()
    # minutes of work if it were not interrupted
    with OnOwnCursor(con, lambda cursor: cursor.execute("SELECT sum(i * i % 7) FROM range(100000000000) t(i)").fetchall(), name="test") as work:  # fmt: skip
        time.sleep(0.5)
    assert time.monotonic() - started < 30
    with pytest.raises(duckdb.InterruptException):
        work.result()
