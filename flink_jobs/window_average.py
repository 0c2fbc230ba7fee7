"""Replay staged transactions through event-time tumbling windows and average the amounts.

Two engines with identical output (bit for bit), sharing one Flink SQL front end
(flink_jobs/exact_sql.py):

    staged CSV (filesystem source, read by Flink)
      -> running max of event time over file order (Flink SQL OVER window) -> per-event watermark
      -> late events (the per-event watermark rule) -> JSON-lines filesystem sink (Java side)
      -> on-time amounts decomposed exactly into (exponent bucket q, 29-bit integer limbs)
      -> GROUP BY (key, floor-correct window start, q): SUM of the limbs, COUNT (built-in, exact)

    --engine datastream (the lab's model, over the partials instead of single rows):
      -> TimestampAssigner + WatermarkStrategy.for_bounded_out_of_orderness
      -> key_by -> TumblingEventTimeWindows -> AggregateFunction with an exact (sum, count)
         accumulator: `add` folds a partial in the same way `merge` folds two accumulators
      -> window bounds attached -> JSON-lines file sink

    --engine sql (built-in aggregates only, no Python inside the job):
      -> partials to a JSON-lines sink; the client adds the few partials of each window in
         exact integer arithmetic and rounds the mean once

Why not the lab's periodic watermarks: they make lateness depend on timing (the same 100k rows gave
36785-36791 windows across five runs). Here the job runs in batch mode and applies Flink's
BoundedOutOfOrderness rule as if a watermark followed every event: before event e the watermark is
`W(e) = max(event time of the events before e in file order) - out_of_orderness - 1`, and e is late
iff its window's last millisecond plus the allowed lateness is <= W(e) (WindowOperator.isWindowLate).
The running max is computed by Flink itself, so the result is a pure function of the file and the
config at every parallelism.

Input: CSV without header, columns `source_row,key,event_time_ms,amount`, as staged by the
`window_averages` asset. Output: `<output>/windows/*.jsonl` with
{key, window_start_ms, window_end_ms, avg_amount, txn_count} and `<output>/late/*.jsonl` with
{source_row, key, event_time_ms, amount, watermark_ms}.

    python -m flink_jobs.window_average --input staged.csv --output out/ --parallelism 2 [--engine sql]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pyflink.common import Duration, Time, Types, WatermarkStrategy
from pyflink.common.serialization import Encoder
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream.connectors.file_system import BucketAssigner, FileSink, OutputFileConfig
from pyflink.datastream.functions import AggregateFunction, ProcessWindowFunction
from pyflink.datastream.window import TumblingEventTimeWindows

from flink_jobs import exact_sql
from flink_jobs.environment import create_environments
from flink_jobs.output import ENGINES, JVM_HEAP, count_output_rows
from flink_jobs.progress import wait_for_result


# Every finite double is an integer multiple of 2**-1074: sums in those units are exact integers.
_SCALE_BITS = 1074


class PartialTimestampAssigner(TimestampAssigner):
    """Event time of a partial is its window's start (every event it sums lies in that window)."""

    def extract_timestamp(self, value, record_timestamp) -> int:
        return value[1]


class PartialAverageAggregate(AggregateFunction):
    """The lab's (sum, count) average, fed with exact partials ("pre-aggregation via merge").

    Flink SQL (Java) has already summed the on-time amounts of each (key, window, exponent bucket)
    exactly (see flink_jobs.exact_sql). The accumulator is (sum in units of 2**-1074, count): `add`
    folds a partial into it exactly as `merge` folds two accumulators, so the result does not depend
    on the order in which Flink feeds or merges them. The average is the exact mean rounded once to
    a double (Python's int / int is correctly rounded). A count of zero never reaches get_result
    (Flink creates no empty windows), but it returns None rather than dividing by zero.
    """

    def create_accumulator(self):
        return 0, 0

    def add(self, value, accumulator):
        _, _, q, hi, mid, lo, count = value
        return accumulator[0] + exact_sql.scaled(q, hi, mid, lo), accumulator[1] + count

    def get_result(self, accumulator):
        total, count = accumulator
        if count == 0:
            return None, 0
        return total / (count << _SCALE_BITS), count

    def merge(self, acc_a, acc_b):
        return acc_a[0] + acc_b[0], acc_a[1] + acc_b[1]


