"""The implausible-time rule (warehouse.time_outliers): scenarios, and the block scan against a plain loop."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warehouse.ingest import read_transactions, record_texts
from warehouse.time_outliers import REASON_PREFIX, find_implausible, reason

DAY = 86_400_000
YEARS_180 = 180 * 365 * DAY
BASE = 1_715_421_600_000  # 2024-05-11T10:00:00Z


def reference(times: list[int], max_jump: int, confirm: int) -> list[int]:
    """The rule as the docs state it, one row at a time."""
    if max_jump <= 0 or not times:
        return []
    window = 2 * confirm
    head = sorted(times[: window + 1])
    stream = head[(len(head) - 1) // 2]
    out = []
    for i, t in enumerate(times):
        if t - stream > max_jump:
            after = times[i + 1 : i + 1 + window]
            around = times[max(0, i - window) : i] + after
            confirmed = sum(a >= t - max_jump for a in after) >= confirm
            if not confirmed and sum(a < t - max_jump for a in around) >= confirm:
                out.append(i)
                continue
        stream = max(stream, t)
    return out


def stream(n: int, seed: int = 1, step: int = 700, disorder: int = 3_000) -> np.ndarray:
    """n event times a little out of order, about `step` ms apart."""
    rng = np.random.default_rng(seed)
    return BASE + np.arange(n, dtype=np.int64) * step - rng.integers(0, disorder, n)


def quarantined(times, max_jump=DAY, confirm=10) -> list[int]:
    found = find_implausible(np.asarray(times, dtype=np.int64), max_jump, confirm).positions.tolist()
    assert found == reference([int(t) for t in times], max_jump, confirm)
    return found


def test_a_typod_year_in_the_middle_is_the_only_row_quarantined():
    times = stream(5_000)
    times[2_345] += YEARS_180
    assert quarantined(times) == [2_345]


def test_a_typod_month_is_quarantined():
    times = stream(5_000)
    times[100] += 31 * DAY
    assert quarantined(times) == [100]


def test_outliers_in_the_first_and_the_last_row():
    first = stream(300)
    first[0] += YEARS_180
    assert quarantined(first) == [0]
    last = stream(300)
    last[-1] += 40 * DAY
    assert quarantined(last) == [299]


def test_a_burst_of_future_rows_in_the_middle_is_quarantined_whole():
    times = stream(2_000)
    times[1_000:1_004] = BASE + YEARS_180 + np.arange(4)
    assert quarantined(times) == [1_000, 1_001, 1_002, 1_003]


def test_rows_hidden_behind_an_earlier_outlier_are_found_too():
    """A row 2 days ahead after one 180 years ahead: both are implausible against the stream."""
    times = stream(2_000)
    times[500] += YEARS_180
    times[510] += 2 * DAY
    assert quarantined(times) == [500, 510]


def test_a_device_with_a_wrong_clock_is_quarantined_row_by_row():
    times = stream(20_000)
    times[::97] = BASE + 3 * 365 * DAY + np.arange(len(times[::97]), dtype=np.int64) * 1_000
    assert quarantined(times) == list(range(0, 20_000, 97))


def test_a_legitimate_jump_of_days_is_kept():
    times = np.concatenate([stream(1_000), stream(1_000, seed=2) + 5 * DAY])
    assert quarantined(times) == []


def test_a_legitimate_jump_is_kept_though_old_rows_arrive_between_the_new_ones():
    times = np.concatenate([stream(1_000), stream(1_000, seed=2) + 5 * DAY])
    times[1_001:1_019:2] = times[990:999]  # stragglers of the old day among the first new rows
    assert quarantined(times) == []


def test_a_one_row_file_and_rows_in_the_past_are_kept():
    assert quarantined([BASE]) == []
    times = stream(500)
    times[[0, 200, 499]] = 0  # 1970-01-01: a zero epoch is late, never ahead
    assert quarantined(times) == []


def test_a_tiny_file_cannot_establish_a_stream_and_keeps_its_rows():
    assert quarantined([BASE, BASE + YEARS_180]) == []
    assert quarantined([BASE + YEARS_180, BASE]) == []
    assert quarantined([-1, -2_208_988_800_000, -62_135_596_800_000]) == []  # 1969, 1900, 0001 (the corpus)
    eleven = [*range(BASE, BASE + 10), BASE + YEARS_180]
    assert quarantined(eleven) == [10], "ten rows behind it are enough"
    assert quarantined(eleven[1:]) == []


def test_the_rule_switched_off_and_its_bound():
    times = stream(1_000)
    times[400] += 2 * DAY
    assert quarantined(times, max_jump=0) == []
    assert quarantined(times, max_jump=3 * DAY) == []
    assert quarantined(times, max_jump=DAY) == [400]


def test_the_stream_time_of_a_previous_file_is_where_the_rule_starts():
    times = stream(100) + 10 * DAY
    assert find_implausible(times, DAY, 10, stream_time_ms=BASE).positions.tolist() == []  # confirmed
    assert find_implausible(times[:3], DAY, 10, stream_time_ms=BASE).positions.tolist() == []  # nothing behind
    assert find_implausible(times[:3], DAY, 1, stream_time_ms=BASE).positions.tolist() == []  # they confirm each other
    assert find_implausible(times[:1], DAY, 1, stream_time_ms=BASE).positions.tolist() == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(-3, 3).map(lambda k: k * 5) | st.integers(-1, 1), min_size=0, max_size=120),
    st.integers(1, 12),
    st.integers(1, 6),
)
def test_the_block_scan_equals_the_row_by_row_rule(deltas, max_jump, confirm):
    times = np.cumsum(np.array(deltas, dtype=np.int64)) if deltas else np.zeros(0, dtype=np.int64)
    times[::7] += np.array(deltas[::7], dtype=np.int64) * 10 if deltas else 0
    quarantined(times, max_jump=max_jump, confirm=confirm)


def test_the_reason_names_the_time_the_stream_and_the_setting():
    text = reason(BASE + YEARS_180, BASE, BASE + 5, 40, DAY, 10)
    assert text.startswith(REASON_PREFIX + ": 2204-")
    assert "2024-05-11T10:00:00.000Z" in text and "TXN_MAX_TIME_JUMP_MS=86400000" in text
    assert "40 of the rows around it are further behind" in text
    assert "no rows follow it" in reason(BASE + YEARS_180, BASE, -1, 20, DAY, 10)


@pytest.mark.parametrize("compressed", [False, True])
def test_record_texts_equal_the_readers_raw_text(tmp_path: Path, compressed: bool):
    body = (
        "transaction_id,timestamp,amount\r\n"
        "\r\n"
        'a,2024-01-01 00:00:00,1\r\n"b\nc",2024-01-01 00:00:01,2\r\n\r\n\r\n'
        "d,2024-01-01 00:00:02,3\r\nbad row\r\ne,2024-01-01 00:00:03,4"
    )
    path = tmp_path / ("f.csv.gz" if compressed else "f.csv")
    path.write_bytes(gzip.compress(body.encode()) if compressed else body.encode())
    chunk = next(read_transactions(path))
    lines = dict(zip(chunk.valid.source_row, chunk.valid.line)) | dict(
        zip(chunk.rejected.source_row, chunk.rejected.line)
    )
    spans = [(lines[r], lines.get(r + 1)) for r in sorted(lines)]
    texts = record_texts(path, spans)
    assert texts == ["a,2024-01-01 00:00:00,1", '"b\nc",2024-01-01 00:00:01,2', "d,2024-01-01 00:00:02,3",
                     "bad row", "e,2024-01-01 00:00:03,4"]  # fmt: skip
    assert texts[3] == chunk.rejected.raw.iloc[0]
    assert record_texts(path, [spans[2], spans[0]]) == [texts[2], texts[0]]
