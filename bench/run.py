"""Benchmark of the pipeline (issues 9 and 12): full runs per window kind, each stage alone, a plain
Flink SQL baseline, key cardinality, a warehouse with history, DuckDB, and the lab's original job.

    .venv/bin/python bench/run.py                                  # = make bench: the default set
    .venv/bin/python bench/run.py --rows 20000 50000 --repeat 1    # a smoke test
    .venv/bin/python bench/run.py --history                        # + the history case (minutes)
    .venv/bin/python bench/run.py --rows 10000000 --kinds tumbling --repeat 1 --no-lab \\
        --cardinalities --results bench/results/10m.md                 # 10M rows, memory target
    .venv/bin/python bench/ingest.py --rows 1000000 10000000          # ingest alone: exact parser vs DuckDB

Each measurement runs in its own process tree, polled for memory, with the calling shell's TXN_*
variables dropped; on failure, timeout or Ctrl-C the whole process group is terminated, then killed.
Results: bench/results/latest.md ("Ratios and targets": each target, its value, met or missed) and
latest.json, overwritten (or --results). What each section measures, and how: docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from flink_jobs.window_job import CHECKPOINT_INTERVAL_MS, DEFAULT_JVM_HEAP, DEFAULT_PARALLELISM  # noqa: E402 (after the path)
from warehouse.store import DEFAULT_MEMORY_LIMIT  # noqa: E402

PY = sys.executable
VENV_BIN = str(Path(PY).parent)
HERE = Path(__file__).resolve()
PLAIN_SQL = HERE.parent / "plain_flink_sql.py"
DEFAULT_LAB_JOB = REPO.parent / "shared" / "seed" / "lab_job.py"
CUSTOM_KINDS = ("tumbling", "sliding")  # issue 10's target kinds for a custom aggregate
SAMPLE = REPO / "data" / "sample_transactions.csv"
KINDS = ("tumbling", "sliding", "session")
KIND_SPECS = {
    "tumbling": {"size_ms": 5000},
    "sliding": {"size_ms": 10_000, "slide_ms": 5000},
    "session": {"gap_ms": 3000},
}
JVM_HEAP = DEFAULT_JVM_HEAP  # the pipeline's defaults: TXN_FLINK_JVM_HEAP, TXN_DUCKDB_MEMORY_LIMIT
DUCKDB_MEMORY_LIMIT = DEFAULT_MEMORY_LIMIT
GB = 1e9


def spec_of(kind: str):
    from warehouse.windows import WindowSpec

    return WindowSpec.of(kind, **KIND_SPECS[kind])


# --------------------------------------------------------------------------------------------
# processes: sampling /proc, running, cleaning up
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
    """(kind, VmHWM kB, VmRSS kB) of a process; kind is 'java', 'python' or 'other'."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            text = handle.read()
    except OSError:
        return None
    name, hwm, rss = "", 0, 0
    for line in text.splitlines():
        if line.startswith("Name:"):
            parts = line.split(None, 1)
            name = parts[1].strip() if len(parts) > 1 else ""
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    kind = (
        "java" if name.startswith("java") else "python" if name.startswith("python") or name == "dagster" else "other"
    )
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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_group(pgid: int) -> bool:
    """Terminate, then kill, what is left of the process group we started (JVMs included).
    Returns True when something was still running."""
    if not _group_alive(pgid):
        return False
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return True
            time.sleep(0.1)
    return True


class CommandFailed(RuntimeError):
    pass


# What a failing measurement raises without the benchmark having to stop (the rest still runs).
RECOVERABLE = (CommandFailed, AssertionError, ValueError, KeyError, TypeError, OSError, subprocess.TimeoutExpired)


TIMEOUT_S = 3600.0  # per command; --timeout


def measure(command: list[str], *, log: Path, cwd: Path = REPO, env: dict | None = None) -> dict:
    """Run `command` in its own session; wall seconds, peak RSS (MiB) per kind and all at once.
    stdout goes to `log`.out, stderr to `log`.err."""
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    load_before = os.getloadavg()[0]
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            returncode = proc.wait(timeout=TIMEOUT_S)
        except BaseException:  # timeout, Ctrl-C: take the whole group down, JVMs included
            _end_group(proc.pid)
            proc.wait()
            raise
        finally:
            wall = time.monotonic() - started
            sampler.stop.set()
            sampler.join()
        leftovers = _end_group(proc.pid)  # nothing should outlive the command
    if returncode != 0:
        tail = err_path.read_text(errors="replace")[-3000:]
        # the work dir is usually temporary: keep the failed command's logs where they outlive it
        kept = HERE.parent / "results" / "tmp" / "failed" / err_path.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(err_path, kept)
        if out_path.is_file():
            shutil.copyfile(out_path, kept.with_suffix(".out"))
        raise CommandFailed(
            f"{' '.join(map(str, command[:5]))} ... failed ({returncode}); logs kept in {kept}:\n{tail}"
        )
    return {
        "seconds": wall,
        "java_mib": sampler.peak_kb["java"] / 1024,
        "python_mib": sampler.peak_kb["python"] / 1024,
        "other_mib": sampler.peak_kb["other"] / 1024,
        "total_mib": sampler.peak_total_kb / 1024,
        "load_avg": (load_before + os.getloadavg()[0]) / 2,
        "leftover_processes_killed": leftovers,
        "stdout_path": str(out_path),
        "stderr_path": str(err_path),
    }


