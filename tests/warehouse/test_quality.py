"""Unit tests for the data-quality check logic (warehouse.quality): real DuckDB files, no Dagster.

The windows under test are the plain-Python reference's, loaded into window_averages and
late_events the way the pipeline loads the Flink job's output."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.conftest import transactions_db
from tests.flink_jobs.disorder import disordered_events
from tests.warehouse.test_reconcile import KIND_SPECS, insert_events, load_reference, write_job_output
from warehouse import flink_output, quality, reconcile, schema
from warehouse.replay import replay
from warehouse.windows import WindowSpec

D = Decimal
FILE = "input.csv"
# times before 1970 first, then disorder with late events
EVENTS = [(1, "neg", -12_001, D("-4")), (2, "neg", -7000, D("2.5")), (3, "neg", -1, D("0.5"))] + [
    (row + 3, key, ts, amount) for row, key, ts, amount in disordered_events(300, seed=2)
]


@pytest.fixture(params=list(KIND_SPECS))
def loaded(request, tmp_path):
    """(con, spec, reference result) for FILE, and another file whose rows are all wrong."""
    spec = KIND_SPECS[request.param]
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    result = load_reference(con, tmp_path / "out", spec, EVENTS)
    assert result.late and any(w[1] < 0 for w in result.windows)
    insert_events(con, EVENTS[:20], "other.csv")
    flink_output.load_output(con, write_job_output(tmp_path / "other", replay(EVENTS[:20], spec)), "other.csv", spec)
    con.execute("UPDATE window_averages SET window_start_ms = window_start_ms + 1, txn_count = 0, "
                "sum_amount = sum_amount + 1 WHERE source_file = 'other.csv'")  # fmt: skip
    con.execute("UPDATE late_events SET source_row = source_row + 1000 WHERE source_file = 'other.csv'")
    return con, spec, result


def _where(window: tuple) -> tuple[str, list]:
    return (f"source_file = '{FILE}' AND key = ? AND window_start_ms = ? AND window_end_ms = ?", list(window[:3]))


def _update(con, window: tuple, assignments: str) -> None:
    where, params = _where(window)
    con.execute(f"UPDATE window_averages SET {assignments} WHERE {where}", params)


def _window(result, *, longer_than: int | None = None) -> tuple:
    """A window with min < max (and, optionally, longer than a gap)."""
    return next(w for w in result.windows if w[5] < w[6] and (longer_than is None or w[2] - w[1] > longer_than))


# --------------------------------------------------------------------------- #
# window_shape_check
# --------------------------------------------------------------------------- #
def test_shape_passes_on_the_reference(loaded) -> None:
    con, spec, result = loaded
    outcome = quality.window_shape_check(con, spec, FILE)
    assert outcome.passed, outcome.description
    assert outcome.description is None
    meta = outcome.metadata
    assert meta["windows_checked"] == len(result.windows)
    assert meta["misaligned"] == meta["wrong_length"] == meta["timestamps_disagree"] == meta["out_of_bounds"] == 0
    assert meta["window_spec"] == spec.describe() and meta["examples"] == []


def test_sessions_longer_than_the_gap_pass(tmp_path) -> None:
    spec = KIND_SPECS["session"]
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    result = load_reference(con, tmp_path / "out", spec, EVENTS)
    merged = [w for w in result.windows if w[2] - w[1] > spec.gap_ms]
    assert merged  # the data has merged sessions, and they are fine
    assert quality.window_shape_check(con, spec, FILE).passed


def test_misaligned_window_fails(loaded) -> None:
    con, spec, result = loaded
    window = _window(result)
    _update(con, window, "window_start_ms = window_start_ms + 1, window_end_ms = window_end_ms + 1, "
                         "window_start = window_start + INTERVAL 1 MILLISECOND, "
                         "window_end = window_end + INTERVAL 1 MILLISECOND")  # fmt: skip
    outcome = quality.window_shape_check(con, spec, FILE)
    if spec.kind == "session":  # a session starts at its first event: any start is fine
        assert outcome.passed, outcome.description
        return
    step = spec.size_ms if spec.kind == "tumbling" else spec.slide_ms
    assert not outcome.passed
    assert outcome.description == (
        f"1 window(s) do not start on a multiple of {step} ms (configured: {spec.describe()})"
    )
    meta = outcome.metadata
    assert (meta["misaligned"], meta["wrong_length"], meta["timestamps_disagree"], meta["out_of_bounds"]) == (
        1,
        0,
        0,
        0,
    )
    assert [(e["key"], e["window_start_ms"]) for e in meta["examples"]] == [(window[0], window[1] + 1)]


def test_sliding_windows_align_on_the_slide_not_the_size(tmp_path) -> None:
    spec = KIND_SPECS["sliding"]
    assert spec.size_ms % (2 * spec.slide_ms) == 0  # half the windows start off a multiple of the size
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    result = load_reference(con, tmp_path / "out", spec, EVENTS)
    assert any(w[1] % spec.size_ms for w in result.windows)
    assert quality.window_shape_check(con, spec, FILE).passed
    as_tumbling = WindowSpec.of("tumbling", size_ms=spec.size_ms, out_of_orderness_ms=spec.out_of_orderness_ms)
    outcome = quality.window_shape_check(con, as_tumbling, FILE)
    assert not outcome.passed
    assert outcome.metadata["misaligned"] == sum(1 for w in result.windows if w[1] % spec.size_ms)


def test_window_of_the_wrong_length_fails(loaded) -> None:
    con, spec, result = loaded
    window = _window(result)
    if spec.kind == "session":
        _update(con, window, f"window_end_ms = window_start_ms + {spec.gap_ms - 1}, "
                             f"window_end = window_start + INTERVAL {spec.gap_ms - 1} MILLISECOND")  # fmt: skip
        length = f"at least {spec.gap_ms}"
    else:
        _update(con, window, "window_end_ms = window_end_ms + 1, window_end = window_end + INTERVAL 1 MILLISECOND")
        length = str(spec.size_ms)
    outcome = quality.window_shape_check(con, spec, FILE)
    assert not outcome.passed
    assert outcome.description == f"1 window(s) are not {length} ms long (configured: {spec.describe()})"
    assert outcome.metadata["wrong_length"] == 1 and outcome.metadata["misaligned"] == 0


def test_windows_of_another_size_fail(tmp_path) -> None:
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    load_reference(con, tmp_path / "out", WindowSpec.of(size_ms=3000), EVENTS)
    outcome = quality.window_shape_check(con, WindowSpec(), FILE)
    assert not outcome.passed
    assert outcome.metadata["wrong_length"] == outcome.metadata["windows_checked"] > 0
    assert "are not 5000 ms long" in outcome.description and len(outcome.metadata["examples"]) == quality.EXAMPLES


def test_timestamps_that_disagree_with_the_ms_columns_fail(loaded) -> None:
    con, spec, result = loaded
    _update(con, _window(result), "window_start = window_start + INTERVAL 1 MILLISECOND")
    outcome = quality.window_shape_check(con, spec, FILE)
    assert not outcome.passed
    assert outcome.description == (
        f"1 window(s) have timestamps that disagree with their *_ms columns (configured: {spec.describe()})"
    )
    meta = outcome.metadata
    assert (meta["misaligned"], meta["wrong_length"], meta["timestamps_disagree"], meta["out_of_bounds"]) == (
        0,
        0,
        1,
        0,
    )


@pytest.mark.parametrize(
    "assignments",
    [
        "sum_amount = max_amount * txn_count + 0.0001",
        "sum_amount = min_amount * txn_count - 0.0001",
        "min_amount = max_amount, max_amount = min_amount",
        "txn_count = 0",
        "txn_count = -1",
    ],
)
def test_aggregates_out_of_bounds_fail(loaded, assignments: str) -> None:
    con, spec, result = loaded
    window = _window(result)
    _update(con, window, assignments)
    outcome = quality.window_shape_check(con, spec, FILE)
    assert not outcome.passed
    assert outcome.description == f"1 window(s) have a sum outside count * [min, max] (configured: {spec.describe()})"
    assert outcome.metadata["out_of_bounds"] == 1
    (example,) = outcome.metadata["examples"]
    assert (example["key"], example["window_start_ms"], example["window_end_ms"]) == window[:3]


def test_sum_on_the_bounds_passes(loaded) -> None:
    con, spec, result = loaded
    window = _window(result)
    _update(con, window, "sum_amount = max_amount * txn_count")
    assert quality.window_shape_check(con, spec, FILE).passed
    _update(con, window, "sum_amount = min_amount * txn_count")
    assert quality.window_shape_check(con, spec, FILE).passed


def test_several_rules_are_reported_together(loaded) -> None:
    con, spec, result = loaded
    first, second = [w for w in result.windows if w[5] < w[6]][:2]
    _update(con, first, "window_start = window_start + INTERVAL 1 MILLISECOND")
    _update(con, second, "txn_count = 0")
    outcome = quality.window_shape_check(con, spec, FILE)
    assert not outcome.passed
    assert outcome.description.count("window(s)") == 2 and outcome.description.endswith(
        f"(configured: {spec.describe()})"
    )
    assert len(outcome.metadata["examples"]) == 2


def test_shape_reads_only_the_files_windows(loaded) -> None:
    con, spec, _ = loaded
    assert quality.window_shape_check(con, spec, FILE).passed  # other.csv's windows are all broken
    other = quality.window_shape_check(con, spec, "other.csv")
    assert not other.passed and other.metadata["out_of_bounds"] == other.metadata["windows_checked"] > 0


def test_shape_of_a_file_without_windows_passes(loaded) -> None:
    con, spec, _ = loaded
    outcome = quality.window_shape_check(con, spec, "nothing.csv")
    assert outcome.passed and outcome.metadata["windows_checked"] == 0


# --------------------------------------------------------------------------- #
# conservation_check
# --------------------------------------------------------------------------- #
def pairs(result) -> int:
    """(event, window) pairs the reference counted: each member of each window."""
    return sum(len(members) for members in result.contents.values())


def test_conservation_passes_on_the_reference(loaded) -> None:
    con, spec, result = loaded
    windows_report, _ = reconcile.compare_tables(con, spec, FILE)
    assert windows_report["expected_pairs"] == pairs(result)
    outcome = quality.conservation_check(con, spec, FILE, pairs(result))
    assert outcome.passed, outcome.description
    assert outcome.metadata == {
        "transactions": len(EVENTS),
        "late_events": len(result.late),
        "on_time_events": len(EVENTS) - len(result.late),
        "counted_in_windows": pairs(result),
        "expected_event_window_pairs": pairs(result),
        "late_events_not_in_transactions": 0,
    }


def test_sliding_counts_an_event_once_per_window(loaded) -> None:
    con, spec, result = loaded
    on_time = len(EVENTS) - len(result.late)
    if spec.kind != "sliding":
        assert pairs(result) == on_time  # tumbling and session: one window per on-time event
        return
    # the rule, event by event: each window of the event that is not late at its watermark
    expected, highest = 0, None
    for _, _, ts, _ in sorted(EVENTS):
        watermark = spec.watermark_after(highest)
        expected += sum(1 for _, end in spec.windows_of(ts) if not spec.is_late(end, watermark))
        highest = ts if highest is None else max(highest, ts)
    assert pairs(result) == expected
    assert pairs(result) > on_time
    assert quality.conservation_check(con, spec, FILE, pairs(result)).passed
    # the count of on-time events is not the count of pairs
    assert not quality.conservation_check(con, spec, FILE, on_time).passed


def test_conservation_fails_on_a_wrong_sum_of_counts(loaded) -> None:
    con, spec, result = loaded
    outcome = quality.conservation_check(con, spec, FILE, pairs(result) + 1)
    assert not outcome.passed
    assert f"the replay rule counts {pairs(result) + 1:,} (event, window) pairs" in outcome.description
    assert spec.describe() in outcome.description


def test_conservation_fails_on_a_transaction_lost_from_a_window(loaded) -> None:
    con, spec, result = loaded
    _update(con, _window(result), "txn_count = txn_count - 1")
    outcome = quality.conservation_check(con, spec, FILE, pairs(result))
    assert not outcome.passed
    assert outcome.metadata["counted_in_windows"] == pairs(result) - 1
    assert f"{pairs(result) - 1:,} counted in windows" in outcome.description


@pytest.mark.parametrize("kind", ["tumbling", "session"])
def test_conservation_fails_on_a_lost_late_event(tmp_path, kind: str) -> None:
    spec = KIND_SPECS[kind]
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    result = load_reference(con, tmp_path / "out", spec, EVENTS)
    con.execute("DELETE FROM late_events WHERE source_row = ?", [result.late[0][0]])
    outcome = quality.conservation_check(con, spec, FILE, pairs(result))
    assert not outcome.passed
    assert outcome.metadata["late_events"] == len(result.late) - 1
    assert f"{len(result.late) - 1:,} late events" in outcome.description


def test_sliding_conservation_fails_on_a_lost_late_event(tmp_path) -> None:
    spec = KIND_SPECS["sliding"]
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    result = load_reference(con, tmp_path / "out", spec, EVENTS)
    con.execute("DELETE FROM late_events WHERE source_row = ?", [result.late[0][0]])
    # the recomputation's late count closes the books: a transaction neither late nor counted fails
    assert not quality.conservation_check(con, spec, FILE, pairs(result), len(result.late)).passed


def test_conservation_fails_on_a_late_event_not_in_transactions(loaded) -> None:
    con, spec, result = loaded
    con.execute(f"INSERT INTO late_events SELECT * REPLACE (10000000 AS source_row) FROM late_events "
                f"WHERE source_file = '{FILE}' ORDER BY source_row LIMIT 1")  # fmt: skip
    outcome = quality.conservation_check(con, spec, FILE, pairs(result))
    assert not outcome.passed
    assert outcome.metadata["late_events_not_in_transactions"] == 1
    assert "(1 of them not among the transactions)" in outcome.description


def test_conservation_fails_when_tumbling_windows_count_an_event_twice(tmp_path) -> None:
    spec = KIND_SPECS["tumbling"]
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    result = load_reference(con, tmp_path / "out", spec, EVENTS)
    window = _window(result)
    _update(con, window, "txn_count = txn_count + 1")
    # even told to expect the extra pair, an event counted twice breaks "one window per event"
    assert not quality.conservation_check(con, spec, FILE, pairs(result) + 1).passed


def test_conservation_reads_only_the_file(loaded) -> None:
    con, spec, result = loaded
    assert quality.conservation_check(con, spec, FILE, pairs(result)).passed
    assert not quality.conservation_check(con, spec, "other.csv", pairs(replay(EVENTS[:20], spec))).passed


# --------------------------------------------------------------------------- #
# contract and ratios
# --------------------------------------------------------------------------- #
def test_contract_check(tmp_path) -> None:
    con = transactions_db(tmp_path / "w.duckdb", EVENTS[:3])
    for table in ("transactions", "window_averages", "late_events", "replays"):
        assert quality.contract_check(con, table).passed, table
    con.execute("ALTER TABLE transactions ALTER amount TYPE DECIMAL(18, 2)")
    outcome = quality.contract_check(con, "transactions")
    assert not outcome.passed
    assert outcome.description == "transactions.amount is DECIMAL(18,2), expected DECIMAL(18,4)"
    assert outcome.metadata == {"columns_expected": len(schema.TABLES["transactions"]), "mismatches": 1}


def test_ratio_check() -> None:
    assert quality.ratio_check(0, 0, 0.0, "rejected rows", "data rows").passed
    assert quality.ratio_check(1, 100, 0.01, "rejected rows", "data rows").passed
    outcome = quality.ratio_check(2, 100, 0.01, "rejected rows", "data rows")
    assert not outcome.passed and "2.00%" in outcome.description
    assert outcome.metadata == {"rejected_rows": 2, "data_rows": 100, "ratio": 0.02, "limit": 0.01}
