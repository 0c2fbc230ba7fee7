"""Unit tests for the data-quality check logic (warehouse.quality): real DuckDB files, no Dagster."""

from __future__ import annotations

import random

import pytest

from tests.conftest import transactions_db
from warehouse import quality, reconcile
from warehouse.replay import ReplayConfig, replay


def _load_replay(con, config: ReplayConfig, source_file: str = "input.csv") -> None:
    """Fill window_averages and late_events with the DuckDB recomputation of the replay rule."""
    windows = reconcile.expected_window_averages(con, config, source_file=source_file)
    late = reconcile.expected_late_events(con, config, source_file=source_file)
    con.register("w", windows)
    con.execute(
        "INSERT INTO window_averages SELECT ?, key, epoch_ms(window_start_ms)::TIMESTAMPTZ, "
        "epoch_ms(window_end_ms)::TIMESTAMPTZ, avg_amount, txn_count, window_start_ms, window_end_ms FROM w",
        [source_file],
    )
    con.register("l", late)
    con.execute(
        "INSERT INTO late_events SELECT ?, source_row, key, epoch_ms(event_time_ms)::TIMESTAMPTZ, amount, "
        "event_time_ms, watermark_ms, NULL, NULL FROM l",
        [source_file],
    )


EVENTS = [(1, "a", 10_000, 1.0), (2, "a", 12_000, 3.0), (3, "b", 16_000, 5.0), (4, "a", 9_000, 7.0),
          (5, "b", -4_999, 2.5), (6, "a", 14_999, 0.5)]  # fmt: skip


def test_alignment_passes_on_a_correct_replay_including_negative_times(tmp_path):
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    _load_replay(con, ReplayConfig(window_size_ms=5000, out_of_orderness_ms=1000))
    outcome = quality.window_alignment_check(con, 5000)
    assert outcome.passed, outcome.description
    assert outcome.metadata["windows_checked"] > 0
    assert con.execute("SELECT count(*) FROM late_events").fetchall()[0][0] >= 1


def test_alignment_fails_for_a_history_with_another_window_size(tmp_path):
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    _load_replay(con, ReplayConfig(window_size_ms=3000, out_of_orderness_ms=1000))
    outcome = quality.window_alignment_check(con, 5000)
    assert not outcome.passed
    assert outcome.metadata["wrong_length"] == outcome.metadata["windows_checked"]
    assert "5000 ms" in outcome.description and outcome.metadata["examples"]


def test_alignment_fails_when_an_average_is_outside_its_rows(tmp_path):
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    _load_replay(con, ReplayConfig(window_size_ms=5000, out_of_orderness_ms=1000))
    con.execute("UPDATE window_averages SET avg_amount = avg_amount + 100 WHERE key = 'b'")
    outcome = quality.window_alignment_check(con, 5000)
    assert not outcome.passed and outcome.metadata["out_of_bounds"] >= 1
    assert outcome.metadata["misaligned"] == outcome.metadata["wrong_length"] == 0


def test_contract_check(tmp_path):
    con = transactions_db(tmp_path / "w.duckdb", EVENTS)
    assert quality.contract_check(con, "transactions").passed
    con.execute("ALTER TABLE transactions ALTER amount TYPE DECIMAL(18, 2)")
    outcome = quality.contract_check(con, "transactions")
    assert not outcome.passed and "transactions.amount is DECIMAL(18,2), expected DOUBLE" in outcome.description


def test_ratio_check():
    assert quality.ratio_check(0, 0, 0.0, "rejected rows", "data rows").passed
    assert quality.ratio_check(1, 100, 0.01, "rejected rows", "data rows").passed
    outcome = quality.ratio_check(2, 100, 0.01, "rejected rows", "data rows")
    assert not outcome.passed and "2.00%" in outcome.description
    assert outcome.metadata == {"rejected_rows": 2, "data_rows": 100, "ratio": 0.02, "limit": 0.01}


@pytest.mark.parametrize("seed", range(6))
def test_recommended_out_of_orderness_puts_the_target_on_time(seed):
    rng = random.Random(seed)
    size, ooo, allowed = rng.choice([1000, 5000]), rng.choice([0, 300, 1000]), rng.choice([0, 200])
    events, t = [], 0
    for row in range(1, 2001):
        t += rng.randint(0, 400)
        events.append((row, rng.choice("xyz"), t - rng.choice([0, 0, 0, rng.randint(0, 6000)]), 1.0))
    config = ReplayConfig(window_size_ms=size, out_of_orderness_ms=ooo, allowed_lateness_ms=allowed)
    late = [(ts, watermark) for _, _, ts, _, watermark in replay(events, config).late]
    assert len(late) > 20
    for target in (0.99, 0.999, 1.0):
        kwargs = dict(window_size_ms=size, out_of_orderness_ms=ooo, allowed_lateness_ms=allowed, on_time_target=target)
        recommended = quality.recommended_out_of_orderness(late, len(events), **kwargs)
        enough = replay(events, ReplayConfig(size, recommended, allowed)).late
        assert len(enough) <= (1 - target) * len(events) + 1e-9
        # and it is the smallest such value
        fewer = replay(events, ReplayConfig(size, recommended - 1, allowed)).late
        assert recommended == ooo or len(fewer) > (1 - target) * len(events) + 1e-9


def test_late_ratio_check_recommends_an_out_of_orderness():
    late = [(1_000, 5_000), (2_000, 9_000)]  # (event_time_ms, watermark_ms)
    outcome = quality.late_ratio_check(late, 10, limit=0.1, window_size_ms=1000, out_of_orderness_ms=100)
    assert not outcome.passed
    assert outcome.metadata["watermark_lag_ms"] == 7_000
    # the event at 2000 (window end 3000) sees 9000: it needs 9000 - 3000 + 2 = 6002 ms more
    assert outcome.metadata["recommended_out_of_orderness_ms"] == 6_102
    assert "6102 ms" in outcome.description and "TXN_OUT_OF_ORDERNESS_MS" in outcome.description
    assert quality.late_ratio_check(late, 100, limit=0.1, window_size_ms=1000, out_of_orderness_ms=100).passed
