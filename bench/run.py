"""Benchmark: the full pipeline, each stage alone, both Flink engines, the lab's job and DuckDB.

    .venv/bin/python bench/run.py --rows 100000 1000000          # = make bench
    .venv/bin/python bench/run.py --rows 10000000 --no-lab --engines sql

For every size N it generates data with warehouse.synthetic (keys/disorder configurable), then
times, in separate processes, (1) the full Dagster run (`dagster asset materialize --select '*'`,
every asset and check) per engine, (2) ingest alone, (3) staging the Flink input, (4) the Flink
job per engine through its CLI, (5) loading its output + the conservation check, (6) the
reconciliation check (warehouse.reconcile.compare_tables: DuckDB SQL + Python exact-mean UDF), and
in the same run three DuckDB baselines computing the same windows with the same lateness rule: one
query straight from the raw CSV (the script a user could write instead), a plain-AVG query on the
loaded table and reconcile's exact query. At 100k rows it also runs the lab's ORIGINAL job (kept
outside the repository, default ../shared/seed/lab_job.py) from a scratch folder laid out as it
expects.

Peak memory is the largest VmHWM (/proc/<pid>/status) seen per process kind (java / python) in
the stage's process tree, and the largest sum of VmRSS over the tree at one moment, polled every
50 ms. Results go to stdout and bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from warehouse.schema import window_start_sql  # noqa: E402  (the repository is not installed as a package)
PY = sys.executable
VENV_BIN = str(Path(PY).parent)
DEFAULT_LAB_JOB = REPO.parent / "shared" / "seed" / "lab_job.py"

# --------------------------------------------------------------------------------------------
# process-tree sampling
# --------------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _status(pid: int) -> tuple[str, int, int] | None:
    """(kind, VmHWM in kB, VmRSS in kB) of a process; kind is 'java', 'python' or 'other'."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            text = handle.read()
    except OSError:
        return None
    name, hwm, rss = "", 0, 0
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1].strip() if len(line.split(None, 1)) > 1 else ""
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    kind = "java" if name.startswith("java") else "python" if name.startswith("python") or name == "dagster" else "other"
    return kind, hwm, rss


class TreeSampler(threading.Thread):
    """Max VmHWM per process kind over the process tree rooted at `pid`, and the largest sum of
    VmRSS over the whole tree at one moment (what the machine must hold at once)."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = {"java": 0, "python": 0, "other": 0}
        self.peak_total_kb = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        children = _children_map()
        todo, seen, total = [self.pid], set(), 0
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            todo += children.get(pid, [])
            found = _status(pid)
            if found:
                kind, hwm, rss = found
                self.peak_kb[kind] = max(self.peak_kb[kind], hwm)
                total += rss
        self.peak_total_kb = max(self.peak_total_kb, total)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


def measure(command: list[str], *, cwd: Path = REPO, env: dict | None = None, stdout_path: Path | None = None) -> dict:
    """Run `command`; wall seconds and peak RSS (MiB) of its java and python processes."""
    out = open(stdout_path, "w") if stdout_path else subprocess.PIPE
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.monotonic() - started
    sampler.stop.set()
    sampler.join()
    if stdout_path:
        out.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:4]}... failed ({proc.returncode}):\n{(stderr or '')[-3000:]}")
    return {
        "seconds": wall,
        "java_mib": sampler.peak_kb["java"] / 1024,
        "python_mib": sampler.peak_kb["python"] / 1024,
        "total_mib": sampler.peak_total_kb / 1024,
        "stdout": stdout or "",
        "load_avg": (load_before + os.getloadavg()[0]) / 2,
    }


# --------------------------------------------------------------------------------------------
# stages run in their own process (`bench/run.py _stage NAME ...`), mirroring the assets
# --------------------------------------------------------------------------------------------

# The "script" a user might write instead of the pipeline: one query straight from the raw CSV
# (parse, row order, running max, lateness rule, AVG), no validation beyond dropping unparsable rows.
BASELINE_CSV_SQL = f"""
WITH src AS (
  SELECT row_number() OVER () AS source_row, transaction_id AS key,
         epoch_ms(try_strptime("timestamp", ['%Y-%m-%d %H:%M:%S.%g', '%Y-%m-%d %H:%M:%S'])) AS event_time_ms,
         TRY_CAST(amount AS DOUBLE) AS amount
  FROM read_csv($path, header = true, all_varchar = true)),
