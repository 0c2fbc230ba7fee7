"""Waiting for a submitted Flink job: progress lines, cancel on stop, and a readable failure.

Every job calls `wait_for_result(job_client, rest_url, report, every_s)` right after submitting.

Progress: the job's REST API (the mini-cluster's, on a loopback port we pick, or the cluster's) gives per-vertex
record counts while tasks run, and the report names the tasks running now. It is best effort: a REST error never
fails the job; the report then gives only how long the job has been running.

Stopping: the wait runs inside flink_jobs.cancellation.cancel_on_stop, so a signal, a vanished parent process or an
exception while waiting cancels the job on the cluster before the process exits, and logs its id.

Failures are one sentence, not a Java stack trace: ClusterCannotReadInput when the cluster cannot read the staged
input (the client cannot see the cluster's file system, so only the job's failure tells; the loop also reads
`/jobs/<id>/exceptions` every EXCEPTIONS_EVERY_S and cancels such a job, which a restart strategy would retry), and
JobCancelledOnCluster for a job cancelled outside the run. Details and measurements: docs/cluster.md ("What must be
shared, at the same paths", "Stopping a run cancels its job").
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from collections.abc import Callable

from flink_jobs import cancellation

REPORT_EVERY_S = 10.0
EXCEPTIONS_EVERY_S = 2.0  # how often a running job's failure history is read (restart loops)

# A missing or unreadable file on the cluster's side, as Flink's local file system, Java I/O and NIO say it.
_UNREADABLE = re.compile(
    r"java\.io\.FileNotFoundException: (?:File )?(?P<a>\S+?)(?: does not exist| \(|$)"
    r"|java\.nio\.file\.(?:NoSuchFile|AccessDenied)Exception: (?P<b>\S+)",
    re.MULTILINE,
)


class ClusterCannotReadInput(RuntimeError):
    """The Flink cluster could not read a file the client can (the staged input on another host)."""


class TaskManagerLost(RuntimeError):
    """A TaskManager was lost more often than the job's restart strategy allows."""


# How Flink says that a TaskManager (and the tasks on it) went away, in a failure's stack traces.
_TASKMANAGER_LOST = re.compile(
    r"TaskManager with id \S+ is no longer reachable|Heartbeat of TaskManager with id \S+ timed out"
    r"|Connection unexpectedly closed by remote task manager|TaskExecutor \S+ (?:is no longer reachable|has been "
    r"disconnected)|Disconnect TaskManager|NoResourceAvailableException",
)
_RESTARTS_EXHAUSTED = "Recovery is suppressed by"


def taskmanager_lost_message(text: str, job_id: str, rest_url: str | None) -> str | None:
    """The one sentence for a job that failed because a TaskManager was lost once too often, if it did."""
    if _RESTARTS_EXHAUSTED not in (text or "") or not _TASKMANAGER_LOST.search(text):
        return None
    restarts = re.search(r"maxNumberRestartAttempts=(\d+)", text)
    budget = f"its {restarts.group(1)} restarts" if restarts else "its restart budget"
    return (
        f"Flink job {job_id} on {rest_url or 'the Flink cluster'} failed because a TaskManager was lost after "
        f"{budget} were spent (each restart resumed from the last checkpoint): see the TaskManager logs for why it "
        "died (memory, a killed process), fix that or give the cluster more TaskManagers, and run again."
    )


class JobCancelledOnCluster(RuntimeError):
    """The job was cancelled from outside this process (web UI, REST API, `flink cancel`)."""


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the mini-cluster's REST endpoint binds it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rows_read(job: dict) -> int:
    """Rows the job's source has emitted, from the REST API's /jobs/<id> answer."""
    sources = [v for v in job.get("vertices") or [] if str(v.get("name", "")).startswith("Source")]
    # max, not sum: an engine may read the input in two source vertices (each reads every row)
    return max((int(v.get("metrics", {}).get("write-records", 0)) for v in sources), default=0)


