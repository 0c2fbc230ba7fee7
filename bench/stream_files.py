"""Benchmark of stream mode (issue 28): does appending the n-th daily file cost what one file costs?

Generates `--days` consecutive daily files (`--rows` each, `--keys` keys, some rows late, sessions and windows
across midnight), replays them one by one into a stream-mode warehouse (a real Dagster run each, every asset and
check), and reports per file the run's wall time, the Flink job's wall time, the savepoint's size and the
provisional windows. Beside it, in the same run, the first and the last day each replayed alone into a file-mode
warehouse: the cost of one file.

    .venv/bin/python bench/stream_files.py --days 30 --rows 20000 --results bench/results/stream_files.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY_MS = 86_400_000
START_MS = 1_714_521_600_000  # 2024-05-01 00:00:00 UTC


def write_days(folder: Path, days: int, rows: int, keys: int, seed: int) -> list[Path]:
    """Consecutive daily files; about 5 % of the rows are 1-20 s behind, some across midnight."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    step = DAY_MS // rows
    files = []
    for day in range(days):
        lines = ["transaction_id,timestamp,amount\n"]
        for i in range(rows):
            t = START_MS + day * DAY_MS + i * step + rng.randrange(step)
            if rng.random() < 0.05:
                t -= rng.randint(1_000, 20_000)
            stamp = datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            lines.append(f"k{rng.randrange(keys)},{stamp},{rng.randint(100, 99_999) / 100:.2f}\n")
        path = folder / f"day_{day + 1:03d}.csv"
        path.write_text("".join(lines))
        files.append(path)
    return files


def run_once(source: Path, warehouse: Path, mode: str, spec: dict) -> dict:
    from dagster import DagsterInstance, PipesSubprocessClient, materialize

    from orchestration.definitions import PIPELINE_ASSETS
    from orchestration.settings import REPO_ROOT, PipelineSettings

    started = time.monotonic()
    result = materialize(
        PIPELINE_ASSETS,
        resources={
            "pipeline": PipelineSettings(source_csv=str(source), warehouse=str(warehouse), replay_mode=mode, **spec),
            "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
        },
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    wall = time.monotonic() - started
    if not result.success:
        raise RuntimeError(f"the {mode}-mode run of {source} failed")
    meta = result.asset_materializations_for_node("replay_event_time_windows")[0].metadata
    value = {k: v.value for k, v in meta.items()}
    return {
        "wall_s": round(wall, 2),
        "flink_wall_s": value.get("flink_wall_seconds"),
        "files_replayed": value.get("files_replayed", 1),
        "provisional_windows": value.get("provisional_windows", 0),
    }


def savepoint_kib(warehouse: Path) -> float:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        (path,) = con.execute("SELECT savepoint FROM stream_files ORDER BY position DESC LIMIT 1").fetchall()[0]
    folder = Path(path.removeprefix("file:"))
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per daily file")
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--alone-every", type=int, default=0,
                        help="also replay every n-th day alone in file mode right after its stream run (0: only "
                        "the first and the last day, before the stream): ratios taken side by side")  # fmt: skip
    parser.add_argument("--results", type=Path, default=Path("bench/results/stream_files.md"))
    args = parser.parse_args(argv)
    spec = {"window_kind": "session", "session_gap_ms": 60_000}
    started_at = datetime.now(UTC)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as scratch:
        work = Path(scratch)
        files = write_days(work / "in", args.days, args.rows, args.keys, args.seed)
        alone = {}
        for label, path in (("first", files[0]), ("last", files[-1])) if not args.alone_every else ():
            alone[label] = run_once(path, work / f"alone_{label}.duckdb", "file", spec)
            print(f"file mode, {path.name} alone: {alone[label]['wall_s']} s", flush=True)
        runs = []
        warehouse = work / "stream.duckdb"
        for index, path in enumerate(files, start=1):
            figures = run_once(path, warehouse, "stream", spec)
            figures.update(day=index, savepoint_kib=savepoint_kib(warehouse))
            if args.alone_every and (index % args.alone_every == 1 or index == len(files)):
                figures["alone_wall_s"] = run_once(path, work / f"alone_{index}.duckdb", "file", spec)["wall_s"]
            runs.append(figures)
            print(f"stream, day {index}: {figures}", flush=True)
    load_end = os.getloadavg()
    k = min(5, len(runs) // 2) or 1
    first, last = statistics.median(r["wall_s"] for r in runs[:k]), statistics.median(r["wall_s"] for r in runs[-k:])
    side_by_side = [(r["day"], r["wall_s"], r["alone_wall_s"]) for r in runs if "alone_wall_s" in r]
    one_file = statistics.median([a["wall_s"] for a in alone.values()] + [alone_s for _, _, alone_s in side_by_side])
    summary = {
        "command": "bench/stream_files.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": started_at.isoformat(timespec="seconds"),
        "load_start": load_start,
        "load_end": load_end,
        "days": args.days,
        "rows_per_day": args.rows,
        "keys": args.keys,
        "window": spec,
        "first_days_median_s": first,
        "last_days_median_s": last,
        "last_over_first": round(last / first, 3),
        "one_file_alone_s": one_file,
        "last_days_over_one_file": round(last / one_file, 3),
        "alone": alone,
        "side_by_side": side_by_side,
        "side_by_side_median_ratio": round(statistics.median(w / a for _, w, a in side_by_side), 3)
        if side_by_side
        else None,
        "runs": runs,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    lines = [
        "# Stream mode: cost per appended file",
        "",
        f"`{summary['command']}`, started {summary['started']}; load average at the start "
        f"{' / '.join(f'{x:.2f}' for x in load_start)}, at the end {' / '.join(f'{x:.2f}' for x in load_end)}.",
        "",
        f"{args.days} daily files of {args.rows:,} rows, {args.keys} keys, session windows (gap 60 s), about 5 % of "
        "the rows 1-20 s late; each a real Dagster run of every asset and check.",
        "",
        f"- median of the first {k} days: **{first:.2f} s** per file; of the last {k}: **{last:.2f} s** "
        f"(last / first **{summary['last_over_first']}×**)",
        f"- one file alone in file mode (median of the first and the last day): **{one_file:.2f} s**; "
        f"the last days in stream mode / one file alone: **{summary['last_days_over_one_file']}×**",
        *(
            [
                f"- side by side (the day's stream run, then the same file alone in file mode): median stream / alone "
                f"**{summary['side_by_side_median_ratio']}×** over days {', '.join(str(d) for d, _, _ in side_by_side)}"
            ]
            if side_by_side
            else []
        ),
        "",
        "| day | run wall s | Flink job wall s | files replayed | provisional windows | savepoint KiB | alone, file mode s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['day']} | {r['wall_s']} | {r['flink_wall_s']} | {r['files_replayed']} | "
            f"{r['provisional_windows']} | {r['savepoint_kib']} | {r.get('alone_wall_s', '')} |"
            for r in runs
        ),
        "",
    ]
    args.results.write_text("\n".join(lines))
    print("\n".join(lines[6:9]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