def last_json_line(path: str) -> dict:
    for line in reversed(Path(path).read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in {path}")


def clean_env(**extra: str) -> dict:
    """This environment without any TXN_* setting of the calling shell, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXN_")}
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# stages in their own process (`bench/run.py _stage NAME JSON`), mirroring the assets
# --------------------------------------------------------------------------------------------

# The script a user might write instead of the pipeline: one DuckDB query from the raw CSV (parse,
# file order, running max, the lateness rule, AVG), nothing validated beyond dropping unparsable rows.
BASELINE_CSV_SQL = """
WITH src AS (
  SELECT row_number() OVER () AS source_row, transaction_id AS key,
         epoch_ms(try_strptime("timestamp", ['%Y-%m-%d %H:%M:%S.%g', '%Y-%m-%d %H:%M:%S'])) AS event_time_ms,
         TRY_CAST(amount AS DOUBLE) AS amount
  FROM read_csv($path, header = true, all_varchar = true)),
m AS (
  SELECT key, amount,
         max(event_time_ms) OVER (ORDER BY source_row ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           - $ooo - 1 AS watermark_ms,
         event_time_ms - (((event_time_ms % $size) + $size) % $size) AS window_start_ms
  FROM src WHERE event_time_ms IS NOT NULL AND amount IS NOT NULL)
SELECT key, window_start_ms, window_start_ms + $size AS window_end_ms, avg(amount) AS avg_amount,
       count(*) AS txn_count
FROM m WHERE NOT coalesce(window_start_ms + $size - 1 + $lateness <= watermark_ms, false)
GROUP BY key, window_start_ms
"""


def _connect(db: str):
    import duckdb

    con = duckdb.connect(db)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
    return con


def _stage(name: str, a: dict) -> None:
    import duckdb  # noqa: F401

    from warehouse import schema

    figures: dict = {}
    work_started = time.monotonic()  # after the imports: the stage's own work
    if name == "ingest":  # as the ingest_transactions asset: bulk_ingest.load_file into transactions + rejected_rows
        from warehouse import bulk_ingest

        con = _connect(a["db"])
        schema.create_tables(con)
        work_started = time.monotonic()
        loaded = bulk_ingest.load_file(con, a["raw"], a["raw"], ("transactions", "rejected_rows"))
        figures["duckdb_reader"], figures["fallback_reason"] = loaded.fast, loaded.fallback_reason
        figures["transactions"], figures["rejected"] = schema.fetch_one(
            con, "SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM rejected_rows)")  # fmt: skip
    elif name == "stage":  # as the replay asset: export the Flink input
        from warehouse.flink_output import stage_input

        con = _connect(a["db"])
        work_started = time.monotonic()
        figures["staged_rows"] = stage_input(con, a["raw"], Path(a["staged"]))
    elif name == "load":  # as the replay asset: replace the file's windows and late events by the job's output
        from warehouse.flink_output import load_output

        spec = spec_of(a["kind"])
        con = _connect(a["db"])
        work_started = time.monotonic()
        con.execute("BEGIN")
        con.execute("DELETE FROM window_averages WHERE source_file = ?", [a["raw"]])
        con.execute("DELETE FROM late_events WHERE source_file = ?", [a["raw"]])
        load_output(con, Path(a["output"]), a["raw"], spec)
        con.execute("COMMIT")
        figures["windows"], figures["late_events"] = schema.fetch_one(
            con, "SELECT (SELECT count(*) FROM window_averages), (SELECT count(*) FROM late_events)")  # fmt: skip
    elif name == "reconcile":  # the replay asset's checks: matches_independent_replay (+ the other two)
        from warehouse import quality, reconcile

        spec = spec_of(a["kind"])
        con = _connect(a["db"])
        work_started = time.monotonic()
        windows, late = reconcile.compare_tables(con, spec, a["raw"])
        figures["reconcile_s"] = time.monotonic() - work_started
        assert windows["equal"] and late["equal"], (windows["examples"], late["examples"])
        checked = time.monotonic()
        conserved = quality.conservation_check(con, spec, a["raw"], windows["expected_pairs"])
        shaped = quality.window_shape_check(con, spec, a["raw"])
        assert conserved.passed and shaped.passed, (conserved.description, shaped.description)
        figures["checks_s"] = time.monotonic() - checked
        figures["windows_compared"] = windows["compared"]
    elif name == "duckdb":  # the floor: one query from the raw CSV, a fresh connection each attempt
        import duckdb

        spec = spec_of("tumbling")
        params = {"size": spec.size_ms, "ooo": spec.out_of_orderness_ms, "lateness": spec.allowed_lateness_ms,
                  "path": a["raw"]}  # fmt: skip
        runs = []
        for _ in range(3):
            with duckdb.connect() as fresh:
                started = time.monotonic()
                figures["windows"], figures["counted"] = fresh.execute(
                    f"SELECT count(*), sum(txn_count) FROM ({BASELINE_CSV_SQL})", params).fetchall()[0]  # fmt: skip
                runs.append(time.monotonic() - started)
        figures["best_s"], figures["first_s"] = min(runs), runs[0]
    elif name == "history_copy":  # copies of one replayed file under other names, in every table with source_file
        from warehouse import schema, segments, thresholds
        from warehouse.store import WarehouseStore

        store = WarehouseStore(a["db"], memory_limit=DUCKDB_MEMORY_LIMIT)
        work_started = time.monotonic()
        with store.connect_staging("history-copy") as con:
            # the contract's tables (not the catalog's `segments`, whose rows name the original's files)
            tables = sorted(t for t, columns in schema.TABLES.items() if ("source_file", "VARCHAR") in columns)
            (original,) = [f for (f,) in con.execute("SELECT DISTINCT source_file FROM transactions").fetchall()]
            for i in range(1, a["copies"] + 1):
                con.execute("BEGIN")
                for table in tables:
                    con.execute(f'INSERT INTO {segments.insert_target(con, table)} SELECT * REPLACE ($copy AS source_file) '
                                f'FROM "{table}" WHERE source_file = $original',
                                {"copy": f"{original}#history-{i:02d}", "original": original})  # fmt: skip
                con.execute("COMMIT")
            # The thresholds span every file, so 30 real runs would have left them fitted over all 30 copies:
            # refit them once, as the last of those runs did (with the pipeline's default method).
            method = thresholds.Method()
            con.execute("BEGIN")
            thresholds.replace_thresholds(con, min_windows=method.min_windows, z=method.z, run_id="history-copy")
            con.execute("COMMIT")
        store.publish("history-copy")  # the copies become segments, as 30 runs would have left them
        with store.connect_published() as con:
            figures["tables"] = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in tables}
            figures["source_files"] = con.execute("SELECT count(DISTINCT source_file) FROM transactions").fetchall()[0][
                0
            ]
    else:
        raise SystemExit(f"unknown stage {name}")
    figures["work_s"] = time.monotonic() - work_started
    print(json.dumps(figures, default=str))


# --------------------------------------------------------------------------------------------
# the measurements
# --------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.home = work / "dagster_home"
        self.home.mkdir(exist_ok=True)
        shutil.copyfile(REPO / "orchestration" / "dagster.yaml", self.home / "dagster.yaml")
        self.files: dict[tuple[int, str], Path] = {}
        self.errors: list[str] = []
        self.generated: dict[str, float] = {}
        self._n = 0

    def log(self, label: str) -> Path:
        self._n += 1
        return self.logs / f"{self._n:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}"

    # --- data ---------------------------------------------------------------------------------

    def dataset(self, rows: int, keys: int | str) -> Path:
        """The synthetic file for (rows, keys); keys == 'row' is one key per row (from the `--keys` file)."""
        from warehouse import synthetic

        key = (rows, str(keys))
        if key in self.files:
            return self.files[key]
        started = time.monotonic()
        if keys == "row":
            base = self.dataset(rows, self.args.keys)
            path = self.work / f"transactions_{rows}_one_key_per_row.csv"
            with open(base, newline="") as src, open(path, "w", newline="") as dst:
                dst.write(src.readline())
                width = len(str(rows))
                for i, line in enumerate(src, 1):
                    dst.write(f"r{i:0{width}d}{line[line.index(',') :]}")
        else:
            path = self.work / f"transactions_{rows}_k{keys}.csv"
            synthetic.write_transactions_csv(path, rows=rows, keys=int(keys), seed=self.args.seed,
                                             late_fraction=self.args.late_fraction)  # fmt: skip
        self.generated[path.name] = time.monotonic() - started
        self.files[key] = path
        return path

    # --- processes ----------------------------------------------------------------------------

    def stage(self, name: str, label: str, **a) -> dict:
        a = {k: str(v) if isinstance(v, Path) else v for k, v in a.items()}
        result = measure([PY, str(HERE), "_stage", name, json.dumps(a)], log=self.log(label))
        result.update(last_json_line(result["stdout_path"]))
        return result

    def flink_job(self, staged: Path, output: Path, kind: str, label: str, aggregate: str | None = None,
                  checkpoint_interval_ms: int | None = None) -> dict:  # fmt: skip
        shutil.rmtree(output, ignore_errors=True)
        command = [PY, "-m", "flink_jobs.window_job", "--input", str(staged), "--output", str(output),
                   *spec_of(kind).job_arguments(), "--parallelism", str(self.args.parallelism),
                   "--jvm-heap", JVM_HEAP]  # fmt: skip
        if checkpoint_interval_ms is not None:
            command += ["--checkpoint-interval-ms", str(checkpoint_interval_ms)]
        env = clean_env()
        if aggregate:
            command += ["--aggregate", aggregate]
            if aggregate.startswith("lab_job:"):  # the lab's own class, imported from its folder
                env["PYTHONPATH"] = os.pathsep.join(
                    filter(None, [str(self.args.lab_job.parent), env.get("PYTHONPATH")])
                )
        result = measure(command, log=self.log(label), env=env)
        result.update(last_json_line(result["stdout_path"]))
        return result

    def plain_sql(self, staged: Path, output: Path, label: str) -> dict:
        shutil.rmtree(output, ignore_errors=True)
        spec = spec_of("tumbling")
        command = [PY, str(PLAIN_SQL), "--input", str(staged), "--output", str(output),
                   "--window-size-ms", str(spec.size_ms), "--out-of-orderness-ms", str(spec.out_of_orderness_ms),
                   "--allowed-lateness-ms", str(spec.allowed_lateness_ms), "--parallelism", str(self.args.parallelism),
                   "--jvm-heap", JVM_HEAP]  # fmt: skip
        result = measure(command, log=self.log(label), env=clean_env())
        result.update(last_json_line(result["stdout_path"]))
        return result

    def pipeline_once(self, raw: Path, kind: str, warehouse: Path, *, fresh: bool = True) -> dict:
        if fresh:
            for path in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
                path.unlink(missing_ok=True)
            shutil.rmtree(warehouse.with_name(warehouse.name + ".segments"), ignore_errors=True)
        shutil.rmtree(warehouse.parent / ".staging" / warehouse.name, ignore_errors=True)
        spec = spec_of(kind)
        env = clean_env(DAGSTER_HOME=str(self.home), TXN_SOURCE_CSV=str(raw), TXN_WAREHOUSE=str(warehouse),
                        TXN_WINDOW_KIND=kind, TXN_FLINK_PARALLELISM=str(self.args.parallelism))  # fmt: skip
        for var, value in (("TXN_WINDOW_SIZE_MS", spec.size_ms), ("TXN_WINDOW_SLIDE_MS", spec.slide_ms),
                           ("TXN_SESSION_GAP_MS", spec.gap_ms)):  # fmt: skip
            if value:
                env[var] = str(value)
        command = [f"{VENV_BIN}/dagster", "asset", "materialize", "-m", "orchestration", "--select", "*"]
        result = measure(command, log=self.log(f"pipeline-{raw.stem}-{kind}"), env=env)
        output = Path(result["stdout_path"]).read_text(errors="replace") + Path(result["stderr_path"]).read_text(
            errors="replace"
        )
        result.update(parse_dagster_output(output))
        import duckdb

        with duckdb.connect(str(warehouse), read_only=True) as con:
            result["windows"], result["late_events"] = con.execute(
                "SELECT (SELECT count(*) FROM window_averages WHERE source_file = $f), "
                "(SELECT count(*) FROM late_events WHERE source_file = $f)", {"f": str(raw.resolve())}).fetchall()[0]  # fmt: skip
        result["warehouse_bytes"] = warehouse_bytes(warehouse)
        return result

    def pipeline(self, raw: Path, kind: str, repeat: int | None = None) -> dict:
        repeat = repeat or self.args.repeat
        warehouse = self.work / f"pipeline_{raw.stem}_{kind}.duckdb"
        runs = [self.pipeline_once(raw, kind, warehouse) for _ in range(repeat)]
        return summarize_runs(runs)

    # --- sections -----------------------------------------------------------------------------

    def attempt(self, label: str, run, *a, **kw):
        """run(*a, **kw), or None when it fails: the failure is reported and the benchmark goes on."""
        try:
            return run(*a, **kw)
        except RECOVERABLE as error:
            message = f"{label}: {type(error).__name__}: {error}"
            print(f"\n!!! {message[:4000]}\n", file=sys.stderr, flush=True)
            self.errors.append(message[:4000])
            return None

    def custom_aggregates(self) -> list[str]:
        """Your own AggregateFunction (issue 10): the repository's median and, when the lab's job is
        there, the lab's AverageAggregate itself."""
        if not self.args.custom:
            return []
        found = ["flink_jobs.aggregates.median:MedianAmount"]
        if self.args.lab_job.is_file() and self.args.lab_job.stem == "lab_job":
            found.append("lab_job:AverageAggregate")
        return found

    def stages_for(self, raw: Path, tag: str, kinds: list[str], res: dict, *, load_and_reconcile: bool = True) -> dict:
        """Into `res`: ingest, stage, per kind the Flink job (+ load + reconciliation), the plain SQL job."""
        res.update(flink={}, load={}, reconcile={})
        db = self.work / f"stages_{tag}.duckdb"
        db.unlink(missing_ok=True)
        res["ingest"] = self.stage("ingest", f"ingest-{tag}", raw=raw, db=db)
        report("ingest (validate + insert)", res["ingest"], res["ingest"]["transactions"])
        staged = self.work / f"staged_{tag}.csv"
        res["stage"] = self.stage("stage", f"stage-{tag}", raw=raw, db=db, staged=staged)
        rows = res["stage"]["staged_rows"]
        report("stage the Flink input", res["stage"], rows)

        def one_kind(kind: str) -> None:
            out = self.work / f"out_{tag}_{kind}"
            res["flink"][kind] = r = self.flink_job(staged, out, kind, f"flink-{tag}-{kind}")
            report(f"Flink job, {kind}", r, rows, f"net {r['flink_net_runtime_ms'] / 1000:.2f} s, {r['windows']:,} windows, "
                   f"{r['late_events']:,} late")  # fmt: skip
            if load_and_reconcile:
                res["load"][kind] = r = self.stage("load", f"load-{tag}-{kind}", raw=raw, db=db, output=out, kind=kind)
                report(f"load output, {kind}", r, rows)
                res["reconcile"][kind] = r = self.stage(
                    "reconcile", f"reconcile-{tag}-{kind}", raw=raw, db=db, kind=kind
                )
                report(
                    f"reconciliation, {kind}",
                    r,
                    rows,
                    f"compare {r['reconcile_s']:.2f} s + checks {r['checks_s']:.2f} s",
                )

        def plain() -> None:
            # The ratio's denominator gets as many runs as the full pipeline (its median run is kept).
            runs = [
                self.plain_sql(staged, self.work / f"plain_{tag}", f"plain-{tag}-{i}") for i in range(self.args.repeat)
            ]
            res["plain"] = r = summarize_runs(runs)
            report(
                "plain Flink SQL job",
                r,
                rows,
                f"net {r['flink_net_runtime_ms'] / 1000:.2f} s, {r['windows']:,} windows",
            )
            if "tumbling" in res["flink"]:
                res["sanity"] = compare_plain(self.work / f"plain_{tag}", self.work / f"out_{tag}_tumbling" / "windows")
                print(f"  sanity: {sanity_text(res['sanity'])}", flush=True)

        def custom(kind: str, aggregate: str) -> None:
            name = f"{kind} + {aggregate.rpartition(':')[2]}"
            out = self.work / f"out_{tag}_custom"
            res["flink"][name] = r = self.flink_job(staged, out, kind, f"flink-{tag}-{kind}-{aggregate}", aggregate)
            report(
                f"Flink job, {name}", r, rows, f"net {r['flink_net_runtime_ms'] / 1000:.2f} s, {r['windows']:,} windows"
            )
            shutil.rmtree(out, ignore_errors=True)

        def checkpointed(kind: str) -> None:
            # issue 27: the same job checkpointing every CHECKPOINT_INTERVAL_MS, as on a cluster
            name = f"{kind}, checkpointed"
            out = self.work / f"out_{tag}_checkpointed"
            res["flink"][name] = r = self.flink_job(staged, out, kind, f"flink-{tag}-{kind}-checkpointed",
                                                    checkpoint_interval_ms=CHECKPOINT_INTERVAL_MS)  # fmt: skip
            report(f"Flink job, {name}", r, rows, f"net {r['flink_net_runtime_ms'] / 1000:.2f} s")
            shutil.rmtree(out, ignore_errors=True)

        try:
            for kind in kinds:
                self.attempt(f"{tag}: Flink job / load / reconciliation, {kind}", one_kind, kind)
            if "tumbling" in kinds and self.args.checkpoints:
                self.attempt(f"{tag}: Flink job, tumbling, checkpointed", checkpointed, "tumbling")
            for kind in [k for k in CUSTOM_KINDS if k in kinds]:
                for aggregate in self.custom_aggregates():
                    self.attempt(f"{tag}: Flink job, {kind} + custom aggregate {aggregate}", custom, kind, aggregate)
            if self.args.plain:
                self.attempt(f"{tag}: plain Flink SQL job", plain)
        finally:
            for kind in kinds:  # the jobs' output is no longer needed
                shutil.rmtree(self.work / f"out_{tag}_{kind}", ignore_errors=True)
            shutil.rmtree(self.work / f"plain_{tag}", ignore_errors=True)
            db.unlink(missing_ok=True)
            staged.unlink(missing_ok=True)
        return res

    def size(self, rows: int, res: dict) -> dict:
        """Fills `res` as it goes (a failure keeps what was measured)."""
        args = self.args
        print(f"\n=== {rows:,} rows, {args.keys} keys ===", flush=True)
        raw = self.dataset(rows, args.keys)
        res.update(rows=rows, keys=args.keys, pipeline={})
        for kind in args.kinds if args.pipeline else ():
            r = self.attempt(f"{rows:,} rows: full pipeline, {kind}", self.pipeline, raw, kind)
            if r:
                res["pipeline"][kind] = r
                report(
                    f"full pipeline, {kind}",
                    r,
                    rows,
                    f"{r['windows']:,} windows; runs " + " / ".join(f"{s:.1f}" for s in r["all_seconds"]),
                )
        if args.stages:
            self.attempt(f"{rows:,} rows: stages", self.stages_for, raw, f"{rows}_k{args.keys}", list(args.kinds), res)
        if args.duckdb:
            r = self.attempt(f"{rows:,} rows: DuckDB", self.stage, "duckdb", f"duckdb-{rows}", raw=raw)
            if r:
                res["duckdb"] = r
                print(f"  DuckDB query from the raw CSV      {r['best_s']:8.3f} s (best of 3; first {r['first_s']:.3f} s), "
                      f"{r['windows']:,} windows", flush=True)  # fmt: skip
        return res

    def cardinality(self, main: dict[int, dict], out: list[dict]) -> list[dict]:
        args, rows = self.args, self.args.cardinality_rows
        for keys in args.cardinalities:
            keys = keys if keys == "row" else int(keys)
            print(
                f"\n=== cardinality: {rows:,} rows, {'one key per row' if keys == 'row' else f'{keys} keys'}, tumbling ===",
                flush=True,
            )
            reuse = main.get(rows) if keys == args.keys else None
            if (
                reuse
                and "tumbling" in reuse.get("pipeline", {})
                and "plain" in reuse
                and "tumbling" in reuse.get("flink", {})
            ):
                print("  (the same file as the main runs: their figures are reused)", flush=True)
                out.append({"keys": keys, "rows": rows, "pipeline": reuse["pipeline"]["tumbling"], "plain": reuse["plain"],
                            "flink": reuse["flink"]["tumbling"], "sanity": reuse.get("sanity"), "reused": True})  # fmt: skip
                continue
            raw = self.dataset(rows, keys)
            entry: dict = {"keys": keys, "rows": rows}
            out.append(entry)
            if args.pipeline:
                r = self.attempt(f"cardinality {keys}: full pipeline", self.pipeline, raw, "tumbling")
                if r:
                    entry["pipeline"] = r
                    report("full pipeline, tumbling", r, rows, f"{r['windows']:,} windows")
            staged: dict = {}
            self.attempt(f"cardinality {keys}: stages", self.stages_for, raw, f"{rows}_card_{keys}", ["tumbling"], staged,
                         load_and_reconcile=False)  # fmt: skip
            entry.update(
                flink=staged.get("flink", {}).get("tumbling"), plain=staged.get("plain"), sanity=staged.get("sanity")
            )
        return out

    def lab(self, out: list[dict]) -> list[dict]:
        args = self.args
        print(f"\n=== the lab's original job ({args.lab_job}) ===", flush=True)
        for rows in args.lab_rows:
            r = lab_job(self.dataset(rows, args.keys), self.work, args.lab_job, self.log(f"lab-{rows}"))
            r["rows"] = rows
            report(f"lab job ({r['windows']:,} windows printed)", r, rows)
            out.append(r)
        return out

    def history(self, res: dict) -> dict:
        args = self.args
        print(f"\n=== history: the 12k sample on an empty warehouse vs {args.history_rows * (args.history_copies + 1):,} "
              "rows of history ===", flush=True)  # fmt: skip
        res.update(history_rows=args.history_rows, copies=args.history_copies)
        raw = self.dataset(args.history_rows, args.keys)
        pristine = self.work / "history_pristine.duckdb"
        res["build_pipeline"] = r = self.pipeline_once(raw, "tumbling", pristine)
        report("build: replay the history file", r, args.history_rows)
        res["build_copy"] = r = self.stage("history_copy", "history-copy", db=pristine, copies=args.history_copies)
        print(f"  build: copy {args.history_copies}x + publish   {r['seconds']:8.2f} s   tables: "
              + ", ".join(f"{t} {n:,}" for t, n in r["tables"].items()), flush=True)  # fmt: skip
        res["warehouse_bytes"] = warehouse_bytes(pristine)
        res["catalog_bytes"] = pristine.stat().st_size
        res["tables"] = r["tables"]
        print(f"  warehouse with history: {_bytes(res['warehouse_bytes'])}", flush=True)
        empty, loaded = [], []
        empty_wh, history_wh = self.work / "sample_empty.duckdb", self.work / "sample_history.duckdb"
        for _ in range(args.repeat):  # alternate, so that both see the same noise
            empty.append(self.pipeline_once(SAMPLE, "tumbling", empty_wh))
            print(f"  12k sample, empty warehouse          {empty[-1]['seconds']:8.2f} s", flush=True)
            # the copy lists the pristine warehouse's segments (immutable, by absolute path); the run
            # adds its own beside the copy
            shutil.rmtree(history_wh.with_name(history_wh.name + ".segments"), ignore_errors=True)
            shutil.copyfile(pristine, history_wh)
            history_wh.with_name(history_wh.name + ".wal").unlink(missing_ok=True)
            loaded.append(self.pipeline_once(SAMPLE, "tumbling", history_wh, fresh=False))
            print(f"  12k sample, warehouse with history   {loaded[-1]['seconds']:8.2f} s", flush=True)
        res["empty"], res["history"] = summarize_runs(empty), summarize_runs(loaded)
        res["ratio"] = res["history"]["seconds"] / res["empty"]["seconds"]
        res["warehouse_bytes_after"] = warehouse_bytes(history_wh)
        res["catalog_bytes_after"] = history_wh.stat().st_size
        for path in (pristine, history_wh, empty_wh):
            path.unlink(missing_ok=True)
            shutil.rmtree(path.with_name(path.name + ".segments"), ignore_errors=True)
        return res


def warehouse_bytes(path: Path) -> int:
    """The warehouse's catalog file plus the segments it lists (wherever they are)."""
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        listed = [p for (p,) in con.execute("SELECT path FROM segments").fetchall()]
    return path.stat().st_size + sum(Path(p).stat().st_size for p in listed)


def summarize_runs(runs: list[dict]) -> dict:
    """The median run (by wall time), with every run's wall, the peak memory over all runs and
    the median of each Dagster step's duration."""
    ordered = sorted(runs, key=lambda run: run["seconds"])
    median = dict(ordered[(len(ordered) - 1) // 2])  # the median run's details (even count: the lower middle one)
    median["seconds"] = _median([run["seconds"] for run in runs])
    median["all_seconds"] = [run["seconds"] for run in runs]
    for key in ("java_mib", "python_mib", "other_mib", "total_mib"):
        median[f"max_{key}"] = max(run[key] for run in runs)
    steps: dict[str, list[float]] = {}
    for run in runs:
        for step, seconds in run.get("steps", {}).items():
            steps.setdefault(step, []).append(seconds)
    median["steps"] = {step: _median(values) for step, values in steps.items()}
    median["load_avg"] = sum(run["load_avg"] for run in runs) / len(runs)
    return median


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


_STEP = re.compile(r'Finished execution of step "([^"]+)" in ([0-9.]+ms|[0-9.]+s|\d+m\d+s|\d+h\d+m)\.')
_FLINK = re.compile(
    r"Flink job finished in ([0-9.]+) s \(net runtime ([0-9.]+) s, job ([0-9a-f]+)\): ([\d,]+) windows, ([\d,]+) late events"
)
_LOADED = re.compile(r"replay_event_time_windows - Loaded [\d,]+ windows and [\d,]+ late events \(([0-9.]+) s\)")


def parse_duration(text: str) -> float:
    """Seconds from dagster's format_duration: 0.83ms, 533ms, 2.1s, 4m52s, 1h4m."""
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    hours = re.fullmatch(r"(\d+)h(\d+)m", text)
    if hours:
        return int(hours[1]) * 3600 + int(hours[2]) * 60
    minutes = re.fullmatch(r"(\d+)m(\d+)s", text)
    if minutes:
        return int(minutes[1]) * 60 + int(minutes[2])
    return float(text[:-1])


def parse_dagster_output(text: str) -> dict:
    """Step durations (STEP_SUCCESS lines), the Flink job's figures and the replay step's time to
    its output being loaded (before the checks), from `dagster asset materialize` output."""
    steps: dict[str, float] = {}
    flink: dict = {}
    loaded = None
    for line in text.splitlines():
        match = _STEP.search(line)
        if match:
            steps[match[1]] = steps.get(match[1], 0.0) + parse_duration(match[2])
            continue
        match = _FLINK.search(line)
        if match:  # flink_jobs.window_job.finished_line
            flink = {
                "wall_seconds": float(match[1]),
                "flink_net_runtime_ms": round(float(match[2]) * 1000),
                "flink_job_id": match[3],
                "windows": int(match[4].replace(",", "")),
                "late_events": int(match[5].replace(",", "")),
            }
            continue
        match = _LOADED.search(line)
        if match:
            loaded = float(match[1])
    return {"steps": steps, "flink_in_run": flink, "replay_loaded_s": loaded}


def compare_plain(plain_dir: Path, job_windows: Path) -> dict:
    """The plain SQL job's windows against the pipeline's tumbling job's (same staged file)."""
    import duckdb

    plain_files = [str(p) for p in sorted(plain_dir.rglob("*")) if p.is_file() and not p.name.startswith((".", "_"))]
    job_files = [str(p) for p in sorted(job_windows.rglob("*.csv")) if not p.name.startswith(".")]
    if not plain_files or not job_files:
        return {
            "plain_windows": 0,
            "job_windows": 0,
            "matched": 0,
            "counts_equal": 0,
            "equal": False,
            "max_abs_avg_diff": None,
        }

    def reader(files, columns):
        cols = ", ".join(f"'{k}': '{v}'" for k, v in columns.items())
        return (
            f"read_csv({files!r}, header = false, auto_detect = false, delim = ',', quote = '\"', columns = {{{cols}}})"
        )

    plain = reader(plain_files, {"k": "VARCHAR", "s": "BIGINT", "e": "BIGINT", "avg": "DOUBLE", "n": "BIGINT"})
    job = reader(job_files, {"k": "VARCHAR", "s": "BIGINT", "e": "BIGINT", "n": "BIGINT", "total": "DECIMAL(38,4)",
                             "lo": "DECIMAL(18,4)", "hi": "DECIMAL(18,4)"})  # fmt: skip
    with duckdb.connect() as con:
        row = con.execute(f"""
WITH p AS (SELECT * FROM {plain}), j AS (SELECT * FROM {job})
SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM j), count(*), count(*) FILTER (WHERE p.n = j.n),
       max(abs(p.avg - j.total::DOUBLE / j.n)), (SELECT sum(n) FROM p), (SELECT sum(n) FROM j)
FROM p JOIN j USING (k, s, e)""").fetchall()[0]  # fmt: skip
    names = (
        "plain_windows",
        "job_windows",
        "matched",
        "counts_equal",
        "max_abs_avg_diff",
        "plain_counted",
        "job_counted",
    )
    res = dict(zip(names, row, strict=True))
    res["equal"] = res["plain_windows"] == res["job_windows"] == res["matched"] == res["counts_equal"]
    return res


def sanity_text(s: dict | None) -> str:
    if not s:
        return "not compared"
    verdict = "EQUAL" if s["equal"] else "DIFFERENT"
    diff = f"{s['max_abs_avg_diff']:.3g}" if s.get("max_abs_avg_diff") is not None else "n/a"
    return (f"plain Flink SQL {s['plain_windows']:,} windows vs the pipeline's tumbling job {s['job_windows']:,}: "
            f"{s['matched']:,} matched on (key, start, end), {s['counts_equal']:,} with equal counts -> {verdict}; "
            f"max |AVG - exact sum/count| = {diff}")  # fmt: skip


def lab_job(raw: Path, work: Path, lab_path: Path, log: Path) -> dict:
    """The lab's original job, unmodified, from a scratch folder: ./run/ as cwd, ../data/data.csv."""
    scratch = work / "lab"
    (scratch / "data").mkdir(parents=True, exist_ok=True)
    (scratch / "run").mkdir(exist_ok=True)
    # The lab parses '%Y-%m-%d %H:%M:%S': drop the milliseconds the generator writes.
    with open(raw, newline="") as src, open(scratch / "data" / "data.csv", "w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        writer.writerows([key, stamp[:19], amount] for key, stamp, amount in reader)
    env = clean_env(PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    env.pop("PYTHONPATH", None)
    result = measure(["python", str(lab_path)], cwd=scratch / "run", env=env, log=log)
    with open(result["stdout_path"], errors="replace") as handle:
        result["windows"] = sum(1 for line in handle if line.startswith("Tumbling Window Avg"))
    return result


def report(label: str, r: dict, rows: int, note: str = "") -> None:
    print(f"  {label:<34} {r['seconds']:8.2f} s  {rows / r['seconds']:>11,.0f} rows/s  java {r['java_mib']:6.0f} MiB  "
          f"python {r['python_mib']:5.0f} MiB  all {r['total_mib']:6.0f} MiB  load {r['load_avg']:.1f}"
          + (f"  {note}" if note else ""), flush=True)  # fmt: skip


# --------------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------------


def describe_machine() -> dict:
    info: dict = {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        info["java"] = (java.stderr or java.stdout).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        info["java"] = "unknown"
    from importlib.metadata import PackageNotFoundError, version

    for package in ("apache-flink", "duckdb", "dagster"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "?"
    return info


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


def _s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def _bytes(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 1e6:.1f} MB"


def _mem(r: dict, prefix: str = "") -> str:
    return f"{r[prefix + 'java_mib']:,.0f} | {r[prefix + 'python_mib']:,.0f} | {r[prefix + 'total_mib']:,.0f}"


def _rate(rows: int, seconds: float | None) -> str:
    return f"{rows / seconds:,.0f}" if seconds else "–"


def _steps_text(steps: dict[str, float]) -> str:
    short = {"ingest_transactions": "ingest", "replay_event_time_windows": "replay", "anomaly_thresholds": "thresholds"}
    parts, other = [], 0.0
    for step, seconds in steps.items():
        if step.startswith("freshness_check"):
            other += seconds
        else:
            parts.append(f"{short.get(step, step)} {seconds:.1f}")
    if other:
        parts.append(f"freshness checks {other:.1f}")
    return " / ".join(parts)


def _error_cause(error: str) -> str:
    """The last line of the failure that names an exception (the cause), if any."""
    causes = [
        line.strip()
        for line in error.splitlines()
        if re.match(r"\s*[A-Za-z_.]*[A-Za-z](Error|Exception|Failure):", line)
    ]
    return f"— cause: `{causes[-1][:300]}`" if causes else ""


def marginal(a_rows: int, a_s: float, b_rows: int, b_s: float) -> tuple[float | None, float | None]:
    """(rows/s per additional row, fixed seconds) from two sizes; None when t_b <= t_a (noise)."""
    if b_rows == a_rows or b_s <= a_s:
        return None, None
    per_row = (b_s - a_s) / (b_rows - a_rows)
    return 1 / per_row, a_s - per_row * a_rows


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else "**met**" if ok else "**missed**"


def throughput_pair(res: list[dict]) -> tuple[dict, dict] | None:
    """The two sizes the start-up-excluded throughput is taken from: 100k and 1M when measured,
    else the smallest and the largest up to 1M (else the two smallest)."""
    by_rows = {r["rows"]: r for r in res if r.get("flink")}
    if 100_000 in by_rows and 1_000_000 in by_rows:
        return by_rows[100_000], by_rows[1_000_000]
    sizes = sorted(by_rows)
    if len(sizes) < 2:
        return None
    upto = [s for s in sizes if s <= 1_000_000]
    pair = (upto[0], upto[-1]) if len(upto) >= 2 else (sizes[0], sizes[1])
    return by_rows[pair[0]], by_rows[pair[1]]


def markdown(results: dict, args) -> str:
    m = results["machine"]
    sizes = results["sizes"]
    lines = [
        "# Benchmark results",
        "",
        f"`{' '.join(['bench/run.py', *results['argv']])}`, started {results['started']}, took "
        f"{results['elapsed_s'] / 60:.1f} min.",
        "",
        f"Machine: {m.get('cpu', '?')}, {m['cores']} cores, {m.get('ram_gib', '?')} GiB RAM; {m['platform']}; "
        f"Python {m['python']}, {m['java']}, Flink (PyFlink) {m['apache-flink']}, DuckDB {m['duckdb']}, "
        f"Dagster {m['dagster']}. **Load average** (1/5/15 min) at the start "
        f"{' / '.join(f'{x:.2f}' for x in results['load_start'])}, at the end "
        f"{' / '.join(f'{x:.2f}' for x in results['load_end'])}"
        + (
            # the benchmark itself keeps every core busy: only a load above that means other work
            " — **the machine was shared and busy: the times are inflated and noisy**"
            if max(results["load_start"][0], results["load_end"][0]) > m["cores"] + 1
            else ""
        )
        + ".",
        "",
        *(
            [
                f"**Not the default set** (sizes {', '.join(f'{r:,}' for r in args.rows)}, --repeat {args.repeat}): a smoke "
                "test; the targets stated 'at 1M' are evaluated at the sizes measured, as each line says.",
                "",
            ]
            if 1_000_000 not in args.rows or args.repeat < 3
            else []
        ),
        f"Settings: synthetic data, seed {args.seed}, late fraction {args.late_fraction}, {args.keys} keys unless "
        f"stated; Flink parallelism {args.parallelism}, JVM heap {JVM_HEAP}, DuckDB memory limit {DUCKDB_MEMORY_LIMIT}; "
        "windows: tumbling 5 s, sliding 10 s every 5 s, session gap 3 s; out-of-orderness 1 s, allowed lateness 0. "
        f"Full pipeline = median of {args.repeat} run(s), each on an empty warehouse; the plain Flink SQL job too "
        "(every other stage: one run).",
        "",
        "Memory: JVM / Python = the largest VmHWM of one process of that kind in the measured process tree; "
        "'all' = the largest sum of VmRSS over the whole tree at one moment (50 ms polling), MiB. For the full "
        "pipeline the peak over its runs. Every wall time includes its interpreter/JVM start-up (own process). "
        "'load' = the 1-minute load average around the measurement.",
    ]

    # 1. full pipeline
    if any(res.get("pipeline") for res in sizes):
        lines += ["", "## 1. Full pipeline (every asset and check)", "",
              "| rows | kind | windows | late | median wall s | runs s | rows/s | JVM MiB | Python MiB | all MiB | Dagster steps s (median) | Flink job in the run: wall / net s | load |",
              "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|"]  # fmt: skip
    for res in sizes:
        for kind, r in res.get("pipeline", {}).items():
            f = r.get("flink_in_run") or {}
            flink = f"{f.get('wall_seconds', 0):.1f} / {f.get('flink_net_runtime_ms', 0) / 1000:.1f}" if f else "–"
            lines.append(f"| {res['rows']:,} | {kind} | {r['windows']:,} | {r['late_events']:,} | {_s(r['seconds'])} | "
                         f"{' / '.join(f'{x:.1f}' for x in r['all_seconds'])} | {_rate(res['rows'], r['seconds'])} | "
                         f"{_mem(r, 'max_')} | {_steps_text(r['steps'])} | {flink} | {r['load_avg']:.1f} |")  # fmt: skip

    # 2. stages
    if any(res.get("ingest") for res in sizes):
        lines += ["", "## 2. Stages alone", "",
              "| rows | stage | wall s | work itself s | rows/s (wall) | JVM MiB | Python MiB | all MiB | notes | load |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"]  # fmt: skip
    for res in sizes:
        rows = res["rows"]

        def row(label: str, r: dict, work: float | None, note: str = "", rows: int = rows) -> None:
            lines.append(f"| {rows:,} | {label} | {_s(r['seconds'])} | {_s(work)} | {_rate(rows, r['seconds'])} | "
                         f"{_mem(r)} | {note} | {r['load_avg']:.1f} |")  # fmt: skip

        if "ingest" in res:
            row("ingest (validate + insert)", res["ingest"], res["ingest"]["work_s"])
        if "stage" in res:
            row("stage the Flink input", res["stage"], res["stage"]["work_s"])
        for kind, r in res.get("flink", {}).items():
            row(f"Flink job, {kind}", r, r["flink_net_runtime_ms"] / 1000,
                f"work = Flink net runtime; job client wall {r['wall_seconds']:.1f} s; {r['windows']:,} windows, {r['late_events']:,} late")  # fmt: skip
            if kind in res.get("load", {}):
                row(f"load output, {kind}", res["load"][kind], res["load"][kind]["work_s"])
            if kind in res.get("reconcile", {}):
                rc = res["reconcile"][kind]
                row(
                    f"reconciliation, {kind}",
                    rc,
                    rc["reconcile_s"],
                    f"+ conservation and shape checks {rc['checks_s']:.2f} s",
                )
        if "plain" in res:
            r = res["plain"]
            row(
                "plain Flink SQL job (baseline)",
                r,
                r["flink_net_runtime_ms"] / 1000,
                f"work = Flink net runtime; {r['windows']:,} windows; median of {len(r['all_seconds'])} run(s): "
                + " / ".join(f"{x:.1f}" for x in r["all_seconds"])
                + " s",
            )

    pair = throughput_pair(sizes)
    targets: list[tuple[str, str, bool | None]] = []
    lines_extra: list[str] = []  # ratios without a target, listed under the targets
    if pair:
        a, b = pair
        lines += ["", f"### Start-up-excluded throughput, from {a['rows']:,} and {b['rows']:,} rows: (rows_b - rows_a) / (t_b - t_a)", "",
                  "| job | from Flink's net runtime: rows/s | fixed s | from the process wall: rows/s | fixed s |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        jobs = [(f"Flink job, {kind}", a["flink"][kind], b["flink"][kind]) for kind in b["flink"] if kind in a["flink"]]
        if "plain" in a and "plain" in b:
            jobs.append(("plain Flink SQL job", a["plain"], b["plain"]))
        rates = {}
        for label, ra, rb in jobs:
            net, net_fixed = marginal(
                a["rows"], ra["flink_net_runtime_ms"] / 1000, b["rows"], rb["flink_net_runtime_ms"] / 1000
            )
            wall, wall_fixed = marginal(a["rows"], ra["seconds"], b["rows"], rb["seconds"])
            rates[label] = net
            lines.append(f"| {label} | {f'{net:,.0f}' if net else 'n/a (noise)'} | {_s(net_fixed)} | "
                         f"{f'{wall:,.0f}' if wall else 'n/a (noise)'} | {_s(wall_fixed)} |")  # fmt: skip
        at = (
            "at 1M"
            if b["rows"] == 1_000_000
            else f"measured between {a['rows']:,} and {b['rows']:,} rows (NOT the target's 1M)"
        )
        custom = [kind for kind in b["flink"] if " + " in kind]
        for kind in ("sliding", "session", *custom):
            net = rates.get(f"Flink job, {kind}")
            if f"Flink job, {kind}" in rates:
                targets.append((f"{kind} Flink job, start-up excluded (net runtime), {at}: >= 100,000 rows/s",
                                f"{net:,.0f} rows/s" if net else "n/a (t_b <= t_a: noise)", None if net is None else net >= 100_000))  # fmt: skip

    # 3. plain Flink SQL baseline
    if any("plain" in res for res in sizes):
        lines += ["", "## 3. Baseline: one plain Flink SQL batch job (tumbling 5 s, AVG, same lateness rule, same staged rows)", "",
                  "| rows | plain SQL wall s | plain SQL net s | Flink job wall s | Flink job net s | **Flink job / plain** (wall) | (net) | full pipeline tumbling s | **pipeline / plain** | sanity |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for res in sizes:
            if "plain" not in res:
                continue
            p, f = res["plain"], res.get("flink", {}).get("tumbling")
            pipe = res.get("pipeline", {}).get("tumbling")
            pn = p["flink_net_runtime_ms"] / 1000
            cells = [f"{res['rows']:,}", _s(p["seconds"]), _s(pn)]
            if f:
                fn = f["flink_net_runtime_ms"] / 1000
                cells += [_s(f["seconds"]), _s(fn), f"**{f['seconds'] / p['seconds']:.2f}×**", f"{fn / pn:.2f}×"]
            else:
                cells += ["–"] * 4
            cells += [_s(pipe["seconds"]), f"**{pipe['seconds'] / p['seconds']:.2f}×**"] if pipe else ["–", "–"]
            cells.append(sanity_text(res.get("sanity")))
            lines.append("| " + " | ".join(cells) + " |")
        top = max(
            (res for res in sizes if "plain" in res and "tumbling" in res.get("flink", {})),
            key=lambda r: r["rows"],
            default=None,
        )
        if top:
            p, f = top["plain"], top["flink"]["tumbling"]
            at = "at 1M" if top["rows"] == 1_000_000 else f"at {top['rows']:,} rows (NOT the target's 1M)"
            wall_ratio = f["seconds"] / p["seconds"]
            net_ratio = (f["flink_net_runtime_ms"] / 1000) / (p["flink_net_runtime_ms"] / 1000)
            targets.append(
                (
                    f"tumbling Flink job / plain Flink SQL job, process wall, {at}: <= 1.2×",
                    f"{wall_ratio:.2f}×",
                    wall_ratio <= 1.2,
                )
            )
            targets.append(
                (
                    f"tumbling Flink job / plain Flink SQL job, Flink net runtime, {at}: <= 1.2×",
                    f"{net_ratio:.2f}×",
                    net_ratio <= 1.2,
                )
            )
            if top.get("sanity"):
                targets.append((f"sanity {at}: the plain SQL job's windows and counts equal the pipeline's tumbling job's",
                                sanity_text(top["sanity"]).split(" -> ")[1].split(";")[0], bool(top["sanity"]["equal"])))  # fmt: skip

    # issue 25: the whole pipeline against one plain Flink SQL job, and what is not the Flink job, per size
    for res in sizes:
        run, plain = res.get("pipeline", {}).get("tumbling"), res.get("plain")
        if not run or not plain:
            continue
        limit = 1.2 if res["rows"] < 10_000_000 else 1.0
        ratio = run["seconds"] / plain["seconds"]
        targets.append((f"{res['rows']:,} rows: full pipeline (every asset and check), tumbling, {args.keys} keys / "
                        f"plain Flink SQL job: <= {limit}×", f"{ratio:.2f}× ({run['seconds']:.1f} / {plain['seconds']:.1f} s)",
                        ratio <= limit))  # fmt: skip
        job_wall = (run.get("flink_in_run") or {}).get("wall_seconds")
        if job_wall:
            rest = (run["seconds"] - job_wall) / job_wall
            text = f"{rest:.2f}× ({run['seconds'] - job_wall:.1f} / {job_wall:.1f} s)"
            if res["rows"] >= 30_000_000:
                targets.append((f"{res['rows']:,} rows: everything but the Flink job (run wall - job wall) / the job's wall: "
                                "<= 0.5×", text, rest <= 0.5))  # fmt: skip
            else:
                lines_extra.append(f"* {res['rows']:,} rows: everything but the Flink job / the job's wall: {text}")

    # fixed vs per-row cost of the full pipeline
    if pair and pair[0].get("pipeline") and pair[1].get("pipeline"):
        a, b = pair
        lines += ["", f"### Full pipeline: fixed vs per-row cost (from {a['rows']:,} and {b['rows']:,} rows)", "",
                  "| kind | fixed s | per 1M rows s | marginal rows/s |", "|---|---:|---:|---:|"]  # fmt: skip
        for kind in b["pipeline"]:
            if kind in a["pipeline"]:
                rate, fixed = marginal(
                    a["rows"], a["pipeline"][kind]["seconds"], b["rows"], b["pipeline"][kind]["seconds"]
                )
                lines.append(
                    f"| {kind} | {_s(fixed)} | {_s(1e6 / rate) if rate else '–'} | {f'{rate:,.0f}' if rate else 'n/a (noise)'} |"
                )

    # 4. cardinality
    if results.get("cardinality"):
        lines += ["", f"## 4. Key cardinality ({args.cardinality_rows:,} rows, tumbling)", "",
                  "| keys | windows | full pipeline median s | runs s | all MiB | Flink job wall / net s | plain SQL wall / net s | pipeline / plain | Flink job / plain (wall) | sanity |",
                  "|---|---:|---:|---|---:|---|---|---:|---:|---|"]  # fmt: skip
        for c in results["cardinality"]:
            pipe, f, p = c.get("pipeline"), c.get("flink"), c.get("plain")
            label = "one key per row" if c["keys"] == "row" else f"{c['keys']:,}"
            cells = [
                label + (" (main runs)" if c.get("reused") else ""),
                f"{(pipe or f)['windows']:,}" if pipe or f else "–",
            ]
            cells += (
                [
                    _s(pipe["seconds"]),
                    " / ".join(f"{x:.1f}" for x in pipe["all_seconds"]),
                    f"{pipe['max_total_mib']:,.0f}",
                ]
                if pipe
                else ["–"] * 3
            )
            cells.append(f"{f['seconds']:.1f} / {f['flink_net_runtime_ms'] / 1000:.1f}" if f else "–")
            cells.append(f"{p['seconds']:.1f} / {p['flink_net_runtime_ms'] / 1000:.1f}" if p else "–")
            cells.append(f"{pipe['seconds'] / p['seconds']:.2f}×" if pipe and p else "–")
            cells.append(f"{f['seconds'] / p['seconds']:.2f}×" if f and p else "–")
            cells.append(sanity_text(c.get("sanity")))
            lines.append("| " + " | ".join(cells) + " |")

    # 5. history
    h = results.get("history")
    if h and "ratio" in h:
        total_rows = h["tables"].get("transactions", 0)
        lines += ["", f"## 5. History: the 12k-row sample on an empty warehouse vs one with {total_rows:,} transactions", "",
                  f"History built by replaying {h['history_rows']:,} rows ({args.keys} keys) through the pipeline "
                  f"({h['build_pipeline']['seconds']:.1f} s) and copying its rows {h['copies']}× under other source_file names in "
                  f"every table with source_file ({h['build_copy']['seconds']:.1f} s incl. one threshold refit and the publish): "
                  + ", ".join(f"{t} {n:,}" for t, n in h["tables"].items())
                  + f". Warehouse: **{_bytes(h['warehouse_bytes'])}** of segments and catalog, the catalog file "
                  f"{_bytes(h.get('catalog_bytes', 0))} ({_bytes(h['warehouse_bytes_after'])} and "
                  f"{_bytes(h.get('catalog_bytes_after', 0))} after a 12k run). "
                  "Each timed run starts from a fresh copy of the catalog, which lists the same immutable segments "
                  "(not timed); empty and history runs alternate.", "",
                  "| warehouse | median wall s | runs s | JVM MiB | Python MiB | all MiB | Dagster steps s (median) | load |",
                  "|---|---:|---|---:|---:|---:|---|---:|"]  # fmt: skip
        for label, r in (("empty", h["empty"]), ("with history", h["history"])):
            lines.append(f"| {label} | {_s(r['seconds'])} | {' / '.join(f'{x:.1f}' for x in r['all_seconds'])} | "
                         f"{_mem(r, 'max_')} | {_steps_text(r['steps'])} | {r['load_avg']:.1f} |")  # fmt: skip
        steps = [s for s in h["history"]["steps"] if s in h["empty"]["steps"]]
        lines += ["", "| step | empty s | with history s | ratio |", "|---|---:|---:|---:|"]
        for step in steps:
            e, w = h["empty"]["steps"][step], h["history"]["steps"][step]
            lines.append(
                f"| {step} | {_s(e)} | {_s(w)} | {w / e:.2f}× |" if e else f"| {step} | {_s(e)} | {_s(w)} | – |"
            )
        targets.append((f"12k sample on a warehouse with {total_rows:,} rows of history / on an empty warehouse: <= 1.25×",
                        f"{h['ratio']:.2f}×", h["ratio"] <= 1.25))  # fmt: skip

    # 6. 10M memory target
    for res in sizes:
        if res["rows"] >= 10_000_000:
            for kind, r in res.get("pipeline", {}).items():
                peak = r["max_total_mib"] * 1024**2
                targets.append((f"{res['rows']:,} rows, full pipeline ({kind}), peak memory of all processes at once: <= 4 GB",
                                f"{peak / GB:.2f} GB ({r['max_total_mib']:,.0f} MiB)", peak <= 4 * GB))  # fmt: skip

    # 7. DuckDB
    if any("duckdb" in res for res in sizes):
        lines += ["", "## 7. DuckDB, the single-machine floor: one query from the raw CSV (tumbling 5 s, same lateness rule, AVG)", "",
                  "| rows | best of 3 s | first s | rows/s | windows | same as the pipeline's? | full pipeline tumbling / DuckDB | plain Flink SQL / DuckDB |",
                  "|---:|---:|---:|---:|---:|---|---:|---:|"]  # fmt: skip
        for res in sizes:
            d = res.get("duckdb")
            if not d:
                continue
            pipe = res.get("pipeline", {}).get("tumbling")
            job = res.get("flink", {}).get("tumbling")
            ref = pipe or job
            same = "–" if not ref else ("yes" if ref["windows"] == d["windows"] else f"NO ({ref['windows']:,})")
            vs_pipe = f"{pipe['seconds'] / d['best_s']:,.0f}×" if pipe else "–"
            vs_plain = f"{res['plain']['seconds'] / d['best_s']:,.0f}×" if "plain" in res else "–"
            lines.append(f"| {res['rows']:,} | {_s(d['best_s'])} | {_s(d['first_s'])} | {_rate(res['rows'], d['best_s'])} | "
                         f"{d['windows']:,} | {same} | {vs_pipe} | {vs_plain} |")  # fmt: skip

    # 8. lab
    lab = results.get("lab")
    if lab:
        lines += ["", "## 8. The lab's original job (per-record Python AggregateFunction, from_collection, periodic watermarks)", "",
                  "| rows | wall s | rows/s (whole run) | JVM MiB | Python MiB | all MiB | windows printed | load |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in lab:
            lines.append(
                f"| {r['rows']:,} | {_s(r['seconds'])} | {_rate(r['rows'], r['seconds'])} | {_mem(r)} | {r['windows']:,} | {r['load_avg']:.1f} |"
            )
        if len(lab) >= 2:
            la, lb = sorted(lab, key=lambda r: r["rows"])[0], sorted(lab, key=lambda r: r["rows"])[-1]
            lab_rate, _ = marginal(la["rows"], la["seconds"], lb["rows"], lb["seconds"])
            text = (f"Lab job per additional row (from {la['rows']:,} to {lb['rows']:,} rows, start-up excluded): "
                    + (f"**{lab_rate:,.0f} rows/s**" if lab_rate else "n/a (noise)"))  # fmt: skip
            if pair and lab_rate:
                a, b = pair
                for kind in b.get("flink", {}):
                    if kind in a.get("flink", {}):
                        net, _ = marginal(a["rows"], a["flink"][kind]["flink_net_runtime_ms"] / 1000, b["rows"],
                                          b["flink"][kind]["flink_net_runtime_ms"] / 1000)  # fmt: skip
                        if net:
                            text += f"; the {kind} Flink job's (net runtime): {net:,.0f} rows/s = **{net / lab_rate:,.0f}×**"
            lines += ["", text + "."]
            same = {r["rows"]: r for r in sizes}.get(lb["rows"])
            if same and "tumbling" in same.get("flink", {}):
                lines.append(f"At {lb['rows']:,} rows wall clock: the tumbling Flink job takes {same['flink']['tumbling']['seconds']:.1f} s, "
                             f"the lab's job {lb['seconds']:.1f} s ({lb['seconds'] / same['flink']['tumbling']['seconds']:.1f}×).")  # fmt: skip

    # ratios and targets
    lines += ["", "## Ratios and targets", "", "| target | measured | verdict |", "|---|---|---|"]
    if not targets:
        lines.append("| (no target's inputs were measured in this run) | | |")
    for text, value, ok in targets:
        lines.append(f"| {text} | {value} | {_verdict(ok)} |")
    lines += ["", "Ratios (no target):", "", *lines_extra]
    for res in sizes:
        plain_job, checkpointed = (
            res.get("flink", {}).get("tumbling"),
            res.get("flink", {}).get("tumbling, checkpointed"),
        )
        if plain_job and checkpointed:
            lines.append(f"* {res['rows']:,} rows: tumbling Flink job checkpointing every {CHECKPOINT_INTERVAL_MS} ms / "
                         f"without: wall {checkpointed['seconds'] / plain_job['seconds']:.2f}×, net runtime "
                         f"{checkpointed['flink_net_runtime_ms'] / plain_job['flink_net_runtime_ms']:.2f}×")  # fmt: skip
    for res in sizes:
        if "plain" in res:
            p = res["plain"]
            for kind, r in res.get("pipeline", {}).items():
                lines.append(
                    f"* {res['rows']:,} rows: full pipeline ({kind}) / plain Flink SQL job: {r['seconds'] / p['seconds']:.2f}×"
                )
            for kind, r in res.get("flink", {}).items():
                lines.append(f"* {res['rows']:,} rows: Flink job ({kind}) / plain Flink SQL job, wall: {r['seconds'] / p['seconds']:.2f}×; "
                             f"net runtime: {r['flink_net_runtime_ms'] / p['flink_net_runtime_ms']:.2f}×")  # fmt: skip
        if "duckdb" in res and "tumbling" in res.get("pipeline", {}):
            lines.append(f"* {res['rows']:,} rows: full pipeline (tumbling) / DuckDB query from the CSV: "
                         f"{res['pipeline']['tumbling']['seconds'] / res['duckdb']['best_s']:,.0f}×")  # fmt: skip
    if not h:
        lines.append("* history case not run (`--history`): the <= 1.25× target is not measured here")
    if not any(res["rows"] >= 10_000_000 for res in sizes):
        lines.append("* 10M rows not run (`--rows 10000000`): the <= 4 GB memory target is not measured here")
    if results.get("errors"):
        lines += ["", "## Errors (measurements that failed; their figures are missing above)", ""]
        lines += [f"* `{error.splitlines()[0][:300]}` {_error_cause(error)}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="sizes (full pipeline and stages)"
    )
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--late-fraction", type=float, default=0.06)
    parser.add_argument("--parallelism", type=int, default=DEFAULT_PARALLELISM)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--repeat", type=int, default=3, help="full pipeline runs per kind and size (median)")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false", help="skip the full Dagster runs")
    parser.add_argument("--no-stages", dest="stages", action="store_false", help="skip the stages alone")
    parser.add_argument("--no-plain", dest="plain", action="store_false", help="skip the plain Flink SQL baseline")
    parser.add_argument("--no-duckdb", dest="duckdb", action="store_false", help="skip the DuckDB query")
    parser.add_argument("--cardinalities", nargs="*", default=["24", "500", "row"],
                        help="key counts for the cardinality section ('row' = one key per row); none: skip")  # fmt: skip
    parser.add_argument(
        "--cardinality-rows", type=int, default=None, help="default: 1M if in --rows, else the largest size"
    )
    parser.add_argument(
        "--history", action="store_true", help="run the history case (builds a 30M-row warehouse: minutes)"
    )
    parser.add_argument("--history-rows", type=int, default=1_000_000)
    parser.add_argument("--history-copies", type=int, default=29)
    parser.add_argument("--no-lab", dest="lab", action="store_false", help="skip the lab's job")
    parser.add_argument("--no-checkpoints", dest="checkpoints", action="store_false",
                        help="skip the tumbling job with checkpoints (the cost of checkpointing)")  # fmt: skip
    parser.add_argument("--no-custom", dest="custom", action="store_false",
                        help=f"skip the Flink job with a custom aggregate ({', '.join(CUSTOM_KINDS)})")  # fmt: skip
    parser.add_argument("--lab-job", type=Path, default=DEFAULT_LAB_JOB)
    parser.add_argument("--lab-rows", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per measured command")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temp dir, removed afterwards")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "latest.md")
    args = parser.parse_args(argv)
    for token in args.cardinalities:
        if token != "row" and not token.isdigit():
            parser.error(f"--cardinalities takes key counts or 'row', got {token!r}")
    if args.cardinality_rows is None:
        args.cardinality_rows = 1_000_000 if 1_000_000 in args.rows else max(args.rows)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    global TIMEOUT_S
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_stage"]:
        _stage(argv[1], json.loads(argv[2]))
        return 0
    if argv[:1] == ["_render"]:  # bench/run.py _render results.json: the markdown again, from the JSON
        saved = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
        text = markdown(saved, argparse.Namespace(**saved["args"]))
        Path(argv[1]).with_suffix(".md").write_text(text, encoding="utf-8")
        print(text)
        return 0
    args = parse_args(argv)
    TIMEOUT_S = args.timeout
    if args.lab and not args.lab_job.is_file():
        print(f"lab job {args.lab_job} not found: skipping it (--lab-job PATH)", file=sys.stderr)
        args.lab = False
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="txn-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict = {"argv": argv, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "load_start": list(os.getloadavg()), "machine": describe_machine(), "sizes": []}  # fmt: skip
    print(f"load average {' / '.join(f'{x:.2f}' for x in results['load_start'])}; work dir {work}", flush=True)
    bench = Bench(args, work)
    results["errors"] = bench.errors
    section = bench.attempt  # a failing section is reported (results + stderr) and the next one runs

    try:
        for rows in args.rows:
            results["sizes"].append({"rows": rows})
            section(f"{rows:,} rows", bench.size, rows, results["sizes"][-1])
        if args.cardinalities:
            results["cardinality"] = []
            section("cardinality", bench.cardinality, {r["rows"]: r for r in results["sizes"]}, results["cardinality"])
        if args.lab:
            results["lab"] = []
            section("lab job", bench.lab, results["lab"])
        if args.history:
            results["history"] = {}
            section("history", bench.history, results["history"])
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["load_end"] = list(os.getloadavg())
    results["elapsed_s"] = time.monotonic() - started
    results["generated_s"] = bench.generated
    results["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    text = markdown(results, args)
    args.results.write_text(text, encoding="utf-8")
    print("\n" + text)
    print(f"written to {args.results} and {args.results.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
