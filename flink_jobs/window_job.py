"""Replay staged transactions through Flink's own event-time windows: tumbling, sliding or session.

Contract: the output is the final firing of every window of Flink's streaming WindowOperator when a watermark
`W(e)` precedes every event (warehouse/windows.py), for all three kinds, and a pure function of the file and the
spec whatever the parallelism. So Flink assigns, merges, judges lateness and aggregates (exact, BigDecimal); Python
only wires together Java operators from flink_jobs/java/: a per-event watermark in checkpointed state at
parallelism 1 (periodic watermarks made lateness depend on timing), a trigger that fires each window once at
cleanup, and no Python function per record, except your own AggregateFunction (`--aggregate`), called once per
batch of windows (docs/custom-aggregates.md). How and why: docs/windows.md ("How the Flink job computes it").

Input: lines `source_row,event_time_ms,amount,hex(key)` in file order, as staged by the `window_averages` asset.
Output (files ending in .csv): `<output>/windows/` with
`hex(key),window_start_ms,window_end_ms,txn_count,sum_amount,min_amount,max_amount`, `<output>/late/` with
`source_row,event_time_ms,amount,watermark_ms,hex(key)`; with aggregates also `<output>/custom/` with
`aggregate,hex(key),window_start_ms,window_end_ms,value` (warehouse/custom_aggregates.py).

    python -m flink_jobs.window_job --input staged.csv --output out/ --window-kind sliding \\
        --window-size-ms 10000 --window-slide-ms 5000 --parallelism 2
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flink_jobs.output import FAILURE_FILE, OUTPUT_SUFFIX, count_output_rows, jvm_heap_problem, write_failure
from warehouse.windows import (
    DEFAULT_ALLOWED_LATENESS_MS,
    DEFAULT_OUT_OF_ORDERNESS_MS,
    DEFAULT_SESSION_GAP_MS,
    DEFAULT_SIZE_MS,
    KINDS,
    WindowSpec,
)

DEFAULT_PARALLELISM = 2
DEFAULT_JVM_HEAP = "1g"

# Recovery (docs/cluster.md, "What a cluster recovers, and how"). Checkpoints hold the source's position in the file,
# the per-event watermark's maximum, the open windows and the sink's pending part files; a restart
# resumes from the last one. Every CHECKPOINT_INTERVAL_MS: the state is only the open windows, so a
# checkpoint is cheap, and the interval bounds both the work redone after a restart and the wait of
# a bounded job for its final checkpoint (the FileSink commits its last files on it).
CHECKPOINT_INTERVAL_MS = 2000
CHECKPOINTS = "checkpoints"  # under the job's output folder, in the run's staging folder
# A restart after a failure, RESTART_ATTEMPTS times, RESTART_DELAY_MS apart. A lost TaskManager is
# restarted by its cluster manager (flink_jobs.cluster: a few seconds) and the job waits for its slots.
# Failures of your own code (a custom aggregate that raises, a staged line that does not parse) are
# not retried: the job fails at once (flink_jobs.progress.wait_for_result, NonRecoverable exceptions).
RESTART_ATTEMPTS = 3
RESTART_DELAY_MS = 2000


def run(
    input_path: Path,
    output_dir: Path,
    spec: WindowSpec,
    *,
    parallelism: int = DEFAULT_PARALLELISM,
    jobmanager: str | None = None,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float | None = None,
    jvm_heap: str | None = None,
    aggregates: Sequence[str] = (),
    checkpoint_interval_ms: int | None = None,
    checkpoint_dir: Path | None = None,
    restore_from: str | None = None,
) -> dict:
    """Run the job to completion; returns figures about the run.

    `progress` (e.g. a logger) gets a line about the running job (rows read, elapsed, running
    tasks) every `progress_every_s` (default progress.REPORT_EVERY_S). `aggregates` are import
    paths of your own AggregateFunctions (flink_jobs/custom_aggregates.py): each window's value
    goes to `<output>/custom/`; a bad path raises ValueError before the JVM starts, a failing
    aggregate CustomAggregateError (one sentence) when the job has failed.
    """
    aggregates = tuple(aggregates)
    check_options(spec, aggregates, jvm_heap, progress_every_s)
    input_path = Path(input_path).resolve()
    if not input_path.is_file():
        raise FileNotFoundError(f"staged input {input_path} does not exist")
    output_dir = Path(output_dir).resolve()
    if checkpoint_interval_ms is None:
        checkpoint_interval_ms = default_checkpoint_interval_ms(jobmanager)
    if checkpoint_interval_ms < 0:
        raise ValueError(f"checkpoint interval must be >= 0 ms (0: no checkpoints), got {checkpoint_interval_ms}")
    checkpoint_dir = Path(checkpoint_dir).resolve() if checkpoint_dir else output_dir / CHECKPOINTS
    if restore_from is None:  # a rerun into the same folder must not append; a restore continues the output
        for stale in ("windows", "late", "custom", CHECKPOINTS):
            shutil.rmtree(output_dir / stale, ignore_errors=True)
    (output_dir / FAILURE_FILE).unlink(missing_ok=True)

    from flink_jobs.java_operators import ensure_jar  # compile before the JVM starts (cached)

    jar = ensure_jar()
    started = time.monotonic()
    total_rows = count_lines(input_path) if progress is not None else None  # one staged line per transaction

    from pyflink.common import WatermarkStrategy

    from flink_jobs.environment import finish_class_data_archive
    from flink_jobs.progress import wait_for_result

    env, rest_url = streaming_environment(parallelism, jobmanager, jvm_heap, jar,
                                          lambda: recovery_configuration(checkpoint_dir, checkpoint_interval_ms, restore_from))  # fmt: skip
    source = _text_source(input_path)
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "staged transactions").set_parallelism(1)
    wire_windows(lines, spec, aggregates, output_dir)

    job_client = env.execute_async(f"{spec.kind} windows: {input_path.name}")
    try:
        result = wait_for_result(job_client, rest_url, progress, progress_every_s, total_rows=total_rows,
                                 user_code_failure=custom_aggregate_failure if aggregates else None)  # fmt: skip
    except Exception as error:
        if aggregates:
            raise_custom_aggregate_failure(error, rest_url, str(job_client.get_job_id()))
        raise
    figures = job_figures(result, output_dir, spec, parallelism, aggregates, started)
    finish_class_data_archive()  # the first run on this JDK and Flink: keep its classes for the next
    return figures


def job_figures(result, output_dir: Path, spec: WindowSpec, parallelism: int, aggregates: tuple[str, ...],
                started: float) -> dict:  # fmt: skip
    """The figures a finished job reports (its JobExecutionResult and what it wrote under `output_dir`)."""
    figures = {
        "flink_job_id": str(result.get_job_id()),
        "flink_net_runtime_ms": result.get_net_runtime(),
        "windows": count_output_rows(output_dir / "windows"),
        "late_events": count_output_rows(output_dir / "late"),
        "parallelism": parallelism,
        "window_spec": spec.describe(),
        "wall_seconds": round(time.monotonic() - started, 3),
    }
    if aggregates:
        figures["custom_aggregates"] = list(aggregates)
        figures["custom_aggregate_rows"] = count_output_rows(output_dir / "custom")
    return figures


def check_options(
    spec: WindowSpec, aggregates: tuple[str, ...], jvm_heap: str | None, progress_every_s: float | None
) -> None:
    """Raise ValueError for a bad option, before the JVM starts (the aggregates are imported here; the
    Python worker imports them again)."""
    spec.validate()
    if aggregates:
        from flink_jobs.custom_aggregates import load_aggregates

        load_aggregates(list(aggregates))
    if jvm_heap is not None and (problem := jvm_heap_problem(jvm_heap)) is not None:
        raise ValueError(problem)
    if progress_every_s is not None and not progress_every_s > 0:
        raise ValueError(f"progress interval must be > 0 s, got {progress_every_s}")


def count_lines(path: Path, block: int = 1 << 20) -> int:
    """Lines of a file (a last line without its newline counts): the progress lines' total (90 MB in ~0.1 s)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(block):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def starting_line(input_path: Path | list[Path], output_dir: Path, spec: WindowSpec, options: dict) -> str:
    """The job's first log line, in words (a list of inputs: a stream run)."""
    if isinstance(input_path, list):
        restore = options.get("restore_from")
        input_path = (f"{len(input_path)} stream file(s) from {input_path[0]}, "  # type: ignore[assignment]
                      + (f"restoring {restore}" if restore else "from the stream's start"))  # fmt: skip
    where = f"cluster {options['jobmanager']}" if options.get("jobmanager") else "a local mini-cluster"
    heap = f", JVM heap {options['jvm_heap']}" if options.get("jvm_heap") and not options.get("jobmanager") else ""
    custom = options.get("aggregates") or ()
    return (
        f"Flink job starting on {where} (parallelism {options.get('parallelism', DEFAULT_PARALLELISM)}{heap}): "
        f"{spec.describe()}; input {input_path}, output {output_dir}"
        + (f"; custom aggregates {', '.join(custom)}" if custom else "")
    )