class WithWindowBounds(ProcessWindowFunction):
    def process(self, key, context, averages):
        window = context.window()
        for avg_amount, txn_count in averages:
            yield json.dumps(
                {
                    "key": key,
                    "window_start_ms": window.start,
                    "window_end_ms": window.end,
                    "avg_amount": avg_amount,
                    "txn_count": txn_count,
                }
            )


def _sink(directory: Path) -> FileSink:
    return (
        FileSink.for_row_format(str(directory), Encoder.simple_string_encoder("UTF-8"))
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .with_output_file_config(OutputFileConfig.builder().with_part_suffix(".jsonl").build())
        .build()
    )


def run(
    input_path: Path,
    output_dir: Path,
    *,
    window_size_ms: int = 5000,
    out_of_orderness_ms: int = 1000,
    allowed_lateness_ms: int = 0,
    parallelism: int = 2,
    jobmanager: str | None = None,
    engine: str = ENGINES[0],
    progress: Callable[[str], None] | None = None,
    progress_every_s: float | None = None,
    jvm_heap: str | None = None,
) -> dict:
    """Run the job to completion with the given engine; returns figures about the run.

    `progress` (e.g. a logger) gets a line about the running job (rows read, elapsed, running
    tasks) every `progress_every_s` (default progress.REPORT_EVERY_S).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if window_size_ms <= 0:
        raise ValueError(f"window size must be > 0 ms, got {window_size_ms}")
    if out_of_orderness_ms < 0 or allowed_lateness_ms < 0:
        raise ValueError("out-of-orderness and allowed lateness must be >= 0 ms")
    if jvm_heap is not None and not JVM_HEAP.fullmatch(jvm_heap):
        raise ValueError(f"JVM heap must look like 1g or 768m, got {jvm_heap!r}")
    if progress_every_s is not None and not progress_every_s > 0:
        raise ValueError(f"progress interval must be > 0 s, got {progress_every_s}")
    input_path = Path(input_path).resolve()
    if not input_path.is_file():
        raise FileNotFoundError(f"staged input {input_path} does not exist")
    output_dir = Path(output_dir).resolve()
    for stale in ("windows", "late", "partials"):  # a rerun into the same folder must not append
        shutil.rmtree(output_dir / stale, ignore_errors=True)
    started = time.monotonic()
    env, t_env, rest_url = create_environments(parallelism, jobmanager, jvm_heap)
    exact_sql.register_views(t_env, input_path, window_size_ms, out_of_orderness_ms, allowed_lateness_ms)
    # Late events: decided and written on the Java side (no Python per row).
    t_env.execute_sql(exact_sql.json_sink_ddl("late_sink", exact_sql.LATE_COLUMNS, output_dir / "late"))
    statements = t_env.create_statement_set()
    statements.add_insert_sql(f"INSERT INTO late_sink {exact_sql.LATE_SQL}")
    figures: dict = {"engine": engine}
    if engine == "sql":
        partial_dir = output_dir / "partials"  # intermediate: removed once the windows are written
        t_env.execute_sql(exact_sql.json_sink_ddl("partial_sink", exact_sql.PARTIAL_COLUMNS, partial_dir))
        statements.add_insert_sql("INSERT INTO partial_sink SELECT * FROM partials")
        t_env.get_config().set("pipeline.name", f"window average: {input_path.name}")  # as in datastream
        result = wait_for_result(statements.execute().get_job_client(), rest_url, progress, progress_every_s)
        finished = time.monotonic()
        if progress:
            progress(f"Flink job done after {finished - started:.0f} s; combining its partial sums into windows")
        exact_sql.finish_partials(partial_dir, output_dir / "windows", window_size_ms)
        shutil.rmtree(partial_dir, ignore_errors=True)
        figures["finish_seconds"] = round(time.monotonic() - finished, 3)
    else:
        statements.attach_as_datastream()
        _window_stream(t_env, output_dir, window_size_ms, out_of_orderness_ms)
        result = wait_for_result(
            env.execute_async(f"window average: {input_path.name}"), rest_url, progress, progress_every_s
        )
    exact_sql.add_jsonl_suffix(output_dir / "late")
    figures.update(
        {
            "flink_job_id": str(result.get_job_id()),
            "flink_net_runtime_ms": result.get_net_runtime(),
            "windows": count_output_rows(output_dir / "windows"),
            "late_events": count_output_rows(output_dir / "late"),
            "parallelism": parallelism,
            "wall_seconds": round(time.monotonic() - started, 3),
        }
    )
    return figures


def _window_stream(t_env, output_dir: Path, window_size_ms: int, out_of_orderness_ms: int) -> None:
    """The lab's model over the exact per-(key, window, exponent) partials of the on-time events."""
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(out_of_orderness_ms)
    ).with_timestamp_assigner(PartialTimestampAssigner())
    windows = (
        t_env.to_data_stream(t_env.from_path("partials"))
        .assign_timestamps_and_watermarks(watermarks)
        .key_by(lambda partial: partial[0], key_type=Types.STRING())
        .window(TumblingEventTimeWindows.of(Time.milliseconds(window_size_ms)))
        .aggregate(
            PartialAverageAggregate(),
            window_function=WithWindowBounds(),
            accumulator_type=Types.PICKLED_BYTE_ARRAY(),
            output_type=Types.STRING(),
        )
        .name("window average")
    )
    windows.sink_to(_sink(output_dir / "windows")).name("windows sink")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m flink_jobs.window_average",
        description="Average transaction amounts per key in event-time tumbling windows (PyFlink).",
    )
    parser.add_argument("--input", required=True, type=Path, help="staged CSV: source_row,key,event_time_ms,amount")
    parser.add_argument("--output", required=True, type=Path, help="output folder (windows/ and late/)")
    parser.add_argument("--window-size-ms", type=int, default=5000)
    parser.add_argument("--out-of-orderness-ms", type=int, default=1000)
    parser.add_argument("--allowed-lateness-ms", type=int, default=0)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--jobmanager", default=None, help="host:port of a Flink cluster (default: local mini-cluster)")
    parser.add_argument("--progress-every-s", type=float, default=None,
                        help="seconds between progress lines (rows read, elapsed) while the job runs; default 10")  # fmt: skip
    parser.add_argument("--jvm-heap", default="1g", help="max heap of the local mini-cluster JVM (-Xmx; default 1g)")
    parser.add_argument(
        "--engine",
        choices=list(ENGINES),
        default=ENGINES[0],
        help="datastream: the lab's model (TimestampAssigner, key_by, tumbling event-time windows, Python "
        "AggregateFunction) over exact partials pre-aggregated in Flink SQL; sql: Flink SQL built-in "
        "aggregates only, the exact mean finished in the client. Both give identical output.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = dict(
        window_size_ms=args.window_size_ms,
        out_of_orderness_ms=args.out_of_orderness_ms,
        allowed_lateness_ms=args.allowed_lateness_ms,
        parallelism=args.parallelism,
        jobmanager=args.jobmanager,
        engine=args.engine,
        jvm_heap=args.jvm_heap,
        progress_every_s=args.progress_every_s,
    )
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            pipes.log.info(f"Flink job starting: {args.input} -> {args.output} {options}")
            figures = run(args.input, args.output, progress=pipes.log.info, **options)
            pipes.log.info(f"Flink job finished: {figures}")
            pipes.report_custom_message(figures)
    else:
        figures = run(args.input, args.output, progress=lambda line: print(line, file=sys.stderr, flush=True), **options)
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
