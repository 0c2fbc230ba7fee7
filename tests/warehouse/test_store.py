"""Tests for run-scoped staging and atomic publication (warehouse.store), on real DuckDB files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from warehouse import schema, segments
from warehouse.store import ConcurrentPublishError, WarehouseStore, memory_limit_problem

REPO = Path(__file__).resolve().parents[2]

# A child process that opens the published file read-only, reports what it sees, waits for a line
# on stdin (sent after the parent has published), then reports again on the SAME connection.
READER_SCRIPT = textwrap.dedent(
    """
    import sys
    import duckdb

    con = duckdb.connect(sys.argv[1], read_only=True)

    def seen():
        rows = con.execute("SELECT raw FROM rejected_rows ORDER BY raw").fetchall()
        return ",".join(r[0] for r in rows)

    print("before:" + seen(), flush=True)
    sys.stdin.readline()
    print("after:" + seen(), flush=True)
    con.close()
    """
)

# A fresh process that opens the published file read-only once and prints what it sees.
ONE_SHOT_READER_SCRIPT = textwrap.dedent(
    """
    import sys
    import duckdb

    con = duckdb.connect(sys.argv[1], read_only=True)
    rows = con.execute("SELECT raw FROM rejected_rows ORDER BY raw").fetchall()
    print(",".join(r[0] for r in rows), flush=True)
    con.close()
    """
)

CHILD_TIMEOUT_S = 120  # a safety net against a hung child, not a timing assertion


def add_marker(con: duckdb.DuckDBPyConnection, marker: str) -> None:
    con.execute(
        f"INSERT INTO {segments.insert_target(con, 'rejected_rows')} (source_file, source_row, line, raw, reason) VALUES ('f.csv', 1, 2, ?, 'test')",
        [marker],
    )


def markers(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT raw FROM rejected_rows ORDER BY raw").fetchall()]


def publish_with_markers(store: WarehouseStore, run_id: str, *values: str) -> None:
    with store.connect_staging(run_id) as con:
        for value in values:
            add_marker(con, value)
    store.publish(run_id)


def published_markers(store: WarehouseStore) -> list[str]:
    with store.connect_published() as con:
        return markers(con)


@pytest.fixture
def store(tmp_path: Path) -> WarehouseStore:
    return WarehouseStore(tmp_path / "wh.duckdb")


# --------------------------------------------------------------------------- #
# staging
# --------------------------------------------------------------------------- #
def test_fresh_warehouse_staging_creates_every_contract_table(store: WarehouseStore) -> None:
    assert not store.path.exists()
    with store.connect_staging("run1") as con:
        for table, columns in schema.TABLES.items():
            assert schema.describe(con, table) == list(columns), table
            assert schema.contract_mismatches(con, table) == []
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        assert tables == set(schema.TABLES) | {"segments", "segments_without"}
    # staging never creates the published file
    assert not store.path.exists()
    assert store.staging_path("run1").exists()


def test_staging_is_a_copy_of_published_and_invisible_until_publish(store: WarehouseStore) -> None:
    publish_with_markers(store, "run1", "v1")

    with store.connect_staging("run2") as con:
        assert markers(con) == ["v1"]  # starts from the published contents
        add_marker(con, "v2")
        assert markers(con) == ["v1", "v2"]
    assert published_markers(store) == ["v1"]

    # reopening the same run's staging keeps its writes (no fresh copy over them)
    with store.connect_staging("run2") as con:
        assert markers(con) == ["v1", "v2"]
    assert published_markers(store) == ["v1"]

    store.publish("run2")
    assert published_markers(store) == ["v1", "v2"]


def test_staging_copies_are_independent_per_run(store: WarehouseStore) -> None:
    publish_with_markers(store, "base", "v1")
    with store.connect_staging("a") as con:
        add_marker(con, "a")
    with store.connect_staging("b") as con:
        assert markers(con) == ["v1"]
        add_marker(con, "b")
    store.publish("b")
    assert published_markers(store) == ["b", "v1"]
    # run "a" is still staged from the old published file and can be discarded
    assert store.staged_run_ids() == {"a"}


# --------------------------------------------------------------------------- #
# publish
# --------------------------------------------------------------------------- #
def test_publish_replaces_the_published_file_and_removes_the_staging_files(store: WarehouseStore) -> None:
    publish_with_markers(store, "run1", "v1")
    old_inode = store.path.stat().st_ino

    with store.connect_staging("run2") as con:
        add_marker(con, "v2")
    staging = store.staging_path("run2")
    assert staging.exists()

    returned = store.publish("run2")

    assert returned == store.path
    # os.replace moves a new file into place (the old inode stays with whoever has it open)
    assert store.path.stat().st_ino != old_inode
    assert not staging.exists()
    assert not staging.with_name(staging.name + ".catalog").exists()
    assert not staging.with_name(staging.name + ".wal").exists()
    assert not store.run_dir("run2").exists()
    assert store.staged_run_ids() == set()
    # the published file is self-contained: no WAL beside it
    assert not store.path.with_name(store.path.name + ".wal").exists()
    assert published_markers(store) == ["v1", "v2"]


def test_publish_first_run_creates_published_file(store: WarehouseStore) -> None:
    publish_with_markers(store, "run1", "v1")
    assert store.path.is_file()
    with store.connect_published() as con:
        for table in schema.TABLES:
            assert schema.contract_mismatches(con, table) == []
        assert markers(con) == ["v1"]


def test_publish_removes_stale_wal_beside_published_file(store: WarehouseStore) -> None:
    publish_with_markers(store, "run1", "v1")
    stale_wal = store.path.with_name(store.path.name + ".wal")
    stale_wal.write_bytes(b"not a wal of the new file" * 100)

    with store.connect_staging("run2") as con:
        add_marker(con, "v2")
    store.publish("run2")

    assert not stale_wal.exists()
    assert published_markers(store) == ["v1", "v2"]


def test_publish_without_staging_raises_and_keeps_published(store: WarehouseStore) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        store.publish("nope")
    assert not store.path.exists()

    publish_with_markers(store, "run1", "v1")
    with pytest.raises(FileNotFoundError):
        store.publish("run1")  # already published: its staging file is gone
    assert published_markers(store) == ["v1"]


def test_reader_opened_before_publish_keeps_old_contents(store: WarehouseStore) -> None:
    publish_with_markers(store, "run1", "v1")
    with store.connect_staging("run2") as con:
        add_marker(con, "v2")

    reader = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(store.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = reader.stdout.readline().strip()
        assert first == "before:v1", reader.stderr.read() if not first else first

        # the open read-only session in another process must not block the publish
        store.publish("run2")

        out, err = reader.communicate("go\n", timeout=CHILD_TIMEOUT_S)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    assert out.strip() == "after:v1"  # the old connection keeps reading the replaced file

    fresh = subprocess.run(
        [sys.executable, "-c", ONE_SHOT_READER_SCRIPT, str(store.path)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == "v1,v2"


# --------------------------------------------------------------------------- #
# discard
# --------------------------------------------------------------------------- #
def test_discard_removes_staging_and_run_dir(store: WarehouseStore) -> None:
    publish_with_markers(store, "run1", "v1")
    with store.connect_staging("run2") as con:
        add_marker(con, "v2")
    staging = store.staging_path("run2")
    wal = staging.with_name(staging.name + ".wal")
    partial = staging.with_name(staging.name + ".partial")
    wal.write_bytes(b"x")
    partial.write_bytes(b"x")
    run_dir = store.run_dir("run2")
    (run_dir / "flink_output").mkdir(parents=True)
    (run_dir / "flink_output" / "part-0").write_text("data")
    (run_dir / "flink_input.csv").write_text("a,b\n")

    store.discard("run2")

    for path in (staging, wal, partial, run_dir):
        assert not path.exists(), path
    assert store.staged_run_ids() == set()
    assert published_markers(store) == ["v1"]  # the published file is untouched
    store.discard("run2")  # discarding twice is harmless
    assert not staging.exists()


def test_discard_all_except_keeps_listed_runs(store: WarehouseStore) -> None:
    publish_with_markers(store, "base", "v1")
    for run_id in ("keep1", "keep2", "gone1", "gone2"):
        with store.connect_staging(run_id) as con:
            add_marker(con, run_id)
    store.run_dir("gone3").mkdir(parents=True)  # a run that only left scratch files
    (store.run_dir("gone3") / "flink_input.csv").write_text("x")
    store.run_dir("keep1").mkdir(parents=True)

    assert store.staged_run_ids() == {"keep1", "keep2", "gone1", "gone2", "gone3"}
    removed = store.discard_all_except(["keep1", "keep2", "not-staged"])

    assert removed == ["gone1", "gone2", "gone3"]
    assert store.staged_run_ids() == {"keep1", "keep2"}
    for run_id in ("gone1", "gone2", "gone3"):
        assert not store.staging_path(run_id).exists()
        assert not store.run_dir(run_id).exists()
    assert store.run_dir("keep1").is_dir()
    with store.connect_staging("keep2") as con:
        assert markers(con) == ["keep2", "v1"]
    assert published_markers(store) == ["v1"]


def test_discard_all_except_without_staging_dir(store: WarehouseStore) -> None:
    assert store.staged_run_ids() == set()
    assert store.discard_all_except([]) == []


def test_discard_all_except_ignores_other_files_in_staging_dir(store: WarehouseStore) -> None:
    store.staging_dir.mkdir(parents=True)
    unrelated = store.staging_dir / "notes.txt"
    unrelated.write_text("x")
    assert store.discard_all_except([]) == []
    assert unrelated.exists()


def test_discard_all_except_leaves_sibling_warehouse_staging_alone(tmp_path: Path) -> None:
    main = WarehouseStore(tmp_path / "wh.duckdb")
    sibling = WarehouseStore(tmp_path / "wh.v2.duckdb")
    with sibling.connect_staging("run1") as con:
        add_marker(con, "sibling")
    assert main.discard_all_except([]) == []
    assert sibling.staging_path("run1").exists()


def test_discard_all_except_removes_orphaned_partial_copy(store: WarehouseStore) -> None:
    store.staging_dir.mkdir(parents=True)
    partial = store.staging_path("crashed").with_name(store.staging_path("crashed").name + ".partial")
    partial.write_bytes(b"half a copy")
    store.discard_all_except([])
    assert not partial.exists()


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "run_id",
    [
        "",
        "a/b",
        "../escape",
        "/abs",
        "has space",
        "semi;colon",
        "ünïcode",
        "x" * 129,
        "run1\n",
    ],
)
def test_invalid_run_ids_are_rejected(store: WarehouseStore, run_id: str) -> None:
    with pytest.raises(ValueError, match="invalid run id"):
        store.staging_path(run_id)
    with pytest.raises(ValueError, match="invalid run id"):
        store.discard(run_id)
    with pytest.raises(ValueError, match="invalid run id"):
        store.publish(run_id)
    with pytest.raises(ValueError, match="invalid run id"):
        with store.connect_staging(run_id):
            pass
    assert not store.staging_dir.exists()


@pytest.mark.parametrize("run_id", ["a", "x" * 128, "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", "r_1.2-3"])
def test_valid_run_ids_are_accepted(store: WarehouseStore, run_id: str) -> None:
    path = store.staging_path(run_id)
    assert path.parent == store.staging_dir
    assert path.name == f"{run_id}.duckdb"


def test_store_on_directory_raises(tmp_path: Path) -> None:
    directory = tmp_path / "wh.duckdb"
    directory.mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        WarehouseStore(directory)


def test_connect_published_without_file_raises(store: WarehouseStore) -> None:
    with pytest.raises(FileNotFoundError):
        with store.connect_published():
            pass


def test_connect_published_is_read_only(store: WarehouseStore) -> None:
    publish_with_markers(store, "run1", "v1")
    with store.connect_published() as con:
        with pytest.raises(duckdb.Error):
            add_marker(con, "sneaky")
    assert published_markers(store) == ["v1"]


def test_staging_dir_sits_beside_published_file(tmp_path: Path) -> None:
    store = WarehouseStore(tmp_path / "sub" / "wh.duckdb")
    assert store.path.is_absolute()
    assert store.staging_dir == store.path.parent / ".staging" / store.path.name
    with store.connect_staging("r") as con:
        add_marker(con, "x")
    assert store.staging_path("r").parent == (tmp_path / "sub" / ".staging" / "wh.duckdb").resolve()
    assert os.path.commonpath([store.run_dir("r"), store.staging_dir]) == str(store.staging_dir)


# --- concurrent publishes ------------------------------------------------------------------------


def test_second_of_two_overlapping_runs_refuses_to_overwrite_the_first(store):
    publish_with_markers(store, "base", "base")
    with store.connect_staging("run-a") as con:
        add_marker(con, "a")
    with store.connect_staging("run-b") as con:  # both copied the same published file
        add_marker(con, "b")
    store.publish("run-a")
    with pytest.raises(ConcurrentPublishError, match=r"another run published it.*retryable"):
        store.publish("run-b")
    assert published_markers(store) == ["a", "base"], "run-a's results are not lost"
    assert not store.staging_path("run-b").exists() and not store.base_path("run-b").exists()
    # a rerun of b starts from a's results and publishes both
    publish_with_markers(store, "run-b-retry", "b")
    assert published_markers(store) == ["a", "b", "base"]
    assert store.staged_run_ids() == set()


def test_overlapping_runs_on_a_new_warehouse(store):
    with store.connect_staging("run-a") as con:
        add_marker(con, "a")
    with store.connect_staging("run-b") as con:
        add_marker(con, "b")
    store.publish("run-b")
    with pytest.raises(ConcurrentPublishError):
        store.publish("run-a")
    assert published_markers(store) == ["b"]


def test_publish_refuses_when_the_published_file_was_replaced_by_hand(store, tmp_path):
    publish_with_markers(store, "base", "base")
    with store.connect_staging("run-a") as con:
        add_marker(con, "a")
    other = tmp_path / "other.duckdb"
    other_store = WarehouseStore(other)
    publish_with_markers(other_store, "x", "restored-backup")
    os.replace(other, store.path)  # e.g. an operator restores a backup meanwhile
    with pytest.raises(ConcurrentPublishError):
        store.publish("run-a")
    assert published_markers(store) == ["restored-backup"]


def test_publish_without_a_base_record_fails_closed(store):
    with store.connect_staging("run-a") as con:
        add_marker(con, "a")
    store.base_path("run-a").unlink()
    with pytest.raises(ConcurrentPublishError, match="no record"):
        store.publish("run-a")
    assert not store.path.exists()


def test_sequential_runs_publish_normally_and_leave_no_base_files(store):
    for i in range(3):
        publish_with_markers(store, f"run-{i}", f"m{i}")
    assert published_markers(store) == ["m0", "m1", "m2"]
    assert sorted(p.name for p in store.staging_dir.iterdir()) == []


def test_base_records_are_cleaned_with_the_rest_of_a_run(store):
    with store.connect_staging("dead-run") as con:
        add_marker(con, "x")
    (store.staging_dir / "dead-run.base.partial").write_text("{")
    assert store.staged_run_ids() == {"dead-run"}
    assert store.discard_all_except(set()) == ["dead-run"]
    assert list(store.staging_dir.iterdir()) == []


def test_publish_race_between_processes_never_loses_a_result(store):
    """Several processes stage from the same base and publish at once: exactly one wins, the others
    fail with ConcurrentPublishError, and the published file holds the base plus the winner."""
    publish_with_markers(store, "base", "base")
    script = textwrap.dedent(
        """
        import sys
        from warehouse.store import ConcurrentPublishError, WarehouseStore
        store = WarehouseStore(sys.argv[1])
        run_id = sys.argv[2]
        with store.connect_staging(run_id) as con:
            con.execute("INSERT INTO staged.rejected_rows (source_file, source_row, line, raw, reason) "
                        "VALUES ('f.csv', 1, 2, ?, 'test')", [run_id])
        print("staged", flush=True)
        sys.stdin.readline()
        try:
            store.publish(run_id)
            print("published", flush=True)
        except ConcurrentPublishError as error:
            print("conflict", str(error), flush=True)
        """
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(store.path), f"racer-{i}"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "staged"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    outcomes = [child.communicate(timeout=CHILD_TIMEOUT_S)[0] for child in children]
    assert all(child.returncode == 0 for child in children)
    winners = [i for i, out in enumerate(outcomes) if out.startswith("published")]
    assert len(winners) == 1, outcomes
    assert sum(out.startswith("conflict") for out in outcomes) == 3
    assert published_markers(store) == sorted(["base", f"racer-{winners[0]}"])


# --- run leases ------------------------------------------------------------------------------------


def test_a_leased_run_is_never_discarded_even_if_unknown_to_the_caller(store):
    """Another process (e.g. a run of another Dagster instance) holds the lease while it works."""
    script = textwrap.dedent(
        """
        import sys
        from warehouse.store import WarehouseStore
        store = WarehouseStore(sys.argv[1])
        with store.run_lease("other-instance-run"):
            with store.connect_staging("other-instance-run") as con:
                pass
            (store.run_dir("other-instance-run")).mkdir()
            print("holding", flush=True)
            sys.stdin.readline()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(store.path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "holding"
        with store.connect_staging("dead-run"):
            pass
        assert store.is_leased("other-instance-run") and not store.is_leased("dead-run")
        assert store.discard_all_except(set()) == ["dead-run"]
        assert store.staging_path("other-instance-run").exists() and store.run_dir("other-instance-run").is_dir()
    finally:
        child.communicate("done\n", timeout=CHILD_TIMEOUT_S)
    assert not store.is_leased("other-instance-run")
    assert store.discard_all_except(set()) == ["other-instance-run"]
    assert list(store.staging_dir.iterdir()) == []


def test_a_killed_holder_releases_its_lease(store):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom warehouse.store import WarehouseStore\n"
            "s = WarehouseStore(sys.argv[1])\nwith s.run_lease('r1'):\n print('in', flush=True)\n time.sleep(600)",
            str(store.path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "in"
        assert store.is_leased("r1")
    finally:
        child.kill()
        child.wait(CHILD_TIMEOUT_S)
    assert not store.is_leased("r1")
    assert store.discard_all_except(set()) == ["r1"]


def test_staging_connections_carry_the_memory_limit(tmp_path: Path) -> None:
    limited = WarehouseStore(tmp_path / "wh.duckdb", memory_limit="256MB")
    with limited.connect_staging("run-a") as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    with WarehouseStore(tmp_path / "wh.duckdb").connect_staging("run-b") as con:
        default = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert limit.startswith("244") and "MiB" in limit  # 256 MB as DuckDB prints it
    assert default != limit
    for bad in ("lots", "1GB'; DROP TABLE transactions; --", ""):
        with pytest.raises(ValueError, match="memory limit"):
            WarehouseStore(tmp_path / "wh.duckdb", memory_limit=bad)


def test_memory_limit_problem_is_one_sentence_naming_the_setting() -> None:
    assert memory_limit_problem("2GB") is None and memory_limit_problem(" 512 MiB ") is None
    assert memory_limit_problem("lots") == "DuckDB memory limit must look like 2GB or 512MB, got 'lots'"
    assert memory_limit_problem("1GB; --", "TXN_DUCKDB_MEMORY_LIMIT") == (
        "TXN_DUCKDB_MEMORY_LIMIT must look like 2GB or 512MB, got '1GB; --'"
    )