def finished_line(figures: dict) -> str:
    """The job's last log line, in words (the figures themselves go to the asset's metadata)."""
    text = (
        f"Flink job finished in {figures['wall_seconds']:.1f} s (net runtime {figures['flink_net_runtime_ms'] / 1000:.1f} s, "
        f"job {figures['flink_job_id']}): {figures['windows']:,} windows, {figures['late_events']:,} late events"
    )
    if "custom_aggregate_rows" in figures:
        text += f", {figures['custom_aggregate_rows']:,} custom aggregate values"
    return text


def default_checkpoint_interval_ms(jobmanager: str | None) -> int:
    """Checkpoint interval when none is given: CHECKPOINT_INTERVAL_MS on a cluster, none on the local
    mini-cluster. There the JobManager and TaskManager live in the client's JVM, so a checkpoint
    cannot outlive what it would recover from, and checkpointing measured more than 5 % at 1M rows:
    CPU seconds +7 % (median of 4 alternating runs), and a bounded job waits half an interval on
    average for the final checkpoint that commits its last files (docs/cluster.md: What a cluster recovers)."""
    return CHECKPOINT_INTERVAL_MS if jobmanager else 0


def streaming_environment(parallelism: int, jobmanager: str | None, jvm_heap: str | None, jar: Path,
                          recovery: Callable[[], object]):  # fmt: skip
    """(environment, REST URL or None) in streaming mode, with the operators' jar and `recovery()`'s
    Configuration. A callable: making a Configuration starts PyFlink's gateway, which must come after
    create_environment has chosen a local or a remote one."""
    from pyflink.datastream import RuntimeExecutionMode

    from flink_jobs.environment import create_environment

    env, rest_url = create_environment(parallelism, jobmanager, jvm_heap)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)  # watermarks and the WindowOperator need it
    env.add_jars(jar.as_uri())
    # The operators never keep or change a record after passing it on (AttachWatermark changes it
    # before): reusing objects between chained operators saves a copy per record (1M rows: 10.3 s
    # -> 7.7 s of job runtime here).
    env.get_config().enable_object_reuse()
    env.configure(recovery())
    return env, rest_url


