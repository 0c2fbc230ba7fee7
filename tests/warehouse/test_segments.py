"""Tests for the Parquet segments behind the big tables (warehouse.segments) and their life in the store."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import duckdb
import pytest

from warehouse import schema, segments
from warehouse.store import MissingSegmentsError, SegmentWriteError, WarehouseStore


def add_rejected(con: duckdb.DuckDBPyConnection, source_file: str, *raws: str) -> None:
    target = segments.insert_target(con, "rejected_rows")
    for i, raw in enumerate(raws, start=1):
        con.execute(f"INSERT INTO {target} VALUES (?, ?, ?, ?, 'test')", [source_file, i, i + 1, raw])


def replace_rejected(con: duckdb.DuckDBPyConnection, source_file: str, *raws: str) -> None:
    target = segments.replace_file(con, "rejected_rows", source_file)
    for i, raw in enumerate(raws, start=1):
        con.execute(f"INSERT INTO {target} VALUES (?, ?, ?, ?, 'test')", [source_file, i, i + 1, raw])


def rejected(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return con.execute("SELECT source_file, raw FROM rejected_rows ORDER BY source_file, raw").fetchall()


def listed(con: duckdb.DuckDBPyConnection, table: str = "rejected_rows") -> list[tuple[str, str, int]]:
    return con.execute(
        "SELECT source_file, path, row_count FROM segments WHERE table_name = ? ORDER BY source_file, path", [table]
    ).fetchall()


def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> WarehouseStore:
    return WarehouseStore(tmp_path / "wh.duckdb")


def publish(store: WarehouseStore, run_id: str, source_file: str, *raws: str) -> None:
    with store.connect_staging(run_id) as con:
        replace_rejected(con, source_file, *raws)
    store.publish(run_id)


# --------------------------------------------------------------------------- #
# plain connections: the same code, ordinary tables
# --------------------------------------------------------------------------- #
def test_on_a_plain_database_replace_file_is_a_delete_of_that_file() -> None:
    con = duckdb.connect()
    schema.create_tables(con)
    add_rejected(con, "a.csv", "a1", "a2")
    add_rejected(con, "b.csv", "b1")
    assert not segments.is_segmented(con, "rejected_rows")
    assert segments.replace_file(con, "rejected_rows", "a.csv") == "rejected_rows"
    assert rejected(con) == [("b.csv", "b1")]


# --------------------------------------------------------------------------- #
# staging: the view is the warehouse as it will be published
# --------------------------------------------------------------------------- #
def test_every_contract_table_reads_as_the_contract_says(store: WarehouseStore) -> None:
    publish(store, "run1", "a.csv", "a1")
    with store.connect_published() as con:
        for table in schema.TABLES:
            assert schema.contract_mismatches(con, table) == [], table
        kinds = dict(
            con.execute(
                "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        )
    assert {t for t, kind in kinds.items() if kind == "VIEW"} == set(segments.SEGMENTED)
    assert {t for t, kind in kinds.items() if kind == "BASE TABLE"} == set(segments.NATIVE) | {
        "segments",
        "segments_without",
    }


def test_a_replaced_file_is_hidden_and_its_staged_rows_shown(store: WarehouseStore) -> None:
    publish(store, "run1", "a.csv", "a1", "a2")
    publish(store, "run2", "b.csv", "b1")
    with store.connect_staging("run3") as con:
        replace_rejected(con, "a.csv", "a3")
        assert rejected(con) == [("a.csv", "a3"), ("b.csv", "b1")]
        # replacing again within the run (a retried step) replaces the staged rows too
        replace_rejected(con, "a.csv", "a4")
        assert rejected(con) == [("a.csv", "a4"), ("b.csv", "b1")]
    with store.connect_published() as con:
        assert rejected(con) == [("a.csv", "a1"), ("a.csv", "a2"), ("b.csv", "b1")]
    store.publish("run3")
    with store.connect_published() as con:
        assert rejected(con) == [("a.csv", "a4"), ("b.csv", "b1")]
        assert con.execute("SELECT count(*) FROM staged.rejected_rows").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM staged.replaced").fetchall() == [(0,)]


def test_file_rows_reads_only_that_files_segments_or_its_staged_rows(store: WarehouseStore) -> None:
    publish(store, "run1", "a.csv", "a1", "a2")
    publish(store, "run2", "b.csv", "b1")
    with store.connect_staging("run3") as con:
        ((_, a_segment, _),) = [row for row in listed(con) if row[0] == "a.csv"]
        ((_, b_segment, _),) = [row for row in listed(con) if row[0] == "b.csv"]
        sql = segments.file_rows(con, "rejected_rows", "a.csv")
        assert a_segment in sql and b_segment not in sql
        assert sorted(r for (r,) in con.execute(f"SELECT raw FROM {sql} AS t").fetchall()) == ["a1", "a2"]
        replace_rejected(con, "a.csv", "a3")
        sql = segments.file_rows(con, "rejected_rows", "a.csv")
        assert a_segment not in sql  # replaced by this run: only its staged rows
        assert con.execute(f"SELECT raw FROM {sql} AS t").fetchall() == [("a3",)]
        assert con.execute(f"SELECT raw FROM {segments.file_rows(con, 'rejected_rows', 'c.csv')} AS t").fetchall() == []


def test_row_count_is_the_views_count_from_the_catalog_alone(store: WarehouseStore) -> None:
    publish(store, "run1", "a.csv", "a1", "a2")
    publish(store, "run2", "b.csv", "b1")
    with store.connect_staging("run3") as con:
        replace_rejected(con, "a.csv", "a3")  # hides a.csv's two published rows
        add_rejected(con, None, "orphan")  # a row of no file
        counted = con.execute("SELECT count(*) FROM rejected_rows").fetchall()[0][0]
        paths = [path for _, path, _ in listed(con)]
        for path in paths:
            os.rename(path, path + ".hidden")
        try:
            assert segments.row_count(con, "rejected_rows") == counted == 3
        finally:
            for path in paths:
                os.rename(path + ".hidden", path)
    plain = duckdb.connect()
    schema.create_tables(plain)
    add_rejected(plain, "a.csv", "a1", "a2")
    assert segments.row_count(plain, "rejected_rows") == 2


def test_a_file_replaced_by_no_rows_leaves_no_segment(store: WarehouseStore) -> None:
    publish(store, "run1", "a.csv", "a1")
    publish(store, "run2", "a.csv")
    with store.connect_published() as con:
        assert rejected(con) == []
        assert listed(con) == []


def test_inserts_without_a_replace_add_a_segment(store: WarehouseStore) -> None:
    publish(store, "run1", "a.csv", "a1")
    with store.connect_staging("run2") as con:
        add_rejected(con, "a.csv", "a2")
    store.publish("run2")
    with store.connect_published() as con:
        assert rejected(con) == [("a.csv", "a1"), ("a.csv", "a2")]
        assert [row[2] for row in listed(con)] == [1, 1]


# --------------------------------------------------------------------------- #
# publish: one new immutable file per (table, file); the others untouched
# --------------------------------------------------------------------------- #
def test_publishing_one_file_leaves_the_other_files_segments_byte_for_byte(store: WarehouseStore) -> None:
    publish(store, "run1", "a.csv", "a1")
    publish(store, "run2", "b.csv", "b1")
    with store.connect_published() as con:
        before = {path: digest(path) for _, path, _ in listed(con)}
        b_segment = [path for f, path, _ in listed(con) if f == "b.csv"]
    publish(store, "run3", "a.csv", "a2")
    with store.connect_published() as con:
        after = listed(con)
    assert [path for f, path, _ in after if f == "b.csv"] == b_segment
    assert digest(b_segment[0]) == before[b_segment[0]]
    # the replaced segment is still on disk (retention) but no longer listed
    old_a = [path for path in before if path not in b_segment]
    assert Path(old_a[0]).exists() and old_a[0] not in [path for _, path, _ in after]


def test_the_published_file_does_not_grow_with_the_rows(tmp_path: Path) -> None:
    sizes = {}
    for rows in (10, 200_000):
        store = WarehouseStore(tmp_path / f"wh{rows}.duckdb")
        with store.connect_staging("run1") as con:
            target = segments.replace_file(con, "transactions", "big.csv")
            con.execute(
                f"INSERT INTO {target} SELECT 'big.csv', i, i + 1, 'tx' || i, 'k' || (i % 7), "
                "epoch_ms(i * 1000)::TIMESTAMPTZ, i * 1000, (i % 1000) * 0.01 FROM range(?) r(i)",
                [rows],
            )
        store.publish("run1")
        sizes[rows] = store.path.stat().st_size
        with store.connect_published() as con:
            assert con.execute("SELECT count(*), sum(source_row) FROM transactions").fetchall() == [
                (rows, rows * (rows - 1) // 2)
            ]
    # the rows are in the segment; the catalog holds the same few tables either way
    assert sizes[200_000] == sizes[10]
    assert sizes[10] < 2_000_000


def test_segments_keep_the_insertion_order_and_exact_types(store: WarehouseStore) -> None:
    with store.connect_staging("run1") as con:
        target = segments.replace_file(con, "transactions", "a.csv")
        con.execute(
            f"INSERT INTO {target} VALUES ('a.csv', 2, 3, 't2', 'k', '2024-01-01 10:00:00+00', 1704103200000, "
            "99999999999999.9999), ('a.csv', 1, 2, 't1', 'k', '1969-12-31 23:59:59.999+00', -1, -0.0001)"
        )
    store.publish("run1")
    with store.connect_published() as con:
        rows = con.execute("SELECT source_row, event_time_ms, amount::VARCHAR FROM transactions").fetchall()
        assert rows == [(2, 1704103200000, "99999999999999.9999"), (1, -1, "-0.0001")]
        assert schema.contract_mismatches(con, "transactions") == []


def test_a_warehouse_of_ordinary_tables_becomes_segmented_at_its_next_publish(store: WarehouseStore) -> None:
    legacy = duckdb.connect(str(store.path))
    schema.create_tables(legacy)
    add_rejected(legacy, "old.csv", "o1", "o2")
    legacy.close()
    publish(store, "run1", "new.csv", "n1")
    with store.connect_published() as con:
        assert rejected(con) == [("new.csv", "n1"), ("old.csv", "o1"), ("old.csv", "o2")]
        assert segments.is_segmented(con, "rejected_rows")
        assert [(f, n) for f, _, n in listed(con)] == [("new.csv", 1), ("old.csv", 2)]


def test_a_segment_folder_that_cannot_be_written_fails_the_publish_in_one_sentence(store: WarehouseStore) -> None:
    store.segment_dir.write_text("a file where the segments folder should be")
    with store.connect_staging("run1") as con:
        replace_rejected(con, "a.csv", "a1")
    with pytest.raises(SegmentWriteError) as raised:
        store.publish("run1")
    message = str(raised.value)
    assert "run1 could not write its rows to" in message and "rerun: the published warehouse is unchanged" in message
    assert "\n" not in message
    assert not store.path.exists()


def test_a_warehouse_moved_with_its_segments_loses_nothing_and_works_from_its_next_run(tmp_path: Path) -> None:
    old = WarehouseStore(tmp_path / "old" / "wh.duckdb", segment_retention_s=0)
    publish(old, "run1", "a.csv", "a1")
    publish(old, "run2", "b.csv", "b1")
    moved = WarehouseStore(tmp_path / "new" / "wh.duckdb", segment_retention_s=0)
    moved.path.parent.mkdir()
    os.replace(old.path, moved.path)
    os.replace(old.segment_dir, moved.segment_dir)
    files = sorted(p.name for p in moved.segment_dir.rglob("*.parquet"))
    assert moved.remove_unlisted_segments() == []  # its catalog lists the old paths: delete nothing
    assert sorted(p.name for p in moved.segment_dir.rglob("*.parquet")) == files
    publish(moved, "run3", "c.csv", "c1")  # staging relinks the segments to the new folder
    with moved.connect_published() as con:
        assert rejected(con) == [("a.csv", "a1"), ("b.csv", "b1"), ("c.csv", "c1")]
        assert all(Path(path).is_relative_to(moved.segment_dir) for _, path, _ in listed(con))


def test_a_retried_publish_still_retires_the_replaced_segments(store: WarehouseStore, monkeypatch) -> None:
    publish(store, "run1", "a.csv", "a1")
    with store.connect_published() as con:
        ((_, first, _),) = listed(con)
    hour_ago = time.time() - 3600
    os.utime(first, (hour_ago, hour_ago))
    with store.connect_staging("run2") as con:
        replace_rejected(con, "a.csv", "a2")
    with store.connect_staging("run2") as con:
        segments.seal(con, store.segment_dir, "run2")  # a first publish that died after sealing
    store.publish("run2")  # the retry seals nothing more
    assert Path(first).stat().st_mtime > hour_ago + 1800  # its retention starts now, not an hour ago
    with store.connect_published() as con:
        assert rejected(con) == [("a.csv", "a2")]


def test_legacy_rows_without_a_source_file_are_kept(store: WarehouseStore) -> None:
    legacy = duckdb.connect(str(store.path))
    schema.create_tables(legacy)
    legacy.execute("INSERT INTO rejected_rows VALUES (NULL, 1, 2, 'orphan', 'test')")
    legacy.close()
    publish(store, "run1", "a.csv", "a1")
    with store.connect_published() as con:
        assert con.execute("SELECT source_file, raw FROM rejected_rows ORDER BY raw").fetchall() == [
            ("a.csv", "a1"),
            (None, "orphan"),
        ]


def test_a_warehouse_path_with_pattern_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"contains \* \? or \[, which DuckDB reads as a file pattern"):
        WarehouseStore(tmp_path / "data[1]" / "wh.duckdb")


def test_missing_segments_fail_the_run_in_one_sentence_and_change_nothing(store: WarehouseStore) -> None:
    publish(store, "run1", "a.csv", "a1")
    before = store.path.read_bytes()
    shutil.rmtree(store.segment_dir)  # moved or deleted by hand
    with pytest.raises(MissingSegmentsError) as raised:
        with store.connect_staging("run2"):
            pass
    message = str(raised.value)
    assert str(store.segment_dir) in message and "keep the warehouse file and its .segments folder together" in message
    assert "\n" not in message
    assert store.path.read_bytes() == before


# --------------------------------------------------------------------------- #
# removing segments nobody lists
# --------------------------------------------------------------------------- #
def test_unlisted_segments_are_removed_only_after_the_retention(tmp_path: Path) -> None:
    store = WarehouseStore(tmp_path / "wh.duckdb", segment_retention_s=3600)
    publish(store, "run1", "a.csv", "a1")
    publish(store, "run2", "a.csv", "a2")  # retires run1's segment
    orphan = store.segment_dir / "rejected_rows" / "dead-run-0000.parquet"
    orphan.write_bytes(b"left by a run that never published")
    with store.connect_published() as con:
        (current,) = [path for _, path, _ in listed(con)]
    retired = store.segment_dir / segments.segment_name("rejected_rows", "a.csv", "run1")
    assert retired.exists()

    assert store.remove_unlisted_segments() == []  # all within the retention

    hour_ago = time.time() - 3601
    for path in (retired, orphan, Path(current)):
        os.utime(path, (hour_ago, hour_ago))
    assert sorted(store.remove_unlisted_segments()) == sorted([retired, orphan])
    assert Path(current).exists()
    with store.connect_published() as con:
        assert rejected(con) == [("a.csv", "a2")]


def test_a_reader_of_the_old_catalog_keeps_reading_the_retired_segment(store: WarehouseStore) -> None:
    publish(store, "run1", "a.csv", "a1")
    reader = duckdb.connect(str(store.path), read_only=True)
    try:
        publish(store, "run2", "a.csv", "a2")
        store.remove_unlisted_segments()
        assert rejected(reader) == [("a.csv", "a1")]
    finally:
        reader.close()
    with store.connect_published() as con:
        assert rejected(con) == [("a.csv", "a2")]


@pytest.mark.parametrize("kind", ["tumbling", "session"])
def test_the_per_file_steps_read_only_the_files_own_rows(tmp_path: Path, kind: str) -> None:
    """Staging the job's input, the reconciliation, the conservation and shape checks and the
    advice judge one file: with every other file's segments moved away they still work, and on
    the file's rows alone (a query on the views would open every segment)."""
    from warehouse import advice, flink_output, quality, reconcile
    from warehouse.windows import WindowSpec

    spec = WindowSpec.unvalidated(kind, gap_ms=3000 if kind == "session" else None).validate()
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    segments.prepare(con, tmp_path / "segments")

    def ingest(source_file: str, rows: int) -> None:
        """The file's transactions, every fifth one 9 s behind."""
        target = segments.replace_file(con, "transactions", source_file)
        con.execute(
            f"INSERT INTO {target} SELECT $f, i + 1, i + 2, 'tx' || i, 'k' || (i % 3), epoch_ms(ts), ts, "
            "(i % 7 + 1)::DECIMAL(18,4) FROM (SELECT i, i * 700 - CASE WHEN i % 5 = 4 THEN 9000 ELSE 0 END AS ts "
            "FROM range($n) r(i))",
            {"f": source_file, "n": rows},
        )

    def replay(source_file: str) -> None:
        """The file's windows and late events as the rule gives them."""
        reconcile.build_expected(con, spec, source_file)
        windows = segments.replace_file(con, "window_averages", source_file)
        con.execute(
            f"INSERT INTO {windows} SELECT $f, key, epoch_ms(window_start_ms), epoch_ms(window_end_ms), "
            "sum_amount::DOUBLE / txn_count, txn_count, sum_amount, min_amount, max_amount, window_start_ms, "
            "window_end_ms, true FROM _expected_windows",
            {"f": source_file},
        )
        late = segments.replace_file(con, "late_events", source_file)
        con.execute(
            f"INSERT INTO {late} SELECT $f, source_row, key, epoch_ms(event_time_ms), amount, event_time_ms, "
            "watermark_ms, epoch_ms(window_start_ms), epoch_ms(window_end_ms) FROM _expected_late",
            {"f": source_file},
        )

    ingest("history.csv", 400)
    replay("history.csv")
    segments.seal(con, tmp_path / "segments", "r1")
    hidden = [Path(path) for (path,) in con.execute("SELECT path FROM segments").fetchall()]
    assert {path.parent.name for path in hidden} >= {"transactions", "window_averages"}
    # as in a run: the file's transactions are published (by the ingest step), its windows staged
    ingest("day.csv", 60)
    segments.seal(con, tmp_path / "segments", "r2")
    replay("day.csv")
    assert con.execute("SELECT count(*) FROM segments WHERE source_file = 'day.csv'").fetchall() == [(1,)]
    for path in hidden:
        path.rename(path.with_name(path.name + ".hidden"))
    try:
        with pytest.raises(duckdb.IOException):  # what a step reading the views would meet
            con.execute("SELECT count(*) FROM transactions").fetchall()
        assert flink_output.stage_input(con, "day.csv", tmp_path / "staged.csv") == 60
        assert len((tmp_path / "staged.csv").read_text().splitlines()) == 60
        window_report, late_report = reconcile.compare_tables(con, spec, "day.csv")
        assert window_report["equal"] and late_report["equal"] and late_report["expected"] > 0
        conserved = quality.conservation_check(
            con, spec, "day.csv", window_report["expected_pairs"], late_report["expected"]
        )
        assert conserved.passed, conserved.description
        shaped = quality.window_shape_check(con, spec, "day.csv")
        assert shaped.passed, shaped.description
        assert advice.advise(con, "day.csv", spec, (0.01,)).transactions == 60
    finally:
        for path in hidden:
            path.with_name(path.name + ".hidden").rename(path)
        con.close()


