"""Tests for the warehouse data contract (warehouse.schema), on real DuckDB files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from warehouse import schema


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "schema.duckdb"))
    try:
        yield connection
    finally:
        connection.close()


def table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def test_contract_is_well_formed() -> None:
    assert list(schema.TABLES) == list(schema.CONTRACT)
    for table, columns in schema.CONTRACT.items():
        names = [c.name for c in columns]
        assert len(names) == len(set(names)), table
        assert ("source_file" in names) == (table != "anomaly_thresholds"), table
        assert schema.TABLES[table] == tuple((c.name, c.type) for c in columns), table
        assert schema.column_descriptions(table) == {c.name: c.description for c in columns}


def test_every_column_has_a_one_line_description() -> None:
    for table, columns in schema.CONTRACT.items():
        for column in columns:
            assert isinstance(column, schema.Column)
            text = column.description
            assert isinstance(text, str) and text.strip() == text and text, (table, column.name)
            assert "\n" not in text and "\r" not in text, (table, column.name)


def test_amounts_are_exact_decimals() -> None:
    types = {table: dict(columns) for table, columns in schema.TABLES.items()}
    assert schema.AMOUNT_TYPE == "DECIMAL(18,4)" and schema.SUM_TYPE == "DECIMAL(38,4)"
    assert types["transactions"]["amount"] == types["late_events"]["amount"] == "DECIMAL(18,4)"
    window = types["window_averages"]
    assert (window["sum_amount"], window["min_amount"], window["max_amount"]) == (
        "DECIMAL(38,4)",
        "DECIMAL(18,4)",
        "DECIMAL(18,4)",
    )
    assert window["avg_amount"] == "DOUBLE" and window["txn_count"] == "BIGINT"


def test_replays_records_every_window_parameter() -> None:
    from warehouse.windows import ENV_VARS

    columns = dict(schema.TABLES["replays"])
    for var in ENV_VARS.values():  # each window setting has its column, named after the variable
        assert var.removeprefix("TXN_").lower() in columns, var
    descriptions = schema.column_descriptions("replays")
    assert "TXN_WINDOW_KIND" in descriptions["window_kind"]


def test_create_tables_creates_every_table_with_contract_columns(con: duckdb.DuckDBPyConnection) -> None:
    schema.create_tables(con)
    assert table_names(con) == set(schema.TABLES)
    for table, columns in schema.TABLES.items():
        assert schema.describe(con, table) == list(columns), table
        assert schema.contract_mismatches(con, table) == [], table


def test_create_tables_persists_in_file(tmp_path: Path) -> None:
    path = tmp_path / "persist.duckdb"
    with duckdb.connect(str(path)) as first:
        schema.create_tables(first)
    with duckdb.connect(str(path), read_only=True) as second:
        for table, columns in schema.TABLES.items():
            assert schema.describe(second, table) == list(columns)


def test_create_tables_is_idempotent_and_keeps_data(con: duckdb.DuckDBPyConnection) -> None:
    schema.create_tables(con)
    con.execute("INSERT INTO rejected_rows VALUES ('f.csv', 1, 2, 'raw', 'reason')")
    schema.create_tables(con)
    schema.create_tables(con)
    assert table_names(con) == set(schema.TABLES)
    for table, columns in schema.TABLES.items():
        assert schema.describe(con, table) == list(columns)
    assert con.execute("SELECT * FROM rejected_rows").fetchall() == [("f.csv", 1, 2, "raw", "reason")]


def test_create_tables_adds_only_missing_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE TABLE late_events (source_file VARCHAR)")
    schema.create_tables(con)
    assert table_names(con) == set(schema.TABLES)
    # an existing table is left as it is, and the mismatch is reported
    assert schema.describe(con, "late_events") == [("source_file", "VARCHAR")]
    assert len(schema.contract_mismatches(con, "late_events")) == len(schema.TABLES["late_events"]) - 1
    assert schema.contract_mismatches(con, "transactions") == []


def test_describe_unknown_table_is_empty(con: duckdb.DuckDBPyConnection) -> None:
    assert schema.describe(con, "nope") == []


# --------------------------------------------------------------------------- #
# contract_mismatches
# --------------------------------------------------------------------------- #
def create_like_contract(
    con: duckdb.DuckDBPyConnection, table: str, *, drop: str | None = None, retype: dict[str, str] | None = None
) -> None:
    retype = retype or {}
    cols = ", ".join(f"{name} {retype.get(name, sql_type)}" for name, sql_type in schema.TABLES[table] if name != drop)
    con.execute(f"CREATE TABLE {table} ({cols})")


def test_contract_mismatches_empty_for_good_table(con: duckdb.DuckDBPyConnection) -> None:
    create_like_contract(con, "window_averages")
    assert schema.contract_mismatches(con, "window_averages") == []


def test_contract_mismatches_accepts_timestamptz_alias(con: duckdb.DuckDBPyConnection) -> None:
    create_like_contract(con, "window_averages", retype={"window_start": "TIMESTAMPTZ", "window_end": "TIMESTAMPTZ"})
    assert schema.contract_mismatches(con, "window_averages") == []


def test_contract_mismatches_reports_extra_and_reordered_columns(con: duckdb.DuckDBPyConnection) -> None:
    schema.create_tables(con)
    con.execute("ALTER TABLE window_averages ADD COLUMN note VARCHAR")
    assert schema.contract_mismatches(con, "window_averages") == ["window_averages has unexpected column(s) note"]
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type in reversed(schema.TABLES["late_events"]))
    con.execute("DROP TABLE late_events")
    con.execute(f"CREATE TABLE late_events ({columns})")
    (problem,) = schema.contract_mismatches(con, "late_events")
    assert problem.startswith("late_events columns are in the order watermark_ms") or "order" in problem


def test_contract_mismatches_reports_missing_column(con: duckdb.DuckDBPyConnection) -> None:
    create_like_contract(con, "window_averages", drop="txn_count")
    assert schema.contract_mismatches(con, "window_averages") == ["window_averages.txn_count is missing"]


def test_contract_mismatches_reports_wrong_type(con: duckdb.DuckDBPyConnection) -> None:
    create_like_contract(con, "transactions", retype={"amount": "DECIMAL(18,2)"})
    problems = schema.contract_mismatches(con, "transactions")
    assert len(problems) == 1
    assert problems[0].startswith("transactions.amount is DECIMAL(18,2)")
    assert problems[0].endswith("expected DECIMAL(18,4)")


def test_contract_mismatches_reports_naive_timestamp(con: duckdb.DuckDBPyConnection) -> None:
    create_like_contract(con, "late_events", retype={"event_time": "TIMESTAMP"})
    assert schema.contract_mismatches(con, "late_events") == [
        "late_events.event_time is TIMESTAMP, expected TIMESTAMP WITH TIME ZONE"
    ]


def test_contract_mismatches_reports_missing_and_wrong_together(con: duckdb.DuckDBPyConnection) -> None:
    create_like_contract(con, "anomaly_thresholds", drop="method", retype={"window_count": "INTEGER"})
    assert schema.contract_mismatches(con, "anomaly_thresholds") == [
        "anomaly_thresholds.method is missing",
        "anomaly_thresholds.window_count is INTEGER, expected BIGINT",
    ]


def test_contract_mismatches_reports_missing_table(con: duckdb.DuckDBPyConnection) -> None:
    assert schema.contract_mismatches(con, "rejected_rows") == ["table rejected_rows does not exist"]


# --------------------------------------------------------------------------- #
# fetch_one
# --------------------------------------------------------------------------- #
def test_fetch_one_returns_the_row(con: duckdb.DuckDBPyConnection) -> None:
    assert schema.fetch_one(con, "SELECT 1, 'a'") == (1, "a")
    assert schema.fetch_one(con, "SELECT ? + 1, ?", [41, "x"]) == (42, "x")
    assert schema.fetch_one(con, "SELECT $n * 2", {"n": 21}) == (42,)


def test_fetch_one_leaves_connection_usable(con: duckdb.DuckDBPyConnection) -> None:
    schema.create_tables(con)
    con.execute("INSERT INTO rejected_rows SELECT 'f.csv', i, i + 1, 'r' || i, 'bad' FROM range(1000) t(i)")
    assert schema.fetch_one(con, "SELECT count(*) FROM rejected_rows") == (1000,)
    # a further statement on the same connection works and sees consistent state
    con.execute("DELETE FROM rejected_rows WHERE source_row >= 10")
    assert schema.fetch_one(con, "SELECT count(*), max(source_row) FROM rejected_rows") == (10, 9)
    assert con.execute("SELECT count(*) FROM rejected_rows").fetchall() == [(10,)]


@pytest.mark.parametrize(
    "sql, count",
    [
        ("SELECT * FROM range(0)", 0),
        ("SELECT 1 WHERE false", 0),
        ("SELECT * FROM range(2)", 2),
        ("SELECT * FROM (VALUES (1), (1)) t(x)", 2),
    ],
)
def test_fetch_one_rejects_other_row_counts(con: duckdb.DuckDBPyConnection, sql: str, count: int) -> None:
    with pytest.raises(ValueError, match=f"got {count}"):
        schema.fetch_one(con, sql)
    # the connection stays usable after the error
    assert schema.fetch_one(con, "SELECT 7") == (7,)


def test_fetch_one_rejects_zero_rows_with_params(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="got 0"):
        schema.fetch_one(con, "SELECT * FROM range(3) t(i) WHERE i > ?", [5])


# --------------------------------------------------------------------------- #
# window_start_sql
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("ts", "size", "start"),
    [(0, 5000, 0), (4999, 5000, 0), (5000, 5000, 5000), (-1, 5000, -5000), (-5000, 5000, -5000),
     (-5001, 5000, -10000), (7, 3, 6), (-7, 3, -9), (1_715_421_603_000, 5000, 1_715_421_600_000)],
)  # fmt: skip
def test_window_start_sql_floors_also_before_1970(
    con: duckdb.DuckDBPyConnection, ts: int, size: int, start: int
) -> None:
    sql = f"SELECT {schema.window_start_sql('$ts::BIGINT', '$size::BIGINT')}"
    assert schema.fetch_one(con, sql, {"ts": ts, "size": size}) == (start,)