def wire_windows(lines, spec: WindowSpec, aggregates: tuple[str, ...], output_dir: Path, run_token: str = "") -> None:
    """Staged lines -> parse -> per-event watermark -> Flink's WindowOperator -> the sinks under `output_dir`.

    The stateful operators have fixed uids, so a savepoint of one run restores into the next (stream
    mode: flink_jobs/stream_job.py); the sinks' uids end with `run_token`, so a run never resumes
    another run's part files (their state is dropped on restore: each run commits its own output)."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    ops = jvm.txn.replay.ReplayOperators
    duration = jvm.java.time.Duration.ofMillis
    parsed = _java(lines).map(ops.ParseStagedLine()).name("parse").setParallelism(1)
    events = (
        parsed.transform("per-event watermark", parsed.getType(),
                   ops.PerEventWatermarkOperator(spec.out_of_orderness_ms, *_cleanup_times(spec)))
        .uid("per-event-watermark").setParallelism(1)
    )  # fmt: skip
    late_tag = ops.lateTag()
    windows = (
        events.keyBy(ops.KeyOf())
        .window(_assigner(jvm, spec))
        .trigger(ops.FireAtCleanup(spec.allowed_lateness_ms))
        .allowedLateness(duration(spec.allowed_lateness_ms))
        .sideOutputLateData(late_tag)
        .aggregate(ops.ExactTotals(bool(aggregates)), ops.WindowLine())
        .name(f"{spec.kind} windows")
        .uid(f"{spec.kind}-windows")
    )
    if aggregates:
        _custom_aggregates(jvm, windows, aggregates, output_dir, run_token)
    else:
        windows.sinkTo(_line_sink(output_dir / "windows")).name("windows sink").uid(f"windows-sink{run_token}")
    windows.getSideOutput(late_tag).map(ops.LateLine()).name("late events").sinkTo(
        _line_sink(output_dir / "late")
    ).name("late sink").uid(f"late-sink{run_token}")


def recovery_configuration(checkpoint_dir: Path, interval_ms: int, restore_from: str | None):
    """Checkpointing (exactly once, into `checkpoint_dir`), the restart strategy, and the savepoint
    or retained checkpoint to start from."""
    from pyflink.common import Configuration

    conf = Configuration()
    if interval_ms > 0:
        conf.set_string("execution.checkpointing.interval", f"{interval_ms} ms")
        conf.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
        conf.set_string("execution.checkpointing.storage", "filesystem")
        conf.set_string("execution.checkpointing.dir", checkpoint_dir.as_uri())
        conf.set_string("execution.checkpointing.min-pause", f"{interval_ms // 4} ms")
        conf.set_string("restart-strategy.type", "fixed-delay")
        conf.set_string("restart-strategy.fixed-delay.attempts", str(RESTART_ATTEMPTS))
        conf.set_string("restart-strategy.fixed-delay.delay", f"{RESTART_DELAY_MS} ms")
    else:
        conf.set_string("restart-strategy.type", "none")
    if restore_from:
        conf.set_string("execution.state-recovery.path", restore_from)
    return conf


def _custom_aggregates(jvm, windows, aggregates: tuple[str, ...], output_dir: Path, run_token: str) -> None:
    """Window lines with their events -> windows/ (events dropped) and, batched, through ONE Python
    call per batch into custom/ (see flink_jobs/custom_aggregates.py)."""
    from pyflink.common import Types
    from pyflink.datastream import DataStream

    from flink_jobs.custom_aggregates import BATCH_CHARS, BatchAggregator

    extra = jvm.txn.replay.CustomAggregateOperators
    windows.map(extra.WithoutEvents()).name("window lines").sinkTo(_line_sink(output_dir / "windows")).name(
        "windows sink"
    ).uid(f"windows-sink{run_token}")
    batches = windows.transform("window batches", Types.STRING().get_java_type_info(), extra.WindowBatches(BATCH_CHARS))
    answers = DataStream(batches).map(BatchAggregator(aggregates), output_type=Types.STRING()).name("custom aggregates")
    _java(answers).map(extra.ResultLines()).name("custom aggregate lines").sinkTo(
        _line_sink(output_dir / "custom")
    ).name("custom aggregates sink").uid(f"custom-sink{run_token}")


def custom_aggregate_failure(text: str) -> Exception | None:
    """The custom aggregate's failure in a Flink exception text, as its one sentence (or None)."""
    from flink_jobs.custom_aggregates import CustomAggregateError, failure_sentence

    sentence = failure_sentence(text)
    return CustomAggregateError(sentence) if sentence else None


