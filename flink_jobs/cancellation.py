"""Stopping a run stops its Flink job: on a signal, when the parent goes, when the client fails.

On a session cluster (TXN_FLINK_JOBMANAGER) the job runs in the cluster, not in the process that
submitted it, so it would outlive a stopped run. `cancel_on_stop` (used by progress.wait_for_result)
makes SIGTERM, SIGINT and SIGHUP only record the signal; the wait loop sees it, or a new parent in a
Pipes subprocess, or its own exception, within POLL_S, cancels the job through the REST API
(`PATCH /jobs/<id>?mode=cancel`, directly: the gateway JVM may be gone), logs one line with the job
id and raises RunStopped (exit code 128 + signal). Everything is bounded by CANCEL_TIMEOUT_S; a
cluster that does not answer gets a line with the command that cancels the job by hand.
`arm(remote=True)` (create_environment) holds a signal during submission until the job id is
known, for at most SUBMIT_GRACE_S. On the local mini-cluster the job dies with the client's gateway.

How each way of stopping reaches the job's process, and the measured times: docs/cluster.md
("Stopping a run cancels its job").
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CANCEL_TIMEOUT_S = 5.0  # the whole cancel: request + waiting for CANCELED (Pipes waits 20 s for us)
SUBMIT_GRACE_S = 15.0  # how long a signal during planning/submission waits for the job id (< Pipes' 20 s)
# Set in the environment of a Dagster Pipes subprocess: an orchestrator owns this process, so its
# parent going away means the run is over. A job started by hand may outlive its shell on purpose.
PIPES_ENV = "DAGSTER_PIPES_CONTEXT"
POLL_S = 0.2  # how often the wait loop looks at signals and the parent
TERMINAL_STATES = {"CANCELED", "FAILED", "FINISHED"}


class RunStopped(SystemExit):
    """The run was stopped (signal, parent gone); its Flink job has been cancelled (or logged)."""

    def __init__(self, reason: str, code: int):
        super().__init__(code)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class _State:
    def __init__(self) -> None:
        self.armed = False
        self.remote: bool | None = None  # None: not armed by create_environment (unknown target)
        self.where: str | None = None  # the cluster's REST address (for the messages)
        self.previous: dict[int, object] = {}
        self.pending: int | None = None  # the first stop signal received
        self.job_id: str | None = None  # the job being waited for
        self.submitted = False  # a job id has been seen in this process
        self.cancelling = False
        self.parent = os.getppid()


_state = _State()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _on_signal(signum: int, _frame) -> None:
    if _state.cancelling or _state.pending is not None:
        return  # already stopping: let the cancel finish
    _state.pending = signum
    if _state.job_id is not None:
        return  # the wait loop cancels the job within POLL_S
    if _state.remote is not True:
        _state.cancelling = True
        raise RunStopped(f"stopped by {_signal_name(signum)} before a Flink job was submitted", 128 + signum)
    threading.Thread(target=_exit_unless_submitted, args=(signum,), daemon=True, name="stop-grace").start()


def _exit_unless_submitted(signum: int) -> None:
    time.sleep(SUBMIT_GRACE_S)
    if not _state.submitted:
        where = _state.where or "the Flink cluster"
        _write_line(
            None,
            f"Stopped by {_signal_name(signum)} while the Flink job was being planned or submitted, and its "
            f"submission did not complete within {SUBMIT_GRACE_S:g} s; exiting: if {where} lists a job of this "
            "run, cancel it there.",
        )
        os._exit(128 + signum)  # the main thread may be stuck in the submission (a cluster that does not answer)


def arm(*, remote: bool, where: str | None = None) -> None:
    """Record where the job runs (create_environment calls this before the job is planned).

    For a remote job the handlers are installed now: a signal during planning or submission is held
    until the job id is known. For the mini-cluster they come with the wait (cancel_on_stop).
    """
    _state.remote = remote
    _state.where = where
    _state.parent = os.getppid()
    if remote:
        _install()


def _install() -> None:
    """SIGTERM/SIGINT/SIGHUP -> _on_signal (main thread only; a no-op elsewhere)."""
    if _state.armed or threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        _state.previous[signum] = signal.signal(signum, _on_signal)
    _state.armed = True


def disarm() -> None:
    """Restore the handlers that were there before."""
    if not _state.armed or threading.current_thread() is not threading.main_thread():
        return
    for signum, handler in _state.previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    _state.previous.clear()
    _state.armed = False
    _state.pending = None
    _state.cancelling = False


def _write_line(log: Callable[[str], None] | None, line: str) -> None:
    """To the job's log (Pipes or stderr); never raises (the orchestrator may be gone)."""
    if log is not None:
        try:
            log(line)
            return
        except Exception:  # noqa: BLE001 - e.g. the Pipes message file was removed with its run
            pass
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _rest(method: str, url: str, timeout_s: float):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # as Flink's client: no proxy
    request = urllib.request.Request(url, method=method)
    with opener.open(request, timeout=max(0.1, timeout_s)) as response:
        body = response.read()
        return json.loads(body) if body.strip() else {}


