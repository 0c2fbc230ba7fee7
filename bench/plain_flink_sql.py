"""Baseline: ONE plain Flink SQL batch job computing the pipeline's tumbling windows, AVG instead of exactness.

What a Flink expert would write for "average amount per key and 5 s tumbling window, with the
pipeline's per-event lateness rule", with no checks and no exact arithmetic. It reads the staged file
the pipeline's window job reads (`source_row,event_time_ms,amount,hex(key)`, file order), takes the
watermark before each row as MAX(event_time_ms) OVER (ORDER BY source_row ROWS BETWEEN UNBOUNDED
PRECEDING AND 1 PRECEDING) - ooo - 1, drops the row iff floor-start + size - 1 + lateness <= watermark
(the first row is never late) and writes GROUP BY key, window start: AVG(amount) (DOUBLE), COUNT(*) to
a filesystem CSV sink. Late events are dropped, so its windows and counts must equal the pipeline's
(bench/run.py checks). The environment is the pipeline job's (flink_jobs.environment.create_environment:
same interpreter, JVM heap cap and gateway set-up), in batch mode with a table environment. Prints one
JSON line: flink_net_runtime_ms, windows, wall_seconds (from before the JVM starts to the end of the
job), parallelism. Its place in the benchmark: docs/benchmark.md.

    .venv/bin/python bench/plain_flink_sql.py --input staged.csv --output out/ --parallelism 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def statements(input_path: Path, output_dir: Path, size_ms: int, ooo_ms: int, lateness_ms: int) -> list[str]:
    size, ooo, lateness = (f"CAST({int(v)} AS BIGINT)" for v in (size_ms, ooo_ms, lateness_ms))
    return [
        "CREATE TEMPORARY TABLE staged (source_row BIGINT, event_time_ms BIGINT, amount DOUBLE, hex_key STRING) "
        f"WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = {_literal(input_path.as_uri())})",
        "CREATE TEMPORARY TABLE windows_sink (hex_key STRING, window_start_ms BIGINT, window_end_ms BIGINT, "
        "avg_amount DOUBLE, txn_count BIGINT) "
        f"WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = {_literal(output_dir.as_uri())})",
        f"""
INSERT INTO windows_sink
SELECT hex_key, window_start_ms, window_start_ms + {size}, AVG(amount), COUNT(*)
FROM (
  SELECT hex_key, amount,
         event_time_ms - MOD(MOD(event_time_ms, {size}) + {size}, {size}) AS window_start_ms,
         MAX(event_time_ms) OVER (ORDER BY source_row ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           - {ooo} - 1 AS watermark_ms
  FROM staged
)
WHERE watermark_ms IS NULL OR window_start_ms + {size} - 1 + {lateness} > watermark_ms
GROUP BY hex_key, window_start_ms""",
    ]


def output_rows(directory: Path) -> int:
    total = 0
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith((".", "_")):
            with open(path, "rb") as handle:
                total += sum(1 for _ in handle)
    return total


def run(input_path: Path, output_dir: Path, *, size_ms: int, ooo_ms: int, lateness_ms: int, parallelism: int,
        jvm_heap: str | None) -> dict:  # fmt: skip
    input_path, output_dir = Path(input_path).resolve(), Path(output_dir).resolve()
    if not input_path.is_file():
        raise FileNotFoundError(input_path)
    shutil.rmtree(output_dir, ignore_errors=True)
    started = time.monotonic()
    from pyflink.datastream import RuntimeExecutionMode
    from pyflink.table import StreamTableEnvironment

    from flink_jobs.environment import create_environment, finish_class_data_archive

    env, _ = create_environment(parallelism, None, jvm_heap)
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("execution.runtime-mode", "batch")
    t_env.get_config().set("pipeline.name", f"plain Flink SQL tumbling AVG: {input_path.name}")
    *ddl, insert = statements(input_path, output_dir, size_ms, ooo_ms, lateness_ms)
    for statement in ddl:
        t_env.execute_sql(statement)
    job = t_env.execute_sql(insert).get_job_client()
    result = job.get_job_execution_result().result()
    figures = {
        "flink_job_id": str(job.get_job_id()),
        "flink_net_runtime_ms": result.get_net_runtime(),
        "windows": output_rows(output_dir),
        "parallelism": parallelism,
        "wall_seconds": round(time.monotonic() - started, 3),
    }
    finish_class_data_archive()  # the same class-data sharing as the pipeline's job
    return figures


def main(argv: list[str] | None = None) -> int:
    from warehouse.windows import DEFAULT_ALLOWED_LATENESS_MS, DEFAULT_OUT_OF_ORDERNESS_MS, DEFAULT_SIZE_MS

    parser = argparse.ArgumentParser(prog="bench/plain_flink_sql.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", required=True, type=Path, help="staged lines: source_row,event_time_ms,amount,hex(key)"
    )
    parser.add_argument("--output", required=True, type=Path, help="output folder (csv part files)")
    parser.add_argument("--window-size-ms", type=int, default=DEFAULT_SIZE_MS)
    parser.add_argument("--out-of-orderness-ms", type=int, default=DEFAULT_OUT_OF_ORDERNESS_MS)
    parser.add_argument("--allowed-lateness-ms", type=int, default=DEFAULT_ALLOWED_LATENESS_MS)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--jvm-heap", default="1g", help="max heap of the mini-cluster JVM, as the pipeline's job")
    args = parser.parse_args(argv)
    figures = run(args.input, args.output, size_ms=args.window_size_ms, ooo_ms=args.out_of_orderness_ms,
                  lateness_ms=args.allowed_lateness_ms, parallelism=args.parallelism, jvm_heap=args.jvm_heap)  # fmt: skip
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