def describe(
    job: dict, elapsed_s: float, total_rows: int | None = None, first_count: tuple[float, int] | None = None
) -> str:
    """One log line from the REST API's /jobs/<id> answer: rows read (of `total_rows`, with a percentage and
    an ETA, when the input's row count is known) and the tasks running now, by their full names.
    `first_count` (elapsed s, rows) is the first report with rows read: the ETA's rate counts from there, so
    the job's start-up does not make the first estimates far too long."""
    vertices = job.get("vertices") or []
    sources = [v for v in vertices if str(v.get("name", "")).startswith("Source")]
    rows_read_now = rows_read(job)
    running = [
        f"{_name(v.get('name', '?'))} ({int(v.get('metrics', {}).get('read-records', 0)):,} rows in)"
        for v in vertices
        if v.get("status") == "RUNNING" and v not in sources
    ]
    input_done = bool(sources) and all(v.get("status") == "FINISHED" for v in sources)
    text = f"Flink job {str(job.get('state', 'RUNNING')).lower()} for {elapsed_s:.0f} s: "
    if rows_read_now == 0 and not input_done:
        # Flink reports a source's count only after its first metrics update: 0 would read as "stuck"
        text += "starting up, no row count reported yet" + (f" (input: {total_rows:,} rows)" if total_rows else "")
    elif total_rows:
        done = min(rows_read_now, total_rows)
        text += f"{done:,} of {total_rows:,} rows read ({done / total_rows:.0%})"
        if input_done:
            text += " (input done)"
        elif 0 < done < total_rows:
            since_s, since_rows = first_count if first_count else (0.0, 0)
            if elapsed_s <= since_s or done <= since_rows:  # one count so far: the rate since the start
                since_s, since_rows = 0.0, 0
            rate = (done - since_rows) / (elapsed_s - since_s)
            text += f", about {_duration((total_rows - done) / rate)} left to read"
    else:
        text += f"{rows_read_now:,} rows read" + (" (input done)" if input_done else "")
    if running:
        text += "; running: " + ", ".join(running)
    return text


def _name(name: str) -> str:
    """An operator's full name on one line (Flink's names may hold newlines and runs of spaces)."""
    return " ".join(str(name).split())


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def fetch_job(rest_url: str, job_id: str, timeout_s: float = 2.0) -> dict:
    with urllib.request.urlopen(f"{rest_url.rstrip('/')}/jobs/{job_id}", timeout=timeout_s) as answer:
        return json.load(answer)


def unreadable_path(text: str) -> str | None:
    """The path in the first "file not found / not readable" error in `text` (a Java trace), if any."""
    match = _UNREADABLE.search(text or "")
    if not match:
        return None
    path = (match.group("a") or match.group("b")).rstrip(".,;:")
    return path[len("file:") :] if path.startswith("file:") else path


