"""Stream mode under real Dagster runs (real Flink job with savepoints, real DuckDB file): files that
continue one another give the windows and late events of ONE replay of their concatenation."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import SAMPLE
from tests.orchestration.test_pipeline import failure_message, failure_messages, run_pipeline

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


def advised_late(warehouse: Path) -> dict[str, int]:
    """watermark_advice's late events at the configured bound, per file."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return dict(con.execute("SELECT source_file, late_events FROM watermark_advice WHERE is_current").fetchall())


def late_per_file(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return dict(con.execute("SELECT source_file, count(*) FROM late_events GROUP BY source_file").fetchall())


def test_sample_cut_in_two_equals_one_replay_of_the_whole(tmp_path):
    first, second = cut(SAMPLE, tmp_path / "in", [6000])
    whole = run_pipeline(SAMPLE, tmp_path / "whole.duckdb")
    assert whole.success
    warehouse = tmp_path / "stream.duckdb"
    for path in (first, second):
        result = run_pipeline(path, warehouse, replay_mode="stream")
        assert result.success, failure_messages(result)
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.check_name in ("matches_independent_replay", "transactions_conserved"):
                assert evaluation.passed, evaluation.metadata
    expected, actual = tables(tmp_path / "whole.duckdb"), tables(warehouse)
    assert actual["windows"] == expected["windows"]
    assert actual["late"] == expected["late"]
    assert len(set((w[0], w[1], w[2]) for w in actual["windows"])) == len(actual["windows"])  # no duplicates
    assert actual["stream"] == [(1, str(first)), (2, str(second))]
    assert advised_late(warehouse) == {str(p): late_per_file(warehouse).get(str(p), 0) for p in (first, second)}


MEDIAN = "flink_jobs.aggregates.median:MedianAmount"
CUSTOM_COLUMNS = "key, window_start_ms, window_end_ms, aggregate, value"


def three_day_rows(seed: int = 3, n: int = 900) -> list[str]:
    """Rows over ~3 minutes (n = 900): four keys with some rows 2-16 s behind (late across the cuts too), and
    key `span` every second, whose session (gap 3 s) runs through every file."""
    import random

    rng = random.Random(seed)
    rows, t = [], 1_715_421_600_000  # 2024-05-11 10:00:00 UTC
    for i in range(n):
        t += rng.randint(50, 400)
        behind = rng.randint(2_000, 16_000) if rng.random() < 0.08 else 0
        rows.append((t - behind, f"k{rng.randint(1, 4)}", f"{rng.randint(1, 50_000) / 100:.2f}"))
        if i % 5 == 0:
            rows.append((t, "span", "1.00"))
    return [f"{key},{_iso(ms)},{amount}\n" for ms, key, amount in rows]


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def write(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("transaction_id,timestamp,amount\n" + "".join(rows))
    return path


def stream_tables(warehouse: Path) -> dict[str, list[tuple]]:
    found = tables(warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        found["custom"] = con.execute(f"SELECT {CUSTOM_COLUMNS} FROM custom_aggregates ORDER BY ALL").fetchall()
    return found


KINDS = [
    pytest.param(dict(window_kind="tumbling", window_size_ms=10_000, flink_parallelism=1, aggregates=MEDIAN),
                 id="tumbling-p1-custom"),
    pytest.param(dict(window_kind="sliding", window_size_ms=10_000, window_slide_ms=5_000, allowed_lateness_ms=2_000,
                      flink_parallelism=4), id="sliding-p4-lateness"),
    pytest.param(dict(window_kind="session", session_gap_ms=3_000, allowed_lateness_ms=1_000, flink_parallelism=2),
                 id="session-p2-lateness"),
]  # fmt: skip


@pytest.mark.parametrize("config", KINDS)
def test_three_files_equal_their_concatenation(tmp_path, config):
    rows = three_day_rows()
    cuts = [0, 371, 733, len(rows)]  # mid-window, with late rows just after each cut
    files = [write(tmp_path / "in" / f"day_{i + 1}.csv", rows[cuts[i] : cuts[i + 1]]) for i in range(3)]
    whole = write(tmp_path / "whole.csv", rows)
    assert run_pipeline(whole, tmp_path / "whole.duckdb", **config).success
    warehouse = tmp_path / "stream.duckdb"
    provisional = []
    for path in files:
        result = run_pipeline(path, warehouse, replay_mode="stream", **config)
        assert result.success, failure_messages(result)
        provisional.append(tables(warehouse)["provisional"])
    expected, actual = stream_tables(tmp_path / "whole.duckdb"), stream_tables(warehouse)
    assert actual["windows"] == expected["windows"]
    assert actual["late"] == expected["late"] and actual["late"]
    assert actual["custom"] == expected["custom"]
    assert all(n > 0 for n in provisional)  # every run ended with open windows, shown as provisional
    if config["window_kind"] != "session":  # the advice for the configured bound is exact for aligned windows
        assert advised_late(warehouse) == {str(path): late_per_file(warehouse).get(str(path), 0) for path in files}
    if config["window_kind"] == "session":  # the `span` session runs through all three files: one row
        spans = [w for w in actual["windows"] if w[0] == "span"]
        assert len(spans) == 1 and spans[0][3] == sum(1 for r in rows if r.startswith("span"))


def test_backfill_correction_and_replaying_a_file_again_rebuild_the_stream(tmp_path):
    config = dict(window_kind="session", session_gap_ms=3_000)
    rows = three_day_rows(seed=5)
    cuts = [0, 300, 650, len(rows)]
    a, b, c = (write(tmp_path / "in" / f"day_{i + 1}.csv", rows[cuts[i] : cuts[i + 1]]) for i in range(3))
    warehouse = tmp_path / "stream.duckdb"

    def replay(path: Path) -> dict:
        result = run_pipeline(path, warehouse, replay_mode="stream", **config)
        assert result.success, failure_messages(result)
        return result.asset_materializations_for_node("replay_event_time_windows")[0].metadata

    def whole(*parts: Path) -> dict:
        target = write(tmp_path / f"whole_{len(list(tmp_path.glob('whole_*')))}.csv",
                       [line + "\n" for p in parts for line in p.read_text().splitlines()[1:]])  # fmt: skip
        assert run_pipeline(target, target.with_suffix(".duckdb"), **config).success
        return stream_tables(target.with_suffix(".duckdb"))

    replay(a)
    replay(c)
    backfill = replay(b)  # b belongs between a and c: the stream is rebuilt from b
    assert backfill["files_replayed"].value == 2
    after_backfill = stream_tables(warehouse)
    expected = whole(a, b, c)
    assert after_backfill["windows"] == expected["windows"] and after_backfill["late"] == expected["late"]
    assert [name for _, name in after_backfill["stream"]] == [str(a), str(b), str(c)]

    again = replay(b)  # the same file again: rebuilt, nothing changes
    assert again["files_replayed"].value == 2
    assert stream_tables(warehouse) == after_backfill

    lines = b.read_text().splitlines(keepends=True)
    write(b, [line.replace(",1.00", ",2.00") for line in lines[1:]])  # a corrected middle file
    replay(b)
    corrected = stream_tables(warehouse)
    assert corrected["windows"] != after_backfill["windows"]
    expected = whole(a, b, c)
    assert corrected["windows"] == expected["windows"] and corrected["late"] == expected["late"]

    # every savepoint the stream lists is on disk; the ones rebuilds replaced are gone once a later run starts
    with duckdb.connect(str(warehouse), read_only=True) as con:
        listed = {
            Path(r[0].removeprefix("file:")) for r in con.execute("SELECT savepoint FROM stream_files").fetchall()
        }
    on_disk = set(warehouse.with_name(warehouse.name + ".savepoints").glob("*/*/savepoint-*"))
    assert listed <= on_disk and len(on_disk) <= len(listed) + 2  # + the two the last rebuild replaced


def test_a_failed_run_leaves_the_stream_as_it_was_and_the_next_run_continues(tmp_path):
    rows = three_day_rows(seed=9)
    a, b = (write(tmp_path / "in" / f"day_{i + 1}.csv", part) for i, part in enumerate((rows[:400], rows[400:])))
    warehouse = tmp_path / "stream.duckdb"
    assert run_pipeline(a, warehouse, replay_mode="stream").success
    before = stream_tables(warehouse)
    failed = run_pipeline(b, warehouse, replay_mode="stream", aggregates="tests.orchestration.test_stream_mode:Nope")
    assert not failed.success
    assert stream_tables(warehouse) == before
    assert run_pipeline(b, warehouse, replay_mode="stream").success
    whole = write(tmp_path / "whole.csv", rows)
    assert run_pipeline(whole, tmp_path / "whole.duckdb").success
    assert stream_tables(warehouse)["windows"] == stream_tables(tmp_path / "whole.duckdb")["windows"]


def test_a_warehouse_holds_one_replay_mode(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    first = write(tmp_path / "a.csv", three_day_rows()[:100])
    assert run_pipeline(first, warehouse).success
    before = stream_tables(warehouse)
    refused = run_pipeline(first, warehouse, replay_mode="stream")
    assert not refused.success
    message = failure_message(refused)
    assert "holds files replayed in file mode" in message and "TXN_REPLAY_MODE=file" in message
    assert stream_tables(warehouse) == before


def descendants(pid: int) -> list[int]:
    """`pid`'s child processes, recursively (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_stream_job_once_it_reads(run_root: Path, stop: threading.Event) -> list[int]:
    """SIGKILL the stream job's driver and its JVM as soon as its first file is in the monitored folder."""
    killed: list[int] = []
    while not stop.is_set() and not killed:
        if any(run_root.glob(".staging/*/*.files/flink_output/stream_input/0*")):
            time.sleep(0.2)  # the job is reading it
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    args = cmdline.read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"flink_jobs.window_job" in args and b"--stream-input" in args:
                    pid = int(cmdline.parent.name)
                    for victim in [pid, *descendants(pid)]:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(victim, signal.SIGKILL)
                        killed.append(victim)
            break
        time.sleep(0.05)
    return killed


def test_a_run_killed_mid_stream_leaves_the_stream_and_the_next_run_continues(tmp_path):
    rows = three_day_rows(seed=13, n=60_000)
    a, b = (write(tmp_path / "in" / f"day_{i + 1}.csv", part) for i, part in enumerate((rows[:600], rows[600:])))
    warehouse = tmp_path / "stream.duckdb"
    assert run_pipeline(a, warehouse, replay_mode="stream").success
    before = stream_tables(warehouse)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=lambda: killed.extend(kill_stream_job_once_it_reads(tmp_path, stop)))
    killer.start()
    try:
        interrupted = run_pipeline(b, warehouse, replay_mode="stream")
    finally:
        stop.set()
        killer.join()
    assert killed and not interrupted.success
    assert stream_tables(warehouse) == before  # the published stream is the one after day 1
    assert run_pipeline(b, warehouse, replay_mode="stream").success  # continues from day 1's savepoint
    whole = write(tmp_path / "whole.csv", rows)
    assert run_pipeline(whole, tmp_path / "whole.duckdb").success
    expected, actual = stream_tables(tmp_path / "whole.duckdb"), stream_tables(warehouse)
    assert actual["windows"] == expected["windows"] and actual["late"] == expected["late"]
