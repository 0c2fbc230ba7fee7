"""Ingest throughput (issue 25): the exact parser against DuckDB's reader (warehouse/bulk_ingest.py) on the
same clean synthetic file, back to back, each load in a fresh process and a fresh on-disk warehouse.

    .venv/bin/python bench/ingest.py --rows 1000000 10000000 --repeat 3

Files: `python -m warehouse.synthetic --rows N --keys 500 --seed 7 --out <work>/rows-N.csv` (made once,
kept in --work-dir). Each repeat runs both paths, in alternating order; reported per size: the median wall
time of `bulk_ingest.load_file` (inserts and the quarantine's arrays included, process start-up and the
empty warehouse's creation excluded), rows/s, the ratio exact / fast of every pair, the peak RSS of the
loading process, and the 1-minute load average around each pair. Tables are compared after each pair.
Results: bench/results/ingest.md and ingest.json (overwritten).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TABLES = ("transactions", "rejected_rows")


def one(raw: str, db: str, fast: bool) -> dict:
    """Load *raw* into a fresh warehouse at *db* (in this process) and describe it."""
    import duckdb

    from warehouse import bulk_ingest, schema

    con = duckdb.connect(db)
    con.execute("SET memory_limit = '2GB'")  # the pipeline's default (TXN_DUCKDB_MEMORY_LIMIT)
    schema.create_tables(con)
    started, cpu_started = time.monotonic(), time.process_time()
    loaded = bulk_ingest.load_file(con, raw, raw, TABLES, fast=fast)
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    digest = con.execute(
        "SELECT count(*), sum(source_row * 7 + line), sum(event_time_ms % 1000003), sum(amount), "
        "sum(length(transaction_id) + length(key)) FROM transactions"
    ).fetchall()[0]
    rejected = con.execute("SELECT count(*) FROM rejected_rows").fetchall()[0][0]
    con.close()
    return {
        "fast": loaded.fast,
        "fallback_reason": loaded.fallback_reason,
        "records": loaded.records,
        "decided_in_sql": loaded.decided_in_sql,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # all threads: the work, less distorted than wall time on a busy machine
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "digest": [str(v) for v in digest],
        "rejected": rejected,
    }


def run_one(raw: Path, work: Path, fast: bool) -> dict:
    db = work / f"warehouse-{'fast' if fast else 'exact'}.duckdb"
    for leftover in (db, Path(f"{db}.wal")):
        leftover.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--one", "fast" if fast else "exact", str(raw), str(db)]
    out = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True).stdout
    db.unlink(missing_ok=True)
    return json.loads(out.strip().splitlines()[-1])


def dataset(rows: int, work: Path) -> Path:
    path = work / f"rows-{rows}.csv"
    if not path.exists():
        subprocess.run(
            [sys.executable, "-m", "warehouse.synthetic", "--rows", str(rows), "--keys", "500", "--seed", "7",
             "--out", str(path)], cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
    return path


def markdown(results: dict) -> str:
    lines = [
        "# Ingest throughput: exact parser vs DuckDB's reader (bulk_ingest)",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']}; started {results['started']}.",
        "Clean synthetic files (`python -m warehouse.synthetic --rows N --keys 500 --seed 7`); each pair back to back "
        "in fresh processes, order alternating; wall time of `bulk_ingest.load_file` into an on-disk warehouse.",
        "",
        "| rows | exact s (median) | exact rows/s | DuckDB s (median) | DuckDB rows/s | exact / DuckDB per pair "
        "| CPU s exact / DuckDB (median) | rows per CPU s exact / DuckDB | peak RSS exact / DuckDB | load avg |",
        "|---:|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for size in results["sizes"]:
        rows = size["rows"]
        exact = statistics.median(p["exact"]["seconds"] for p in size["pairs"])
        fast = statistics.median(p["fast"]["seconds"] for p in size["pairs"])
        ratios = ", ".join(f"{p['exact']['seconds'] / p['fast']['seconds']:.2f}×" for p in size["pairs"])
        rss = (
            f"{max(p['exact']['peak_rss_bytes'] for p in size['pairs']) / 2**20:,.0f} / "
            f"{max(p['fast']['peak_rss_bytes'] for p in size['pairs']) / 2**20:,.0f} MiB"
        )
        load = ", ".join(f"{p['load_avg']:.1f}" for p in size["pairs"])
        cpu_exact = statistics.median(p["exact"]["cpu_seconds"] for p in size["pairs"])
        cpu_fast = statistics.median(p["fast"]["cpu_seconds"] for p in size["pairs"])
        cpu = f"{cpu_exact:.2f} / {cpu_fast:.2f} | {rows / cpu_exact:,.0f} / {rows / cpu_fast:,.0f}"
        lines.append(
            f"| {rows:,} | {exact:.2f} | {rows / exact:,.0f} | {fast:.2f} | {rows / fast:,.0f} | {ratios} | {cpu} | {rss} "
            f"| {load} |"
        )
    lines += ["", "Every pair's tables matched (row count, digests of numbering, times, amounts and keys)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        print(json.dumps(one(argv[2], argv[3], argv[1] == "fast")))
        return 0
    parser = argparse.ArgumentParser(prog="bench/ingest.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=None, help="keeps the generated files; default: a temp dir")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "ingest.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = {
            "command": "python bench/ingest.py " + " ".join(argv),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "sizes": [],
        }
        for rows in args.rows:
            raw = dataset(rows, work)
            pairs = []
            for i in range(args.repeat):
                before = os.getloadavg()[0]
                order = (False, True) if i % 2 == 0 else (True, False)
                got = {("fast" if fast else "exact"): run_one(raw, work, fast) for fast in order}
                got["load_avg"] = (before + os.getloadavg()[0]) / 2
                assert got["fast"]["fast"] and not got["exact"]["fast"], got["fast"]["fallback_reason"]
                same = all(got["fast"][k] == got["exact"][k] for k in ("records", "digest", "rejected"))
                assert same, f"the paths' tables differ on {raw}: {got}"
                pairs.append(got)
                print(
                    f"{rows:,} rows: exact {got['exact']['seconds']:.2f} s ({got['exact']['cpu_seconds']:.2f} CPU s), "
                    f"DuckDB {got['fast']['seconds']:.2f} s ({got['fast']['cpu_seconds']:.2f} CPU s) "
                    f"(load {got['load_avg']:.1f})",
                    flush=True,
                )
            results["sizes"].append({"rows": rows, "pairs": pairs})
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(markdown(results))
    args.results.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