def raise_custom_aggregate_failure(error: Exception, rest_url: str | None, job_id: str) -> None:
    """Replace Flink's Java stack trace by the custom aggregate's one sentence, when it is one."""
    from flink_jobs.custom_aggregates import CustomAggregateError, failure_sentence

    sentence = failure_sentence(str(error))
    if sentence is None and rest_url:
        from flink_jobs.progress import cluster_failure_text

        sentence = failure_sentence(cluster_failure_text(rest_url, job_id))
    if sentence:
        raise CustomAggregateError(sentence) from None


def _text_source(path: Path):
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    return FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path)).build()


def _java(stream):
    """The Java DataStream behind a PyFlink one, to apply our Java operators (flink_jobs/java) to it.
    PyFlink 2.3 has no public accessor; its attribute is read here and only here."""
    return stream._j_data_stream


def _line_sink(directory: Path):
    """Flink's FileSink (Java): in a bounded streaming job it commits its files at the end of input."""
    from pyflink.common.serialization import Encoder
    from pyflink.datastream.connectors.file_system import BucketAssigner, FileSink, OutputFileConfig

    sink = (
        FileSink.for_row_format(str(directory), Encoder.simple_string_encoder("UTF-8"))
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .with_output_file_config(OutputFileConfig.builder().with_part_suffix(OUTPUT_SUFFIX).build())
        .build()
    )
    return sink.get_java_function()


