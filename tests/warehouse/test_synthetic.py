"""Tests for the synthetic transaction generator (warehouse.synthetic)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import warehouse.synthetic as synthetic
from warehouse.replay import replay
from warehouse.synthetic import (
    HEADER,
    SAMPLE_SETTINGS,
    TEST_SETTINGS,
    key_names,
    main,
    read_events,
    write_transactions_csv,
)
from warehouse.windows import WindowSpec

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
SAMPLE = DATA / "sample_transactions.csv"

# The command documented in warehouse/synthetic.py's docstring.
SAMPLE_ARGS = ["--rows", "12000", "--keys", "24", "--seed", "20240511"]

LINE = re.compile(r"^tx\d{4,},\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3},\d+\.\d{2}$")


def late_fraction(path: Path, config: WindowSpec | None = None) -> float:
    events = read_events(path)
    result = replay(events, config or WindowSpec())
    assert len(events) == sum(w[3] for w in result.windows) + len(result.late)  # txn_count
    return len(result.late) / len(events)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "warehouse.synthetic", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- #
# Bundled data
# --------------------------------------------------------------------------- #
def test_docstring_documents_sample_command() -> None:
    doc = " ".join(synthetic.__doc__.replace("\\\n", " ").split())
    assert ("python -m warehouse.synthetic " + " ".join(SAMPLE_ARGS) + " --out data/sample_transactions.csv") in doc
    assert SAMPLE_SETTINGS == {"rows": 12000, "keys": 24, "seed": 20240511}


def test_sample_regenerates_byte_identically_from_cli(tmp_path: Path) -> None:
    out = tmp_path / "sample.csv"
    proc = run_cli(*SAMPLE_ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == SAMPLE.read_bytes()


def test_sample_shape_and_late_fraction() -> None:
    df = pd.read_csv(SAMPLE, dtype=str)
    assert list(df.columns) == ["transaction_id", "timestamp", "amount"]
    assert len(df) == 12_000
    assert df["transaction_id"].nunique() == 24
    assert 0.005 <= late_fraction(SAMPLE) <= 0.02


def test_lab_example_file() -> None:
    assert (DATA / "lab_example.csv").read_text() == (
        "transaction_id,timestamp,amount\n"
        "tx1,2024-05-11 10:00:00,100\n"
        "tx1,2024-05-11 10:00:03,200\n"
        "tx1,2024-05-11 10:00:06,300\n"
    )


# --------------------------------------------------------------------------- #
# Format and determinism
# --------------------------------------------------------------------------- #
def test_format(tmp_path: Path) -> None:
    path = write_transactions_csv(tmp_path / "t.csv", rows=5000, keys=30, seed=1)
    raw = path.read_bytes()
    assert b"\r" not in raw
    lines = raw.decode("ascii").split("\n")
    assert lines[0] + "\n" == HEADER and lines[-1] == ""
    body = lines[1:-1]
    assert len(body) == 5000
    assert all(LINE.match(line) for line in body), next(bad for bad in body if not LINE.match(bad))
    keys = {line.split(",", 1)[0] for line in body}
    assert keys <= set(key_names(30)) and len(keys) >= 25
    amounts = pd.Series([float(line.rsplit(",", 1)[1]) for line in body])
    assert (amounts > 0).all()
    # Outlier spikes exist but are rare.
    assert (amounts > 5 * amounts.median()).mean() < 0.05


def test_per_key_levels_differ(tmp_path: Path) -> None:
    path = write_transactions_csv(tmp_path / "t.csv", rows=20_000, keys=10, seed=2)
    df = pd.read_csv(path)
    medians = df.groupby("transaction_id")["amount"].median()
    assert medians.max() / medians.min() > 3  # accounts have distinct typical levels


def test_same_args_same_bytes_and_seed_matters(tmp_path: Path) -> None:
    kwargs = dict(rows=3000, keys=5, seed=42, late_fraction=0.05)
    a = write_transactions_csv(tmp_path / "a.csv", **kwargs).read_bytes()
    b = write_transactions_csv(tmp_path / "b.csv", **kwargs).read_bytes()
    c = write_transactions_csv(tmp_path / "c.csv", **{**kwargs, "seed": 43}).read_bytes()
    assert a == b
    assert a != c


def test_multi_chunk_output(tmp_path: Path) -> None:
    rows = synthetic.CHUNK_ROWS + 1234
    path = write_transactions_csv(tmp_path / "big.csv", rows=rows, keys=50, seed=9)
    with open(path, "rb") as fh:
        assert sum(1 for _ in fh) == rows + 1
    events = read_events(path)
    # Arrival times continue across the chunk boundary (no restart at --start):
    # the next event time is within the largest delay of the running maximum.
    running = max(e[2] for e in events[: synthetic.CHUNK_ROWS])
    after = events[synthetic.CHUNK_ROWS][2]
    assert abs(after - running) < 6 * 5000 + 2 * 1000
    assert running - events[0][2] > 3_000_000  # ~100k rows x 50 ms apart


def test_zero_rows(tmp_path: Path) -> None:
    path = write_transactions_csv(tmp_path / "empty.csv", rows=0, keys=3, seed=0)
    assert path.read_text() == HEADER


def test_start_with_offset_is_converted_to_utc(tmp_path: Path) -> None:
    path = write_transactions_csv(
        tmp_path / "t.csv",
        rows=1,
        keys=1,
        seed=0,
        start="2024-05-11T12:00:00+02:00",
        late_fraction=0.0,
        borderline_fraction=0.0,
    )
    first = path.read_text().splitlines()[1]
    assert first.split(",")[1].startswith(("2024-05-11 09:59:5", "2024-05-11 10:00:0"))


# --------------------------------------------------------------------------- #
# Disorder / lateness
# --------------------------------------------------------------------------- #
def test_test_setting_has_at_least_5_percent_late(tmp_path: Path) -> None:
    assert TEST_SETTINGS["rows"] == 20_000
    path = write_transactions_csv(tmp_path / "test.csv", **TEST_SETTINGS)
    assert late_fraction(path) >= 0.05


def test_small_delays_are_never_late(tmp_path: Path) -> None:
    path = write_transactions_csv(
        tmp_path / "t.csv", rows=20_000, keys=8, seed=3, late_fraction=0.0, borderline_fraction=0.0
    )
    events = read_events(path)
    assert late_fraction(path) == 0.0
    # ...but the file is still out of order.
    ts = [e[2] for e in events]
    assert sum(b < a for a, b in zip(ts, ts[1:])) > 0.1 * len(ts)


def test_late_fraction_is_tunable(tmp_path: Path) -> None:
    low = late_fraction(write_transactions_csv(tmp_path / "l.csv", 20_000, 10, 5, 0.01))
    high = late_fraction(write_transactions_csv(tmp_path / "h.csv", 20_000, 10, 5, 0.2))
    assert 0.005 <= low <= 0.02
    assert 0.18 <= high <= 0.23


def test_allowed_lateness_reduces_late_events() -> None:
    lenient = late_fraction(SAMPLE, WindowSpec(allowed_lateness_ms=60_000))
    assert lenient == 0.0


# --------------------------------------------------------------------------- #
# CLI and validation
# --------------------------------------------------------------------------- #
def test_cli_help() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for option in ("--rows", "--keys", "--seed", "--out", "--late-fraction", "--start"):
        assert option in proc.stdout


def test_cli_matches_function(tmp_path: Path) -> None:
    assert (
        main(
            [
                "--rows",
                "500",
                "--keys",
                "4",
                "--seed",
                "11",
                "--late-fraction",
                "0.1",
                "--out",
                str(tmp_path / "cli.csv"),
            ]
        )
        == 0
    )
    write_transactions_csv(tmp_path / "fn.csv", rows=500, keys=4, seed=11, late_fraction=0.1)
    assert (tmp_path / "cli.csv").read_bytes() == (tmp_path / "fn.csv").read_bytes()


def test_cli_rejects_bad_values(tmp_path: Path, capsys) -> None:
    assert main(["--rows", "10", "--keys", "0", "--seed", "1", "--out", str(tmp_path / "x")]) == 2
    assert "keys" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--rows", "10"])  # missing required options


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rows": -1},
        {"late_fraction": 1.5},
        {"late_fraction": 0.7, "borderline_fraction": 0.7},
        {"mean_interarrival_ms": 0},
        {"start": "1970-01-01T00:00:00"},
        {"window_size_ms": 0},
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:
    args = {"rows": 10, "keys": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        write_transactions_csv(tmp_path / "x.csv", **args)
