"""The stream's order and a run's plan (warehouse/stream.py), on plain DuckDB: no Flink here."""

from __future__ import annotations

import duckdb
import pytest

from warehouse import schema, stream
from warehouse.windows import WindowSpec

SPEC = WindowSpec.of("tumbling", size_ms=5_000, out_of_orderness_ms=1_000)
DAY = 86_400_000


@pytest.fixture
def con():
    con = duckdb.connect()
    schema.create_tables(con)
    yield con
    con.close()


def add_file(con, name: str, times: list[int]) -> None:
    con.execute("DELETE FROM transactions WHERE source_file = ?", [name])
    for row, t in enumerate(times, start=1):
        con.execute(
            "INSERT INTO transactions VALUES (?, ?, ?, ?, 'k', epoch_ms(?::BIGINT)::TIMESTAMPTZ, ?, 1)",
            [name, row, row, f"tx{row}", t, t],
        )


def day(n: int, rows: int = 5) -> list[int]:
    return [n * DAY + i * 1_000 for i in range(rows)]


def replay(con, name: str) -> stream.Plan:
    """Plan a run of `name` and record it as done (a savepoint per replayed file)."""
    plan = stream.plan(con, name, SPEC)
    stream.record(con, plan, [f"sp-{f.source_file}-{f.position}" for f in plan.replay], "run")
    return plan


def order(con) -> list[str]:
    return [f.source_file for f in stream.recorded(con)]


def test_appending_replays_the_new_file_only_from_the_last_savepoint(con):
    add_file(con, "d1", day(1))
    first = replay(con, "d1")
    assert [f.source_file for f in first.replay] == ["d1"] and first.restore_from is None
    add_file(con, "d2", day(2))
    second = replay(con, "d2")
    assert [f.source_file for f in second.replay] == ["d2"]
    assert second.restore_from == "sp-d1-1" and second.closed_up_to == max(day(1)) - 1_000 - 1
    assert second.replay[0].watermark_ms == max(day(2)) - 1_001 and second.previous_last == "d1"
    assert order(con) == ["d1", "d2"]


def test_a_backfill_slots_in_by_event_time_and_rebuilds_from_there(con):
    for name, n in (("d1", 1), ("d3", 3)):
        add_file(con, name, day(n))
        replay(con, name)
    add_file(con, "zz_d2", day(2))  # its name sorts last; its times put it second
    plan = replay(con, "zz_d2")
    assert [f.source_file for f in plan.replay] == ["zz_d2", "d3"] and plan.restore_from == "sp-d1-1"
    assert order(con) == ["d1", "zz_d2", "d3"]


def test_the_same_file_again_rebuilds_from_its_place_and_keeps_the_order(con):
    for n in (1, 2, 3):
        add_file(con, f"d{n}", day(n))
        replay(con, f"d{n}")
    plan = replay(con, "d2")
    assert [f.source_file for f in plan.replay] == ["d2", "d3"] and plan.restore_from == "sp-d1-1"
    assert order(con) == ["d1", "d2", "d3"]


def test_one_odd_row_does_not_move_a_file(con):
    add_file(con, "d1", day(1))
    replay(con, "d1")
    add_file(con, "d2", day(2, rows=9) + [0])  # a row at 1970-01-01, before every other file's rows
    plan = replay(con, "d2")
    assert [f.source_file for f in plan.replay] == ["d2"] and order(con) == ["d1", "d2"]


def test_a_file_left_empty_leaves_the_stream_and_the_files_after_it_are_replayed(con):
    for n in (1, 2, 3):
        add_file(con, f"d{n}", day(n))
        replay(con, f"d{n}")
    add_file(con, "d2", [])
    plan = replay(con, "d2")
    assert plan.left == ["d2"] and [f.source_file for f in plan.replay] == ["d3"]
    assert order(con) == ["d1", "d3"] and plan.restore_from == "sp-d1-1"


def test_positions_and_watermarks_follow_the_running_maximum(con):
    add_file(con, "d1", day(1))
    add_file(con, "d2", day(2) + [5 * DAY])  # a real jump: the stream's maximum stays there
    add_file(con, "d3", day(3))
    for name in ("d1", "d2", "d3"):
        replay(con, name)
    files = stream.recorded(con)
    assert [f.position for f in files] == [1, 2, 3]
    assert [f.stream_max_event_time_ms for f in files] == [max(day(1)), 5 * DAY, 5 * DAY]
    assert files[2].watermark_ms == 5 * DAY - 1_001


def test_the_other_mode_is_refused_in_one_sentence(con):
    assert stream.mode_conflict(con, "stream", "w.duckdb") is None  # a new warehouse takes either
    con.execute("INSERT INTO replays (source_file) VALUES ('d1')")
    message = stream.mode_conflict(con, "stream", "w.duckdb")
    assert "holds files replayed in file mode" in message and "TXN_REPLAY_MODE=file" in message
    con.execute("INSERT INTO stream_files (position, source_file) VALUES (1, 'd1')")
    assert stream.mode_conflict(con, "stream", "w.duckdb") is None
    assert "TXN_REPLAY_MODE=stream" in stream.mode_conflict(con, "file", "w.duckdb")


def test_the_implausible_time_rule_starts_where_the_earlier_files_left_the_stream(con):
    import numpy as np

    assert stream.stream_time_before(con, "d1", np.array(day(1))) is None  # the first file judges itself
    for n in (1, 3):
        add_file(con, f"d{n}", day(n))
        replay(con, f"d{n}")
    assert stream.stream_time_before(con, "d4", np.array(day(4))) == max(day(3))
    assert stream.stream_time_before(con, "d2", np.array(day(2))) == max(day(1))  # a backfill: only d1 is before
    assert stream.stream_time_before(con, "d3", np.array(day(3))) == max(day(1))  # not itself