def _assigner(jvm, spec: WindowSpec):
    """Flink's own window assigner for the spec."""
    duration = jvm.java.time.Duration.ofMillis
    assigners = jvm.org.apache.flink.streaming.api.windowing.assigners
    if spec.kind == "tumbling":
        return assigners.TumblingEventTimeWindows.of(duration(spec.size_ms))
    if spec.kind == "sliding":
        return assigners.SlidingEventTimeWindows.of(duration(spec.size_ms), duration(spec.slide_ms))
    return assigners.EventTimeSessionWindows.withGap(duration(spec.gap_ms))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m flink_jobs.window_job",
        description="Count, sum, min and max of transaction amounts per key in Flink event-time windows "
        "(tumbling, sliding or session), with a watermark after every event.",
    )
    parser.add_argument("--input", type=Path, help="staged lines: source_row,event_time_ms,amount,hex(key)")
    parser.add_argument("--stream-input", type=Path, action="append", default=[], metavar="PATH",
                        help="stream mode (flink_jobs/stream_job.py): a staged file of the stream, in stream order "
                        "(repeatable); the job restores --restore-from and leaves a savepoint per file in "
                        "--savepoint-dir")  # fmt: skip
    parser.add_argument("--savepoint-dir", type=Path, default=None, help="stream mode: where the savepoints go")
    parser.add_argument("--output", required=True, type=Path, help="output folder (windows/ and late/)")
    parser.add_argument("--window-kind", choices=KINDS, default=KINDS[0])
    parser.add_argument(
        "--window-size-ms", type=int, default=0, help=f"tumbling and sliding (default {DEFAULT_SIZE_MS})"
    )
    parser.add_argument("--window-slide-ms", type=int, default=0, help="sliding only")
    parser.add_argument(
        "--session-gap-ms", type=int, default=0, help=f"session only (default {DEFAULT_SESSION_GAP_MS})"
    )
    parser.add_argument("--out-of-orderness-ms", type=int, default=DEFAULT_OUT_OF_ORDERNESS_MS)
    parser.add_argument("--allowed-lateness-ms", type=int, default=DEFAULT_ALLOWED_LATENESS_MS)
    parser.add_argument("--parallelism", type=int, default=DEFAULT_PARALLELISM)
    parser.add_argument("--jobmanager", default=None, help="host:port of a Flink cluster (default: local mini-cluster)")
    parser.add_argument("--progress-every-s", type=float, default=None,
                        help="seconds between progress lines (rows read, elapsed) while the job runs; default 10")  # fmt: skip
    parser.add_argument("--jvm-heap", default=DEFAULT_JVM_HEAP, help="max heap of the local mini-cluster JVM (-Xmx)")
    parser.add_argument("--aggregate", action="append", default=[], metavar="PATH",
                        help="your own AggregateFunction, package.module:ClassName (repeatable); one value per "
                        "window and aggregate goes to <output>/custom/")  # fmt: skip
    parser.add_argument("--checkpoint-interval-ms", type=int, default=None,
                        help=f"ms between checkpoints, 0 for none (default {CHECKPOINT_INTERVAL_MS} on a cluster, "
                        "none on the local mini-cluster)")  # fmt: skip
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help=f"checkpoint storage (default <output>/{CHECKPOINTS}; a cluster must see it)")  # fmt: skip
    parser.add_argument("--restore-from", default=None, metavar="PATH",
                        help="start from this savepoint or retained checkpoint, continuing the output in <output>")  # fmt: skip
    args = parser.parse_args(argv)
    if (args.input is None) == (not args.stream_input):
        parser.error("give either --input or one or more --stream-input")
    if args.stream_input and args.savepoint_dir is None:
        parser.error("--stream-input needs --savepoint-dir")
    return args


