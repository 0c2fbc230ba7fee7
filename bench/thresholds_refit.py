"""Anomaly thresholds on a large history: what a run's refit costs as the warehouse grows.

    .venv/bin/python bench/thresholds_refit.py [--windows 20000000] [--files 30] [--keys 500] [--dir /tmp/thresholds_refit]

Builds a segmented warehouse (warehouse/segments.py) whose `window_averages` are `--windows`
generated windows in `--files` files over `--keys` keys, published without thresholds. Then times
warehouse.thresholds.replace_thresholds as the pipeline calls it (with the run id), on the same
warehouse, one run after another:

1. the first refit: the histogram is built from every file (the cost of the history, once);
2. a new small file with 24 keys (as the 12k-row sample touches);
3. one of the files replayed with new windows for every key (a daily file);
4. the same small file replayed again.

Prints one line each, with the histogram's size.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from warehouse import segments, thresholds  # noqa: E402

_WINDOWS_SQL = """
INSERT INTO {target}
SELECT $file_prefix || (i % $files) || '.csv', printf('tx%04d', (i // $files) % $keys),
       epoch_ms(i * 1000)::TIMESTAMPTZ, epoch_ms(i * 1000 + 5000)::TIMESTAMPTZ,
       (50 + (hash(i + $seed) % 10000) / 100.0)::DOUBLE, 1 + hash(i * 7 + $seed) % 3, 0, 0, 0, i * 1000, i * 1000 + 5000
FROM range($n) t(i)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20_000_000)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/thresholds_refit"))
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    con = duckdb.connect(str(args.dir / "catalog.duckdb"))
    con.execute("SET memory_limit = '2GB'")
    segment_dir = args.dir / "segments"
    segments.prepare(con, segment_dir)
    started = time.monotonic()
    con.execute(
        _WINDOWS_SQL.format(target="staged.window_averages"),
        {"n": args.windows, "files": args.files, "keys": args.keys, "seed": 0, "file_prefix": "f"},
    )
    segments.seal(con, segment_dir, "history")
    print(
        f"{args.windows:,} windows of {args.keys} keys in {args.files} files built in {time.monotonic() - started:.1f} s"
    )

    def refit(label: str, run_id: str, replaced: str | None, rows: dict[str, object] | None) -> None:
        if replaced is not None:
            target = segments.replace_file(con, "window_averages", replaced)
            con.execute(_WINDOWS_SQL.format(target=target), rows)
        started = time.monotonic()
        count = thresholds.replace_thresholds(con, min_windows=30, z=3.5, run_id=run_id)
        took = time.monotonic() - started
        (cells,) = con.execute("SELECT count(*) FROM threshold_histogram").fetchone()
        print(f"{label}: {took:.2f} s ({count} keys with a threshold, histogram {cells:,} cells)")
        segments.seal(con, segment_dir, run_id)

    per_file = args.windows // args.files
    small = {"n": 24 * 500, "files": 1, "keys": 24, "seed": 1, "file_prefix": "small"}
    refit("first refit: the histogram from every file", "r1", None, None)
    refit("a new file of 24 keys", "r2", "small0.csv", small)
    refit("a file of every key replayed", "r3", "f0.csv",
          {"n": per_file, "files": 1, "keys": args.keys, "seed": 2, "file_prefix": "f"})  # fmt: skip
    refit("the small file replayed", "r4", "small0.csv", {**small, "seed": 3})
    con.close()
    shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