m AS (
  SELECT key, amount,
         max(event_time_ms) OVER (ORDER BY source_row ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           - $ooo - 1 AS watermark_ms,
         {window_start_sql("event_time_ms")} AS window_start_ms
  FROM src WHERE event_time_ms IS NOT NULL AND amount IS NOT NULL)
SELECT key, window_start_ms, window_start_ms + $size AS window_end_ms, avg(amount) AS avg_amount,
       count(*) AS txn_count
FROM m WHERE NOT coalesce(window_start_ms + $size - 1 + $lateness <= watermark_ms, false)
GROUP BY key, window_start_ms
"""

BASELINE_AVG_SQL = f"""
WITH m AS (
  SELECT key, amount,
         max(event_time_ms) OVER (ORDER BY source_row ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           - $ooo - 1 AS watermark_ms,
         {window_start_sql("event_time_ms")} AS window_start_ms
  FROM transactions)
SELECT key, window_start_ms, window_start_ms + $size AS window_end_ms, avg(amount) AS avg_amount,
       count(*) AS txn_count
FROM m WHERE NOT coalesce(window_start_ms + $size - 1 + $lateness <= watermark_ms, false)
GROUP BY key, window_start_ms
"""


def _stage(name: str, args: list[str]) -> None:
    import duckdb

    from warehouse import reconcile, schema
    from warehouse.replay import ReplayConfig

    config = ReplayConfig()
    figures: dict = {}
    work_started = time.monotonic()  # after the imports: the stage's own work
    if name == "ingest":  # as the ingest_transactions asset: validate + insert into transactions
        from warehouse.ingest import read_transactions

        raw, db = args
        con = duckdb.connect(db)
        con.execute("SET memory_limit = '2GB'")  # the pipeline's default (TXN_DUCKDB_MEMORY_LIMIT)
        schema.create_tables(con)
        for chunk in read_transactions(raw):  # one commit per chunk, as the asset
            con.register("chunk_valid", chunk.valid)
            con.execute(
                "INSERT INTO transactions SELECT ?, source_row, line, transaction_id, key, "
                "epoch_ms(event_time_ms)::TIMESTAMPTZ, event_time_ms, amount FROM chunk_valid ORDER BY source_row",
                [raw],
            )
            con.unregister("chunk_valid")
        figures["transactions"] = schema.fetch_one(con, "SELECT count(*) FROM transactions")[0]
    elif name == "stage":  # as the window_averages asset: export the Flink input
        db, staged = args
        con = duckdb.connect(db)
        con.sql("SELECT source_row, key, event_time_ms, amount FROM transactions ORDER BY source_row").write_csv(
            staged, header=False
        )
    elif name == "load":  # as the window_averages asset: load the job's output + conservation check
        from orchestration.assets import _load_flink_output

        work_started = time.monotonic()
        db, output, source_file = args
        con = duckdb.connect(db)
        con.execute("BEGIN")
        con.execute("DELETE FROM window_averages")
        con.execute("DELETE FROM late_events")
        _load_flink_output(con, Path(output), source_file, config.window_size_ms)
        con.execute("COMMIT")
        n, counted, late = schema.fetch_one(
            con,
            "SELECT (SELECT count(*) FROM transactions), (SELECT sum(txn_count) FROM window_averages), "
            "(SELECT count(*) FROM late_events)",
        )
        assert n == counted + late, (n, counted, late)
        figures.update(windows=schema.fetch_one(con, "SELECT count(*) FROM window_averages")[0], late=late)
    elif name == "reconcile":  # the matches_independent_replay check, as the asset runs it
        db, source_file = args
        con = duckdb.connect(db)
        con.execute("SET memory_limit = '2GB'")  # the pipeline's default (TXN_DUCKDB_MEMORY_LIMIT)
        windows, late = reconcile.compare_tables(con, config, source_file)
        assert windows["equal"] and late["equal"], (windows["examples"], late["examples"])
    elif name == "duckdb":  # baselines: one DuckDB query each, from the raw CSV and on the ingested table
        db, raw = args
        params = {"size": config.window_size_ms, "ooo": config.out_of_orderness_ms,
                  "lateness": config.allowed_lateness_ms}  # fmt: skip
        csv_runs = []
        for _ in range(3):  # a fresh connection each time: nothing cached between attempts
            with duckdb.connect() as fresh:
                started = time.monotonic()
                figures["csv_windows"] = fresh.execute(
                    f"SELECT count(*), sum(avg_amount) FROM ({BASELINE_CSV_SQL})", {**params, "path": raw}
                ).fetchall()[0][0]
                csv_runs.append(time.monotonic() - started)
        figures["csv_s"], figures["csv_first_s"] = min(csv_runs), csv_runs[0]
        con = duckdb.connect(db, read_only=True)
        con.execute(f"SELECT count(*), sum(avg_amount) FROM ({BASELINE_AVG_SQL})", params).fetchall()  # warm the cache
        best = []
        for _ in range(3):
            started = time.monotonic()
            figures["avg_windows"] = con.execute(f"SELECT count(*), sum(avg_amount) FROM ({BASELINE_AVG_SQL})", params).fetchall()[0][0]
            best.append(time.monotonic() - started)
        figures["avg_s"] = min(best)
        reconcile.register_exact_mean(con)
        started = time.monotonic()
        sql = reconcile.EXPECTED_WINDOWS_SQL
        full = {**params, "source_file": None, "all_files": True}
        figures["exact_windows"] = con.execute(f"SELECT count(*), sum(avg_amount) FROM ({sql})", full).fetchall()[0][0]
        figures["exact_s"] = time.monotonic() - started
    else:
        raise SystemExit(f"unknown stage {name}")
    figures["work_s"] = time.monotonic() - work_started
    print(json.dumps(figures))


def stage(name: str, *args: str) -> dict:
    result = measure([PY, str(Path(__file__).resolve()), "_stage", name, *map(str, args)])
    result.update(json.loads(result.pop("stdout").strip().splitlines()[-1]))
    return result


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------


def flink_job(staged: Path, output: Path, engine: str, parallelism: int) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    result = measure([PY, "-m", "flink_jobs.window_average", "--input", str(staged), "--output", str(output),
                      "--parallelism", str(parallelism), "--engine", engine])  # fmt: skip
    result.update(json.loads(result.pop("stdout").strip().splitlines()[-1]))
    return result


def full_pipeline(raw: Path, work: Path, engine: str, parallelism: int) -> dict:
    home = work / f"dagster_home_{engine}"
    home.mkdir(exist_ok=True)
    warehouse = work / f"pipeline_{engine}_{raw.stem}.duckdb"
    warehouse.unlink(missing_ok=True)  # every repeat starts from an empty warehouse
    env = {**os.environ, "DAGSTER_HOME": str(home), "TXN_SOURCE_CSV": str(raw), "TXN_WAREHOUSE": str(warehouse),
           "TXN_FLINK_ENGINE": engine, "TXN_FLINK_PARALLELISM": str(parallelism)}  # fmt: skip
    result = measure([f"{VENV_BIN}/dagster", "asset", "materialize", "-m", "orchestration", "--select", "*"], env=env)
    result.pop("stdout")
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        result["windows"] = con.execute("SELECT count(*) FROM window_averages").fetchall()[0][0]
    return result


def lab_job(raw: Path, work: Path, lab_path: Path) -> dict:
    """The lab's original job, unmodified, from a scratch folder: ./run/ as cwd, ../data/data.csv."""
    scratch = work / "lab"
    (scratch / "data").mkdir(parents=True, exist_ok=True)
    (scratch / "run").mkdir(exist_ok=True)
    # The lab parses '%Y-%m-%d %H:%M:%S': drop the milliseconds the generator writes.
    with open(raw, newline="") as src, open(scratch / "data" / "data.csv", "w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        writer.writerows([key, stamp[:19], amount] for key, stamp, amount in reader)
    env = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    env.pop("PYTHONPATH", None)
    stdout_path = scratch / "stdout.txt"
    result = measure(["python", str(lab_path)], cwd=scratch / "run", env=env, stdout_path=stdout_path)
    result.pop("stdout")
    with open(stdout_path, errors="replace") as handle:
        result["windows"] = sum(1 for line in handle if line.startswith("Tumbling Window Avg"))
    return result


def bench_size(rows: int, args, work: Path) -> dict:
    from warehouse import synthetic

    print(f"\n=== {rows:,} rows ===", flush=True)
    raw = work / f"transactions_{rows}.csv"
    started = time.monotonic()
    synthetic.write_transactions_csv(raw, rows=rows, keys=args.keys, seed=args.seed, late_fraction=args.late_fraction)
    results: dict = {"rows": rows, "generate": {"seconds": time.monotonic() - started}}

    def report(label: str, r: dict) -> None:
        print(f"  {label:<28} {r['seconds']:8.2f} s  {rows / r['seconds']:>12,.0f} rows/s"
              f"  java {r.get('java_mib', 0):7.0f} MiB  python {r.get('python_mib', 0):6.0f} MiB"
              f"  all at once {r.get('total_mib', 0):6.0f} MiB", flush=True)  # fmt: skip

    for engine in args.engines if args.pipeline else ():
        runs = sorted((full_pipeline(raw, work, engine, args.parallelism) for _ in range(args.repeat)),
                      key=lambda run: run["seconds"])  # fmt: skip
        results[f"pipeline_{engine}"] = r = runs[len(runs) // 2]  # the median run
        r["all_seconds"] = [run["seconds"] for run in runs]
        report(f"full pipeline ({engine})", r)
    db = work / f"bench_{rows}.duckdb"
    db.unlink(missing_ok=True)
    results["ingest"] = r = stage("ingest", raw, db)
    report("ingest (validate + insert)", r)
    staged = work / f"staged_{rows}.csv"
    results["stage"] = r = stage("stage", db, staged)
    report("stage Flink input", r)
    for engine in args.engines:
        results[f"flink_{engine}"] = r = flink_job(staged, work / f"out_{engine}", engine, args.parallelism)
        report(f"Flink job ({engine})", r)
    engine = args.engines[0]
    results["load"] = r = stage("load", db, work / f"out_{engine}", raw)
    report("load output + conservation", r)
    results["reconcile"] = r = stage("reconcile", db, raw)
    report("reconciliation check", r)
    results["duckdb"] = r = stage("duckdb", db, raw)
    print(f"  DuckDB query from the CSV {r['csv_s']:8.3f} s   on the loaded table: plain AVG {r['avg_s']:8.3f} s, "
          f"exact (reconcile SQL + UDF) {r['exact_s']:8.3f} s", flush=True)
    if args.lab and rows <= args.lab_max_rows:
        results["lab"] = r = lab_job(raw, work, args.lab_job)
        report(f"lab job (original, {r['windows']:,} windows)", r)
        if 0 < args.lab_small_rows < rows:  # a second size gives the lab's own per-row cost
            small = work / f"transactions_{args.lab_small_rows}.csv"
            synthetic.write_transactions_csv(small, rows=args.lab_small_rows, keys=args.keys, seed=args.seed,
                                             late_fraction=args.late_fraction)  # fmt: skip
            results["lab_small"] = r = lab_job(small, work, args.lab_job)
            r["rows"] = args.lab_small_rows
            print(f"  lab job at {args.lab_small_rows:,} rows       {r['seconds']:8.2f} s", flush=True)
    return results


def _fmt_s(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def markdown(all_results: list[dict], args) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`{' '.join(['bench/run.py', *sys.argv[1:]])}` on "
        f"a {os.cpu_count()}-core machine, Python {platform.python_version()}, "
        f"Flink parallelism {args.parallelism}, synthetic data: {args.keys} keys, seed {args.seed}, "
        f"late fraction {args.late_fraction}. Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Peak RSS = largest VmHWM of a process of that kind in the stage's process tree; 'all processes at once' = "
        "the largest sum of VmRSS over the whole tree at one moment (sampled every 50 ms). Wall times include "
        "interpreter start-up and imports (each stage runs in its own process); 'load avg' is the machine's "
        "1-minute load average around the stage (the machine is shared: a high value means the figure is "
        "inflated).",
        "",
        "| rows | stage | wall s | rows/s | JVM peak MiB | Python peak MiB | all processes at once, peak MiB | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    labels = [("pipeline_sql", "full pipeline, sql (all assets + checks)"),
              ("pipeline_datastream", "full pipeline, datastream (all assets + checks)"),
              ("ingest", "ingest alone (validate + insert)"), ("stage", "stage Flink input (DuckDB → CSV)"),
              ("flink_sql", "Flink job, sql engine"), ("flink_datastream", "Flink job, datastream engine"),
              ("load", "load output + conservation check"), ("reconcile", "reconciliation check (in DuckDB, exact-mean UDF)"),
              ("lab", "lab's original job (streaming, from_collection)")]  # fmt: skip
    for res in all_results:
        rows = res["rows"]
        for key, label in labels:
            if key not in res:
                continue
            r = res[key]
            notes = []
            if "work_s" in r:
                notes.append(f"work itself {r['work_s']:.2f} s (rest: interpreter + imports)")
            if key.startswith("flink_"):
                notes.append(f"{r['windows']:,} windows, {r['late_events']:,} late; Flink net "
                             f"{r['flink_net_runtime_ms'] / 1000:.1f} s")  # fmt: skip
            elif key == "lab":
                notes.append(f"{r['windows']:,} windows printed (timing-dependent)")
                small = res.get("lab_small")
                if small:
                    notes.append(f"at {small['rows']:,} rows: {small['seconds']:.1f} s")
            elif key.startswith("pipeline"):
                notes.append(f"{r['windows']:,} windows")
                if len(r.get("all_seconds", [])) > 1:
                    notes.append("median of " + " / ".join(f"{x:.1f}" for x in r["all_seconds"]) + " s")
            if "load_avg" in r:
                notes.append(f"load avg {r['load_avg']:.1f}")
            note = "; ".join(notes)
            lines.append(f"| {rows:,} | {label} | {_fmt_s(r['seconds'])} | {rows / r['seconds']:,.0f} | "
                         f"{r.get('java_mib', 0):,.0f} | {r.get('python_mib', 0):,.0f} | "
                         f"{r.get('total_mib', 0):,.0f} | {note} |")  # fmt: skip
        d = res["duckdb"]
        lines.append(f"| {rows:,} | DuckDB query from the raw CSV (parse, running max, lateness rule, AVG) | "
                     f"{_fmt_s(d['csv_s'])} | {rows / d['csv_s']:,.0f} | | | | {d['csv_windows']:,} windows, in-process, "
                     f"best of 3 (first {_fmt_s(d['csv_first_s'])} s) |")  # fmt: skip
        lines.append(f"| {rows:,} | DuckDB query, plain AVG (same windows, same lateness rule) | {_fmt_s(d['avg_s'])} | "
                     f"{rows / d['avg_s']:,.0f} | | | | {d['avg_windows']:,} windows, in-process, best of 3 |")  # fmt: skip
        lines.append(f"| {rows:,} | DuckDB query, exact (reconcile SQL + exact-mean UDF) | {_fmt_s(d['exact_s'])} | "
                     f"{rows / d['exact_s']:,.0f} | | | | {d['exact_windows']:,} windows |")  # fmt: skip
    lines += ["", "## Ratios", ""]
    for res in all_results:
        rows, d = res["rows"], res["duckdb"]
        for engine in args.engines:
            p = res.get(f"pipeline_{engine}")
            if p:
                lines.append(f"* {rows:,} rows, full pipeline ({engine}) / DuckDB query from the CSV: "
                             f"**{p['seconds'] / d['csv_s']:,.0f}×** (target ≤ 10× at 1M); / plain-AVG query on the "
                             f"loaded table: {p['seconds'] / d['avg_s']:,.0f}×; / exact query on the loaded table: "
                             f"{p['seconds'] / d['exact_s']:,.0f}×")  # fmt: skip
        lab = res.get("lab")
        if lab:
            for engine in args.engines:
                f = res[f"flink_{engine}"]
                lines.append(f"* {rows:,} rows, Flink job ({engine}) throughput / lab job, wall clock: "
                             f"**{lab['seconds'] / f['seconds']:.1f}×**")  # fmt: skip
    sizes = sorted(all_results, key=lambda r: r["rows"])
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        lines += ["", f"## Fixed vs per-row cost (from {a['rows']:,} and {b['rows']:,} rows)", "",
                  "| stage | fixed s | per 1M rows s | marginal rows/s |", "|---|---:|---:|---:|"]  # fmt: skip
        for key, label in labels:
            if key in a and key in b and key != "lab":
                per_row = (b[key]["seconds"] - a[key]["seconds"]) / (b["rows"] - a["rows"])
                fixed = a[key]["seconds"] - per_row * a["rows"]
                marginal = f"{1 / per_row:,.0f}" if per_row > 0 else "n/a (noise)"
                lines.append(f"| {label} | {fixed:.2f} | {per_row * 1e6:.2f} | {marginal} |")
        for engine in args.engines:
            key = f"flink_{engine}"
            if key in a and key in b:
                ta, tb = a[key]["flink_net_runtime_ms"] / 1000, b[key]["flink_net_runtime_ms"] / 1000
                per_row = (tb - ta) / (b["rows"] - a["rows"])
                marginal = f"{1 / per_row:,.0f}" if per_row > 0 else "n/a (noise)"
                lines.append(f"| Flink job, {engine} engine: Flink net runtime only (no JVM/client start-up) | "
                             f"{ta - per_row * a['rows']:.2f} | {per_row * 1e6:.2f} | {marginal} |")  # fmt: skip
        lab = a.get("lab")
        if lab:
            lab_rate = a["rows"] / lab["seconds"]
            small = a.get("lab_small")
            lab_marginal = None
            if small and lab["seconds"] > small["seconds"]:
                lab_marginal = (a["rows"] - small["rows"]) / (lab["seconds"] - small["seconds"])
            lines += ["", f"Lab job at {a['rows']:,} rows: {lab['seconds']:.1f} s wall = {lab_rate:,.0f} rows/s over its "
                      "whole run (its JVM start-up included)"
                      + (f"; per additional row (from {small['rows']:,} to {a['rows']:,} rows, start-up excluded): "
                         f"{lab_marginal:,.0f} rows/s" if lab_marginal else "")
                      + ". Engine marginal throughput (from the Flink net runtimes at the two sizes) ÷ the lab's:", ""]  # fmt: skip
            for engine in args.engines:
                key = f"flink_{engine}"
                if key in a and key in b:
                    ta, tb = a[key]["flink_net_runtime_ms"] / 1000, b[key]["flink_net_runtime_ms"] / 1000
                    per_row = (tb - ta) / (b["rows"] - a["rows"])
                    if per_row > 0:
                        text = f"* {engine}: **{1 / per_row / lab_rate:,.0f}×** the lab job's whole-run throughput"
                        if lab_marginal:
                            text += f"; **{1 / per_row / lab_marginal:,.0f}×** its per-row throughput (start-up excluded on both sides)"
                        lines.append(text)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_stage"]:
        _stage(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--keys", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--late-fraction", type=float, default=0.06)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--engines", nargs="+", choices=["sql", "datastream"], default=["sql", "datastream"])
    parser.add_argument("--repeat", type=int, default=3, help="full pipeline runs per engine and size (median kept)")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false", help="skip the full Dagster runs")
    parser.add_argument("--no-lab", dest="lab", action="store_false", help="skip the lab's job")
    parser.add_argument("--lab-job", type=Path, default=DEFAULT_LAB_JOB)
    parser.add_argument("--lab-max-rows", type=int, default=100_000)
    parser.add_argument("--lab-small-rows", type=int, default=20_000,
                        help="also run the lab's job at this size, for its per-row cost (0: skip)")  # fmt: skip
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temp dir, removed afterwards")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "latest.md")
    args = parser.parse_args(argv)
    if args.lab and not args.lab_job.is_file():
        print(f"lab job {args.lab_job} not found: skipping it (--lab-job PATH)", file=sys.stderr)
        args.lab = False
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="txn-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        all_results = [bench_size(rows, args, work) for rows in args.rows]
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = markdown(all_results, args)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text, encoding="utf-8")
    (args.results.with_suffix(".json")).write_text(json.dumps(all_results, indent=1, default=str), encoding="utf-8")
    print("\n" + text)
    print(f"written to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
