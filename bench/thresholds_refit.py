"""Anomaly thresholds on a large history: a full refit against refitting only the keys a run changed.

    .venv/bin/python bench/thresholds_refit.py [--windows 20000000] [--keys 500] [--db /tmp/thresholds_refit.duckdb]

Builds `window_averages` with generated windows (30 files over `--keys` keys), then times
warehouse.thresholds.replace_thresholds three ways on the same table: every key; the 24 keys of a
small file (as the 12k-row sample touches); every key through the incremental path (what a daily
file with all keys costs, the stale-row check included). Prints one line each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from warehouse import schema, thresholds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20_000_000)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--db", type=Path, default=Path("/tmp/thresholds_refit.duckdb"))
    args = parser.parse_args()
    args.db.unlink(missing_ok=True)
    con = duckdb.connect(str(args.db))
    con.execute("SET memory_limit = '2GB'")
    schema.create_tables(con)
    started = time.monotonic()
    con.execute(
        "INSERT INTO window_averages SELECT 'f' || (i % 30) || '.csv', printf('tx%04d', (i // 30) % $keys), "
        "epoch_ms(i * 1000)::TIMESTAMPTZ, epoch_ms(i * 1000 + 5000)::TIMESTAMPTZ, "
        "(50 + (hash(i) % 10000) / 100.0)::DOUBLE, 1 + hash(i * 7) % 3, 0, 0, 0, i * 1000, i * 1000 + 5000 "
        "FROM range($n) t(i)",
        {"n": args.windows, "keys": args.keys},
    )
    con.execute("CHECKPOINT")
    print(f"{args.windows:,} windows of {args.keys} keys built in {time.monotonic() - started:.1f} s")
    every_key = {f"tx{k:04d}" for k in range(args.keys)}
    for label, keys in [("full refit", None), ("24 changed keys", set(sorted(every_key)[:24])),
                        ("every key, incremental path", every_key)]:  # fmt: skip
        thresholds.replace_thresholds(con, min_windows=30, z=3.5)  # the same starting table each time
        started = time.monotonic()
        count = thresholds.replace_thresholds(con, min_windows=30, z=3.5, changed_keys=keys)
        print(f"{label}: {time.monotonic() - started:.2f} s ({count} keys with a threshold)")
    con.close()
    args.db.unlink()


if __name__ == "__main__":
    main()