def _cleanup_times(spec: WindowSpec) -> tuple[int, int]:
    """(step, phase): every cleanup time of an aligned kind's windows is k * step + phase, the only
    watermarks its window operator needs (PerEventWatermarkOperator). (0, 0) for sessions: every watermark."""
    if spec.kind == "session":
        return 0, 0
    step = spec.size_ms if spec.kind == "tumbling" else spec.slide_ms
    return step, spec.size_ms - 1 + spec.allowed_lateness_ms


def spec_from_args(args: argparse.Namespace) -> WindowSpec:
    return WindowSpec.of(
        args.window_kind,
        size_ms=args.window_size_ms,
        slide_ms=args.window_slide_ms,
        gap_ms=args.session_gap_ms,
        out_of_orderness_ms=args.out_of_orderness_ms,
        allowed_lateness_ms=args.allowed_lateness_ms,
    )


def _fixable_failures() -> tuple[type[Exception], ...]:
    """Failures the user can fix, reported as their one sentence (anything else keeps its traceback)."""
    from flink_jobs.custom_aggregates import CustomAggregateError
    from flink_jobs.environment import JobManagerUnreachable
    from flink_jobs.progress import ClusterCannotReadInput, JobCancelledOnCluster, TaskManagerLost

    return CustomAggregateError, JobManagerUnreachable, ClusterCannotReadInput, JobCancelledOnCluster, TaskManagerLost


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = spec_from_args(args)
    options = dict(
        parallelism=args.parallelism,
        jobmanager=args.jobmanager,
        jvm_heap=args.jvm_heap,
        progress_every_s=args.progress_every_s,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        checkpoint_dir=args.checkpoint_dir,
        restore_from=args.restore_from,
    )
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    from flink_jobs.custom_aggregates import load_aggregates

    fixable = _fixable_failures()
    pipes_process = PipesEnvVarParamsLoader().is_dagster_pipes_process()
    if args.aggregate:
        options["aggregates"] = tuple(args.aggregate)
        try:  # one sentence instead of a traceback (the Dagster step has checked this already)
            load_aggregates(args.aggregate)
        except ValueError as error:
            if pipes_process:
                with open_dagster_pipes() as pipes:
                    return _failed(args.output, str(error), pipes.log.error)
            return _failed(args.output, str(error), None)
    job = run
    first_input = args.input
    if args.stream_input:
        from flink_jobs import stream_job

        job = functools.partial(stream_job.run_stream, savepoint_dir=args.savepoint_dir)
        first_input = args.stream_input
        del options["checkpoint_dir"]
    if pipes_process:
        with open_dagster_pipes() as pipes:
            pipes.log.info(starting_line(first_input, args.output, spec, options))
            try:
                figures = job(first_input, args.output, spec, progress=pipes.log.info, **options)
            except fixable as error:
                return _failed(args.output, str(error), pipes.log.error)
            pipes.log.info(finished_line(figures))
            pipes.report_custom_message(figures)
    else:
        try:
            figures = job(first_input, args.output, spec,
                          progress=lambda line: print(line, file=sys.stderr, flush=True), **options)  # fmt: skip
        except fixable as error:
            return _failed(args.output, str(error), None)
        print(json.dumps(figures))
    return 0


def _failed(output: Path, sentence: str, log: Callable[[str], None] | None) -> int:
    """The one sentence to the Dagster log (pipes), stderr and FAILURE_FILE (read by the asset)."""
    write_failure(Path(output).resolve(), sentence)
    if log is not None:
        log(sentence)
    print(sentence, file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
