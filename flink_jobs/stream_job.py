"""Replay a sequence of staged files as ONE event-time stream, continuing from the state a previous run left.

Contract (docs/stream-mode.md): after runs over files F1..Fn, the windows and late events written by all
runs, with the last run's provisional windows, equal the output of `flink_jobs.window_job` over the
concatenation F1‖…‖Fn. Flink carries the stream from run to run: the job restores the savepoint the
previous run ended with (the open windows and the per-event watermark, both operator state) and reads
only its own files.

How one run goes:
- The source is Flink's FileSource monitoring a folder of its own (continuous: it never ends by itself, so
  no end-of-input watermark fires the open windows). The driver puts the files there one at a time,
  each ending with a marker line; the watermark operator creates the marker's file once every row
  before it has been sent on, and the driver then takes a savepoint: the stream's state after that file.
- After the last file, `stop-with-savepoint --drain` sends the end-of-input watermark: the windows still
  open fire now, and the caller marks them provisional (their cleanup time is past no real watermark).
  That last savepoint holds nothing open and is not kept.
- The source and sinks get uids of this run (their state is dropped on restore,
  `ignore-unclaimed-state`): a run reads only its files and commits only its own part files.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from flink_jobs import window_job
from flink_jobs.output import FAILURE_FILE
from warehouse.windows import WindowSpec

STREAM_INPUT = "stream_input"  # the folder the source monitors, under the job's output folder
READ_MARKERS = "read_markers"
DISCOVERY_INTERVAL_MS = 50  # how often the source looks for the next file
MARKER_POLL_S = 0.02
SAVEPOINT_RETRY_S = 120.0  # how long a savepoint is retried while tasks are still starting
# Flink's reasons (CheckpointFailureReason) for refusing a savepoint while a task is still being deployed
# or restored: the JobManager's, and a task's own decline.
_NOT_RUNNING_YET = ("Not all required tasks are currently running", "Checkpoint was declined (tasks not ready)")


class StreamFeedError(RuntimeError):
    """The driver could not feed a file or take a savepoint (the job was cancelled)."""


def run_stream(
    inputs: Sequence[Path],
    output_dir: Path,
    spec: WindowSpec,
    savepoint_dir: Path,
    *,
    restore_from: str | None = None,
    parallelism: int = window_job.DEFAULT_PARALLELISM,
    jobmanager: str | None = None,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float | None = None,
    jvm_heap: str | None = None,
    aggregates: Sequence[str] = (),
    checkpoint_interval_ms: int | None = None,
) -> dict:
    """Replay `inputs` (staged files, in stream order) after the state of `restore_from` (None: the
    stream's start); a savepoint after each input goes under `savepoint_dir`. Returns figures, with
    `savepoints`: one path per input."""
    aggregates = tuple(aggregates)
    window_job.check_options(spec, aggregates, jvm_heap, progress_every_s)
    inputs = [Path(p).resolve() for p in inputs]
    if not inputs:
        raise ValueError("a stream run needs at least one input file")
    for path in inputs:
        if not path.is_file():
            raise FileNotFoundError(f"staged input {path} does not exist")
    output_dir, savepoint_dir = Path(output_dir).resolve(), Path(savepoint_dir).resolve()
    for stale in ("windows", "late", "custom", STREAM_INPUT, READ_MARKERS, window_job.CHECKPOINTS, "drained"):
        shutil.rmtree(output_dir / stale, ignore_errors=True)
    (output_dir / FAILURE_FILE).unlink(missing_ok=True)
    (output_dir / STREAM_INPUT).mkdir(parents=True)
    savepoint_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint_interval_ms is None:
        checkpoint_interval_ms = window_job.default_checkpoint_interval_ms(jobmanager)

    from flink_jobs.java_operators import ensure_jar

    jar = ensure_jar()
    started = time.monotonic()
    total_rows = sum(window_job.count_lines(p) for p in inputs) if progress is not None else None

    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    from flink_jobs.progress import wait_for_result

    def recovery():
        conf = window_job.recovery_configuration(output_dir / window_job.CHECKPOINTS, checkpoint_interval_ms,
                                                 restore_from)  # fmt: skip
        conf.set_string("execution.state-recovery.ignore-unclaimed-state", "true")
        return conf

    env, rest_url = window_job.streaming_environment(parallelism, jobmanager, jvm_heap, jar, recovery)
    token = "-" + uuid.uuid4().hex[:12]
    source = (
        FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(output_dir / STREAM_INPUT))
        .monitor_continuously(Duration.of_millis(DISCOVERY_INTERVAL_MS))
        .build()
    )
    lines = (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "stream files")
        .uid(f"stream-source{token}")
        .set_parallelism(1)
    )
    window_job.wire_windows(lines, spec, aggregates, output_dir, run_token=token)
    job_client = env.execute_async(f"{spec.kind} windows, stream: {inputs[0].name}" +
                                   (f" (+{len(inputs) - 1} more)" if len(inputs) > 1 else ""))  # fmt: skip
    feeder = _Feeder(job_client, inputs, output_dir, savepoint_dir, progress)
    feeder.start()
    try:
        result = wait_for_result(job_client, rest_url, progress, progress_every_s, total_rows=total_rows,
                                 user_code_failure=window_job.custom_aggregate_failure if aggregates else None)  # fmt: skip
    except Exception as error:
        feeder.abandon()
        if feeder.error is not None:
            raise feeder.error from None
        if aggregates:
            window_job.raise_custom_aggregate_failure(error, rest_url, str(job_client.get_job_id()))
        raise
    finally:
        feeder.join(timeout=60)
    if feeder.error is not None:
        raise feeder.error
    figures = window_job.job_figures(result, output_dir, spec, parallelism, aggregates, started)
    figures.update(stream_files=len(inputs), savepoints=feeder.savepoints, restored_from=restore_from or "")
    return figures


class _Feeder(threading.Thread):
    """Puts the inputs into the monitored folder one by one, takes a savepoint after each, then stops the
    job with --drain. Runs beside `wait_for_result` (which owns the main thread: signals, progress,
    failures); a failure here cancels the job and is kept in `error`."""

    def __init__(self, job_client, inputs: list[Path], output_dir: Path, savepoint_dir: Path,
                 progress: Callable[[str], None] | None) -> None:  # fmt: skip
        super().__init__(name="stream-feeder", daemon=True)
        self._job = job_client
        self._inputs = inputs
        self._output_dir = output_dir
        self._savepoint_dir = savepoint_dir
        self._progress = progress
        self._abandoned = threading.Event()
        self._ended = job_client.get_job_execution_result()
        # PyFlink 2.3's JobClient.trigger_savepoint calls a Java signature Flink 2 no longer has (no
        # format type): the Java client is called directly, here and only here.
        self._client = job_client._j_job_client
        from pyflink.java_gateway import get_gateway

        self._format = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
        self.savepoints: list[str] = []
        self.error: Exception | None = None

    def abandon(self) -> None:
        self._abandoned.set()

    def run(self) -> None:
        try:
            for index, path in enumerate(self._inputs):
                marker = self._output_dir / READ_MARKERS / f"{index:06d}"
                _place(path, self._output_dir / STREAM_INPUT / f"{index:06d}-{path.name}", marker)
                if not self._wait_for(marker):
                    return
                target = self._savepoint_dir / f"{index:06d}"
                self.savepoints.append(self._savepoint(target))
                if self._progress:
                    self._progress(f"Stream file {index + 1} of {len(self._inputs)} read ({path.name}); "
                                   f"savepoint {self.savepoints[-1]}")  # fmt: skip
            drained = self._output_dir / "drained"
            self._client.stopWithSavepoint(True, drained.as_uri(), self._format).get()
        except Exception as error:  # the job must not wait for files that never come
            if not self._abandoned.is_set():
                self.error = StreamFeedError(f"feeding the stream job failed: {error}")
                try:
                    self._job.cancel().result()
                except Exception:
                    pass

    def _savepoint(self, target: Path) -> str:
        """Take a savepoint into `target`; retried while some task is still being deployed or restored
        (Flink refuses a savepoint until every task runs, which a restored job's window tasks may
        not do yet when the source, which runs first, has read a small file)."""
        deadline = time.monotonic() + SAVEPOINT_RETRY_S
        while True:
            try:
                return str(self._client.triggerSavepoint(target.as_uri(), self._format).get())
            except Exception as error:
                if not any(m in str(error) for m in _NOT_RUNNING_YET) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _wait_for(self, marker: Path) -> bool:
        while not marker.exists():
            if self._abandoned.is_set() or self._ended.done():
                return False
            time.sleep(MARKER_POLL_S)
        return True


def _place(staged: Path, target: Path, marker: Path) -> None:
    """Copy a staged file into the monitored folder with its marker line; visible only once complete
    (FileSource skips names starting with '.')."""
    hidden = target.with_name("." + target.name)
    with open(staged, "rb") as source, open(hidden, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
        out.seek(0, 2)
        if out.tell() and not _ends_with_newline(staged):
            out.write(b"\n")
        out.write(f"#{marker}\n".encode())
    hidden.rename(target)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"