def cluster_failure_text(rest_url: str, job_id: str, timeout_s: float = 2.0) -> str:
    """The job's failure history from `/jobs/<id>/exceptions` as one text ("" if unavailable)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the cluster directly, as Flink does
    try:
        with opener.open(f"{rest_url.rstrip('/')}/jobs/{job_id}/exceptions", timeout=timeout_s) as answer:
            history = json.load(answer)
    except (OSError, ValueError):
        return ""
    entries = (history.get("exceptionHistory") or {}).get("entries") or []
    texts = [history.get("root-exception") or ""]
    for entry in entries:
        texts += [entry.get("stacktrace") or ""]
        texts += [e.get("stacktrace") or "" for e in entry.get("concurrentExceptions") or []]
    return "\n".join(texts)


def cannot_read_message(path: str, job_id: str, rest_url: str | None) -> str:
    where = rest_url or "the Flink cluster"
    return (
        f"The Flink cluster at {where} cannot read {path} (job {job_id} failed with FileNotFoundException): "
        "its JobManager and TaskManagers must see the run's staging folder (next to the warehouse) and this "
        "venv and repository at the same paths as the machine that submits the job, so share them at those "
        "paths or run the cluster there (docs/cluster.md)."
    )


def wait_for_result(
    job_client,
    rest_url: str | None,
    report: Callable[[str], None] | None,
    every_s: float | None = None,
    *,
    cancel_timeout_s: float = cancellation.CANCEL_TIMEOUT_S,
    total_rows: int | None = None,
    user_code_failure: Callable[[str], Exception | None] | None = None,
):
    """Block until the job ends (its JobExecutionResult), reporting progress every `every_s`
    (default REPORT_EVERY_S; no progress when `report` is None); `total_rows`, the input's row count,
    gives the lines a percentage and an ETA.

    A stop signal, a vanished parent or an exception while waiting cancels the job first (see
    flink_jobs.cancellation: raises RunStopped, a SystemExit). A job that failed because the cluster
    cannot read a file raises ClusterCannotReadInput with one sentence.

    A job restarts after a failure (flink_jobs.window_job: checkpoints and a restart strategy), so
    its failure history is read every EXCEPTIONS_EVERY_S: `user_code_failure(text)` returns the
    exception for a failure of the user's own code (a custom aggregate that raises), which no
    restart can fix; the job is then cancelled and that exception raised, within seconds. A job
    that failed because a TaskManager was lost beyond its restarts raises TaskManagerLost.
    """
    every_s = REPORT_EVERY_S if every_s is None else every_s
    job_id = str(job_client.get_job_id())
    future = job_client.get_job_execution_result()
    with cancellation.cancel_on_stop(job_id, rest_url, report, timeout_s=cancel_timeout_s) as guard:
        started = time.monotonic()
        next_report = started + every_s
        next_exceptions = started + EXCEPTIONS_EVERY_S
        first_count: tuple[float, int] | None = None  # (elapsed s, rows) of the first report with rows read
        while not future.done():
            guard.check()
            time.sleep(min(cancellation.POLL_S, every_s))
            guard.check()
            now = time.monotonic()
            if rest_url and now >= next_exceptions:
                next_exceptions = now + EXCEPTIONS_EVERY_S
                history = cluster_failure_text(rest_url, job_id)
                path = unreadable_path(history)
                failure = ClusterCannotReadInput(cannot_read_message(path, job_id, rest_url)) if path else None
                if failure is None and user_code_failure and history:
                    failure = user_code_failure(history)
                if failure is not None:  # it fails the same way after every restart: cancel, then say why
                    guard.cancel("The job fails the same way after every restart")
                    raise failure
            if report is None or now < next_report:
                continue
            next_report = now + every_s
            try:
                job = fetch_job(rest_url, job_id) if rest_url else None
            except (OSError, ValueError):  # REST not up yet, or gone as the job ends
                job = None
            line = None
            if job is not None:
                if first_count is None and rows_read(job) > 0:
                    first_count = (now - started, rows_read(job))
                line = describe(job, now - started, total_rows, first_count)
            if future.done():
                break
            report(line or f"Flink job running for {now - started:.0f} s")
        guard.job_ended()
        try:
            return future.result()
        except Exception as error:
            path = unreadable_path(str(error))
            if path is None and rest_url:
                path = unreadable_path(cluster_failure_text(rest_url, job_id))
            if path:
                raise ClusterCannotReadInput(cannot_read_message(path, job_id, rest_url)) from None
            history = cluster_failure_text(rest_url, job_id) if rest_url else ""
            failure = user_code_failure(f"{error}\n{history}") if user_code_failure else None
            if failure is not None:
                raise failure from None
            lost = taskmanager_lost_message(f"{error}\n{history}", job_id, rest_url)
            if lost:
                raise TaskManagerLost(lost) from None
            if "JobCancellationException" in str(error):
                raise JobCancelledOnCluster(
                    f"Flink job {job_id} was cancelled on {rest_url or 'the Flink cluster'} from outside this run "
                    "(web UI, REST API or `flink cancel`), so the run has no results; start it again."
                ) from None
            raise