def test_a_warehouse_written_before_is_final_reads_its_windows_as_final(store: WarehouseStore) -> None:
    """An earlier version's warehouse: its window segments and staged table have no is_final column. The next
    run adds the column to the staged table, and the old segments read with is_final = true."""
    window = "'old.csv', 'k', epoch_ms(0), epoch_ms(5000), 1.5, 2, 3, 1, 2, 0, 5000"
    with store.connect_staging("run1") as con:
        target = segments.replace_file(con, "window_averages", "old.csv")
        con.execute(f"INSERT INTO {target} VALUES ({window}, true)")
    store.publish("run1")
    with duckdb.connect(str(store.path)) as con:  # make it as an earlier version left it
        (path,) = con.execute("SELECT path FROM segments WHERE table_name = 'window_averages'").fetchall()[0]
        con.execute(f"COPY (SELECT * EXCLUDE (is_final) FROM read_parquet('{path}')) TO '{path}' (FORMAT parquet)")
        con.execute("DROP VIEW window_averages")
        con.execute("ALTER TABLE staged.window_averages DROP COLUMN is_final")
        con.execute("DROP TABLE segments_without")
    with store.connect_staging("run2") as con:
        assert schema.contract_mismatches(con, "window_averages") == []
        assert con.execute("SELECT source_file, is_final FROM window_averages").fetchall() == [("old.csv", True)]
        target = segments.replace_file(con, "window_averages", "new.csv")
        con.execute(f"INSERT INTO {target} VALUES ({window.replace('old.csv', 'new.csv')}, false)")
    store.publish("run2")
    with store.connect_published() as con:
        rows = con.execute("SELECT source_file, is_final FROM window_averages ORDER BY 1").fetchall()
        assert rows == [("new.csv", False), ("old.csv", True)]
        assert con.execute(
            "SELECT is_final FROM " + segments.file_rows(con, "window_averages", "old.csv") + " AS w"
        ).fetchall() == [(True,)]