def cancel_job(rest_url: str, job_id: str, timeout_s: float = CANCEL_TIMEOUT_S) -> tuple[str, str]:
    """Cancel `job_id` through the REST API and wait for a terminal state, within `timeout_s`.

    Returns (outcome, detail). Outcome "CANCELED"; another terminal state it had already reached;
    "REQUESTED" when the cluster accepted the cancel but the job had not ended by the deadline (a
    loaded cluster took over 5 s here; the cancel goes on without us); or "FAILED_TO_CANCEL" when
    the cluster did not accept it (gone, not answering, an error).
    """
    base = rest_url.rstrip("/")
    deadline = time.monotonic() + timeout_s
    try:
        _rest("PATCH", f"{base}/jobs/{job_id}?mode=cancel", min(3.0, timeout_s))
    except urllib.error.HTTPError as error:
        if error.code != 404:  # 404: the cluster no longer knows it (e.g. it ended and was archived)
            try:  # e.g. 409 when the job has just finished: look at its state
                state = _rest("GET", f"{base}/jobs/{job_id}", max(0.1, deadline - time.monotonic())).get("state")
            except (OSError, ValueError):
                state = None
            if state in TERMINAL_STATES:
                return state, f"it had already ended ({state})"
        return "FAILED_TO_CANCEL", f"HTTP {error.code} {error.reason}"
    except (OSError, ValueError) as error:
        return "FAILED_TO_CANCEL", str(getattr(error, "reason", None) or error)
    state = "?"
    while time.monotonic() < deadline:
        try:
            state = _rest("GET", f"{base}/jobs/{job_id}", max(0.1, deadline - time.monotonic())).get("state")
        except (OSError, ValueError) as error:
            return "REQUESTED", f"cancel accepted, then no answer ({getattr(error, 'reason', None) or error})"
        if state in TERMINAL_STATES:
            return state, state
        time.sleep(0.1)
    return "REQUESTED", f"cancel accepted, still {state} after {timeout_s:g} s"


class Guard:
    """What `cancel_on_stop` yields: `check()` in the wait loop, `job_ended()` once it ended."""

    def __init__(self, job_id: str, rest_url: str | None, log, remote: bool | None, timeout_s: float):
        self.job_id, self.rest_url, self.log, self.remote, self.timeout_s = job_id, rest_url, log, remote, timeout_s
        self.ended = False
        self.parent = _state.parent if PIPES_ENV in os.environ else None

    def check(self) -> None:
        """Raise RunStopped (after cancelling the job) if a stop signal came or the parent is gone."""
        if _state.pending is not None:
            signum = _state.pending
            self.stop(f"Stopped by {_signal_name(signum)}", 128 + signum)
        if self.parent is not None and os.getppid() != self.parent:
            self.log = None  # its log reader is gone with it: say it on stderr (inherited: its terminal or log)
            self.stop(f"The process that started this job (pid {self.parent}) is gone", 1)

    def stop(self, why: str, code: int):
        _state.cancelling = True
        raise RunStopped(self.cancel(why), code)

    def job_ended(self) -> None:
        self.ended = True

    def cancel(self, why: str) -> str:
        """Cancel the job once, bounded; say what happened in one line (also returned)."""
        if self.ended:
            return f"{why}: Flink job {self.job_id} had ended."
        self.ended = True
        where = self.rest_url or "(no REST address)"
        if self.rest_url:
            state, detail = cancel_job(self.rest_url, self.job_id, self.timeout_s)
        else:
            state, detail = "FAILED_TO_CANCEL", "no REST address"
        if self.remote is False:
            # The job lives in this process's JVM and ends with it; the cancel just stops it cleanly.
            outcome = "cancelled" if state == "CANCELED" else "ends with this process"
            line = f"{why}: Flink job {self.job_id} on the local mini-cluster {outcome}."
        elif state == "CANCELED":
            line = f"{why}: cancelled Flink job {self.job_id} on {where}."
        elif state == "REQUESTED":
            line = f"{why}: cancelled Flink job {self.job_id} on {where} ({detail})."
        elif state in TERMINAL_STATES:
            line = f"{why}: Flink job {self.job_id} on {where} needed no cancel, {detail}."
        else:
            line = (
                f"{why}: could not cancel Flink job {self.job_id} on {where} ({detail}); cancel it by hand "
                f"once the cluster answers: curl -X PATCH '{where.rstrip('/')}/jobs/{self.job_id}?mode=cancel'."
            )
        _write_line(self.log, line)
        return line


@contextmanager
def cancel_on_stop(
    job_id: str,
    rest_url: str | None,
    log: Callable[[str], None] | None = None,
    *,
    remote: bool | None = None,
    timeout_s: float = CANCEL_TIMEOUT_S,
) -> Iterator[Guard]:
    """While the block waits for `job_id`: a stop signal or a vanished parent cancels the job (via
    Guard.check), and so does any exception leaving the block before `job_ended()`."""
    guard = Guard(job_id, rest_url, log, _state.remote if remote is None else remote, timeout_s)
    _state.job_id = job_id
    _state.submitted = True
    _install()
    stopped = False
    try:
        guard.check()  # a signal held during submission
        yield guard
    except RunStopped:
        stopped = True  # keep ignoring stop signals while the process exits (Pipes' SIGINT after a Ctrl-C)
        raise
    except BaseException as error:
        if not guard.ended:
            _state.cancelling = True
            guard.cancel(f"The client stopped waiting ({type(error).__name__})")
        raise
    finally:
        _state.job_id = None
        if not stopped:
            disarm()
