"""Deterministic generator of realistic transaction CSVs.

Output: UTF-8, ``\\n`` line endings, header ``transaction_id,timestamp,amount``. Keys are ``tx0001`` ...
(zero-padded to at least 4 digits; think "account id") with Zipf-like activity; timestamps are UTC
``YYYY-MM-DD HH:MM:SS.fff`` without offset; amounts have two decimals, log-normal around each key's own
level (log-normal across keys) and spread, with rare x6-x20 spikes so that anomaly thresholds make sense.

Rows are written in *arrival* order (exponential gaps, ``--mean-interarrival-ms``); the event time is
``arrival - delay``, the delay small (``< out_of_orderness_ms``: never late) for most rows, "borderline"
(``out_of_orderness_ms`` .. ``+ window_size_ms``: late for about half) for ``--borderline-fraction``,
and large (``2*(window_size_ms + out_of_orderness_ms)`` .. ``6*window_size_ms + 2*out_of_orderness_ms``:
late under the default replay config) for ``--late-fraction``. The same arguments give a byte-identical
file (one seeded NumPy ``Generator`` drawn in fixed-size chunks and streamed to disk, so memory does not
grow with ``--rows``). ``TEST_SETTINGS`` gives more than 5% late events. The bundled sample
(``SAMPLE_SETTINGS``, other options at their defaults; its late events: docs/watermark-advice.md)::

    python -m warehouse.synthetic --rows 12000 --keys 24 --seed 20240511 \\
        --out data/sample_transactions.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from warehouse.windows import DEFAULT_OUT_OF_ORDERNESS_MS, DEFAULT_SIZE_MS

__all__ = [
    "CHUNK_ROWS",
    "DEFAULT_START",
    "HEADER",
    "SAMPLE_SETTINGS",
    "TEST_SETTINGS",
    "key_names",
    "main",
    "read_events",
    "write_transactions_csv",
]

HEADER = "transaction_id,timestamp,amount\n"
DEFAULT_START = "2024-05-11T10:00:00"
# Part of the output's definition: changing it changes the bytes produced.
CHUNK_ROWS = 100_000

SAMPLE_SETTINGS: dict[str, Any] = {"rows": 12_000, "keys": 24, "seed": 20240511}
TEST_SETTINGS: dict[str, Any] = {"rows": 20_000, "keys": 24, "seed": 7, "late_fraction": 0.06}

# Latest start that still leaves room for 4-digit years.
_MAX_MS = int(datetime(9999, 1, 1, tzinfo=UTC).timestamp() * 1000)


def key_names(keys: int) -> list[str]:
    """``['tx0001', 'tx0002', ...]``, zero-padded to at least 4 digits."""
    width = max(4, len(str(keys)))
    return [f"tx{i:0{width}d}" for i in range(1, keys + 1)]


def _parse_start(start: str | datetime) -> int:
    """Start instant as epoch ms; naive values are taken as UTC."""
    dt = start if isinstance(start, datetime) else datetime.fromisoformat(str(start))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _check(name: str, ok: bool, value: Any, requirement: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {requirement}, got {value!r}")


def write_transactions_csv(
    path: str | os.PathLike[str],
    rows: int,
    keys: int,
    seed: int,
    late_fraction: float = 0.01,
    *,
    borderline_fraction: float = 0.005,
    outlier_fraction: float = 0.002,
    start: str | datetime = DEFAULT_START,
    mean_interarrival_ms: float = 50.0,
    out_of_orderness_ms: int = DEFAULT_OUT_OF_ORDERNESS_MS,
    window_size_ms: int = DEFAULT_SIZE_MS,
) -> Path:
    """Write ``rows`` synthetic transactions over ``keys`` accounts to ``path``.

    Returns the path.  See the module docstring for the distributions.
    """
    _check("rows", isinstance(rows, int) and rows >= 0, rows, "an int >= 0")
    _check("keys", isinstance(keys, int) and keys >= 1, keys, "an int >= 1")
    _check("seed", isinstance(seed, int) and seed >= 0, seed, "an int >= 0")
    for name, value in (
        ("late_fraction", late_fraction),
        ("borderline_fraction", borderline_fraction),
        ("outlier_fraction", outlier_fraction),
    ):
        _check(name, 0.0 <= value <= 1.0, value, "in [0, 1]")
    _check(
        "late_fraction + borderline_fraction",
        late_fraction + borderline_fraction <= 1.0,
        late_fraction + borderline_fraction,
        "<= 1",
    )
    _check("mean_interarrival_ms", mean_interarrival_ms > 0, mean_interarrival_ms, "> 0")
    _check("out_of_orderness_ms", out_of_orderness_ms >= 0, out_of_orderness_ms, ">= 0")
    _check("window_size_ms", window_size_ms > 0, window_size_ms, "> 0")
    start_ms = _parse_start(start)
    late_lo = 2 * (window_size_ms + out_of_orderness_ms)
    late_hi = 6 * window_size_ms + 2 * out_of_orderness_ms  # exclusive
    _check("start", late_hi <= start_ms < _MAX_MS, start, "between 1970 and 9999 (UTC)")

    rng = np.random.default_rng(seed)
    names = np.array(key_names(keys))

    # Per-key profile: activity weight (Zipf-like, randomly assigned to keys),
    # typical amount (log-normal across keys) and spread.
    weights = 1.0 / np.arange(1, keys + 1) ** 0.8
    weights = weights[rng.permutation(keys)]
    weights /= weights.sum()
    level = np.exp(rng.normal(np.log(45.0), 0.9, keys))
    spread = rng.uniform(0.25, 0.6, keys)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    last_arrival = start_ms
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(HEADER)
        for chunk_start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - chunk_start)
            # Fixed draw order per chunk (determinism).
            gaps = np.floor(rng.exponential(mean_interarrival_ms, n)).astype(np.int64)
            key_idx = rng.choice(keys, size=n, p=weights)
            noise = rng.standard_normal(n)
            is_outlier = rng.random(n) < outlier_fraction
            spike = rng.uniform(6.0, 20.0, n)
            u = rng.random(n)
            small = np.floor(rng.beta(1.2, 6.0, n) * out_of_orderness_ms).astype(np.int64)
            border = out_of_orderness_ms + rng.integers(0, window_size_ms, n)
            large = rng.integers(late_lo, late_hi, n)

            arrival = last_arrival + np.cumsum(gaps)
            last_arrival = int(arrival[-1])
            if last_arrival >= _MAX_MS:
                raise ValueError("timestamps run past year 9999; lower rows or interarrival")
            delay = np.where(
                u < late_fraction,
                large,
                np.where(u < late_fraction + borderline_fraction, border, small),
            )
            event_ms = arrival - delay

            amount = level[key_idx] * np.exp(spread[key_idx] * noise)
            amount = np.where(is_outlier, amount * spike, amount)
            cents = np.maximum(1, np.rint(amount * 100.0)).astype(np.int64)
            whole, frac = np.divmod(cents, 100)

            stamps = np.datetime_as_string(event_ms.astype("datetime64[ms]"), unit="ms")
            stamp_bytes = stamps.astype("S23")
            stamp_bytes.view(np.uint8).reshape(n, 23)[:, 10] = ord(" ")  # 'T' -> ' '

            fh.write(
                "".join(
                    [
                        f"{k},{t},{w}.{f:02d}\n"
                        for k, t, w, f in zip(
                            names[key_idx].tolist(),
                            stamp_bytes.astype("U23").tolist(),
                            whole.tolist(),
                            frac.tolist(),
                        )
                    ]
                )
            )
    return path


def read_events(path: str | os.PathLike[str]) -> list[tuple[int, str, int, Decimal]]:
    """Read a transaction CSV as replay events ``(source_row, key, ts_ms, amount)``.

    A convenience for tests and benchmarks (no validation: every row must
    parse).  ``source_row`` is the 1-based data-row number (header excluded);
    only its order matters to the replay.  Timestamps are UTC, with or without
    fractional seconds.
    """
    import pandas as pd  # local: the generator itself does not need pandas

    df = pd.read_csv(path, dtype={"transaction_id": str, "timestamp": str, "amount": str})
    stamps = pd.to_datetime(df["timestamp"], format="ISO8601", utc=True)
    ts_ms = (stamps.astype("datetime64[ns, UTC]").astype("int64") // 1_000_000).tolist()
    return list(
        zip(
            range(1, len(df) + 1),
            df["transaction_id"].tolist(),
            ts_ms,
            [Decimal(text) for text in df["amount"]],  # exact, as the warehouse keeps them
        )
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m warehouse.synthetic",
        description=(
            "Generate a deterministic, realistic transaction CSV "
            "(transaction_id,timestamp,amount) in arrival order with event-time disorder."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rows", type=int, required=True, help="number of data rows")
    parser.add_argument("--keys", type=int, required=True, help="number of accounts (tx0001...)")
    parser.add_argument("--seed", type=int, required=True, help="random seed (>= 0)")
    parser.add_argument("--out", type=Path, required=True, help="output CSV path")
    parser.add_argument(
        "--late-fraction",
        type=float,
        default=0.01,
        help="fraction of rows delayed enough to be late under the default replay config",
    )
    parser.add_argument(
        "--borderline-fraction",
        type=float,
        default=0.005,
        help="fraction of rows delayed between out-of-orderness and +window size (about half end up late)",
    )
    parser.add_argument("--outlier-fraction", type=float, default=0.002, help="fraction of amount spikes")
    parser.add_argument(
        "--start",
        default=DEFAULT_START,
        help="first arrival time, ISO 8601 (naive = UTC)",
    )
    parser.add_argument(
        "--mean-interarrival-ms",
        type=float,
        default=50.0,
        help="mean gap between arrivals (all keys together)",
    )
    parser.add_argument(
        "--out-of-orderness-ms",
        type=int,
        default=DEFAULT_OUT_OF_ORDERNESS_MS,
        help="bound for the 'small' delays (match the replay config)",
    )
    parser.add_argument(
        "--window-size-ms",
        type=int,
        default=DEFAULT_SIZE_MS,
        help="window size used to scale the late delays (match the replay config)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        path = write_transactions_csv(
            args.out,
            rows=args.rows,
            keys=args.keys,
            seed=args.seed,
            late_fraction=args.late_fraction,
            borderline_fraction=args.borderline_fraction,
            outlier_fraction=args.outlier_fraction,
            start=args.start,
            mean_interarrival_ms=args.mean_interarrival_ms,
            out_of_orderness_ms=args.out_of_orderness_ms,
            window_size_ms=args.window_size_ms,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.rows} rows to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
