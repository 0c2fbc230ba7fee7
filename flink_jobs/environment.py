"""Flink execution environments that work from an unactivated virtualenv, locally or on a cluster.

Every Python setting of Flink points at the interpreter running this process, with its site-packages
and this repository on the workers' path, so `.venv/bin/python -m flink_jobs...` works from any shell
(Flink would otherwise start `python` from PATH). Python runs in thread mode.

Local vs. remote: a plain PyFlink process always builds a local mini-cluster inside its gateway JVM
and ignores `execution.target=remote`; it submits to a cluster only when the gateway is started
through the Flink CLI. `create_environment` therefore sets SUBMIT_ARGS before the gateway starts,
after checking that the cluster's REST API answers, so an unreachable jobmanager fails in about a
second. The cluster's TaskManagers must see the same venv and repository paths. Stopping a run
cancels its job (flink_jobs.cancellation, armed here before the job is planned).

Why the CLI, what a cluster must share and `flink_jobs.cluster`: docs/cluster.md; JVM start-up
(class archive, lean environment): docs/windows.md.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from pyflink.common import Configuration
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment

from flink_jobs import cancellation
from flink_jobs.output import parallelism_problem
from flink_jobs.progress import free_loopback_port

REPO_ROOT = Path(__file__).resolve().parents[1]

# Client-side REST settings for remote runs. Flink's defaults (20 attempts, 3 s apart) make a
# client wait over a minute for a jobmanager that is not there; these bound it to a few seconds
# while still riding out a short hiccup of the REST endpoint during a run.
REMOTE_CLIENT_OPTIONS = {
    "rest.retry.max-attempts": "3",
    "rest.retry.delay": "1s",
    "rest.connection-timeout": "5s",
}
# How long the pre-submission check waits for the cluster's REST API.
JOBMANAGER_CHECK_TIMEOUT_S = 5.0

# Which mode this process's (single, process-wide) PyFlink gateway was started in.
_gateway_target: str | None = None


class JobManagerUnreachable(ConnectionError):
    """The configured Flink cluster's REST API did not answer (or is not a Flink REST API)."""


def worker_python_path() -> str:
    """site-packages of this interpreter plus the repository root, for the Python workers, then
    this process's PYTHONPATH entries (absolute: the workers run elsewhere), so a custom aggregate
    (TXN_AGGREGATE) imports in the workers exactly where it imports here."""
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(REPO_ROOT)]
    paths += [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(paths))


def parse_jobmanager(address: str) -> tuple[str, int]:
    """`host:port` of a Flink cluster's REST endpoint (e.g. `127.0.0.1:8081`)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Flink jobmanager address must be host:port, got {address!r}")
    return host, int(port)


def rest_url(jobmanager: str, path: str = "") -> str:
    host, port = parse_jobmanager(jobmanager)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # bare IPv6 literal
    return f"http://{host}:{port}{path}"


def fetch_rest_json(jobmanager: str, path: str, timeout: float = JOBMANAGER_CHECK_TIMEOUT_S):
    """GET a JSON document from a Flink cluster's REST API (e.g. `/overview`, `/jobs/overview`)."""
    # Talk to the cluster directly, as Flink's own REST client does: no http(s)_proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(rest_url(jobmanager, path), timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def check_jobmanager(jobmanager: str, timeout: float = JOBMANAGER_CHECK_TIMEOUT_S) -> dict:
    """The cluster's `/config` document; raises JobManagerUnreachable with a clear message."""
    url = rest_url(jobmanager, "/config")
    hint = "Start the cluster, or leave --jobmanager / TXN_FLINK_JOBMANAGER empty to use the local mini-cluster."
    try:
        config = fetch_rest_json(jobmanager, "/config", timeout)
    except urllib.error.HTTPError as error:  # something answered, with an error status
        raise JobManagerUnreachable(
            f"Flink jobmanager {jobmanager} is not usable: {url} answered HTTP {error.code} "
            f"{error.reason}, not like a Flink REST API. {hint}"
        ) from error
    except (urllib.error.URLError, OSError) as error:  # refused, timeout, DNS, unreachable network
        reason = getattr(error, "reason", None) or error
        raise JobManagerUnreachable(
            f"Flink jobmanager {jobmanager} is unreachable: its REST API at {url} did not answer "
            f"({reason}; timeout {timeout:g} s). {hint}"
        ) from error
    except ValueError as error:  # answered, but not with JSON
        raise JobManagerUnreachable(
            f"Flink jobmanager {jobmanager} is not usable: {url} answered, but not like a Flink REST API "
            f"({error}). {hint}"
        ) from error
    if not isinstance(config, dict) or "flink-version" not in config:
        raise JobManagerUnreachable(
            f"Flink jobmanager {jobmanager} is not usable: {url} answered, but not like a Flink REST API "
            f"({str(config)[:200]}). {hint}"
        )
    return config


def remote_submit_args(jobmanager: str) -> str:
    """`SUBMIT_ARGS` that make PyFlink start its gateway through `flink run -m host:port`."""
    host, port = parse_jobmanager(jobmanager)
    args = ["remote", "-m", f"{host}:{port}"]
    for key, value in REMOTE_CLIENT_OPTIONS.items():
        args += ["-D", f"{key}={value}"]
    return shlex.join(args)


def flink_configuration(parallelism: int, jobmanager: str | None = None, rest_port: int | None = None) -> Configuration:
    """The job's configuration; `rest_port` puts the mini-cluster's REST API on 127.0.0.1:<port>."""
    if (problem := parallelism_problem(parallelism)) is not None:
        raise ValueError(problem)
    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("python.pythonpath", worker_python_path())
    # Thread mode runs Python inside the JVM (pemja). The custom aggregates' one Python call per
    # batch of ~45k events (flink_jobs/custom_aggregates.py) measured 74k rows/s in thread mode
    # and 82k in process mode at 1M rows, which also starts ~4 s slower: thread mode stays.
    conf.set_string("python.execution-mode", "thread")
    # Batch for the plain Flink SQL baseline (bench/plain_flink_sql.py); the window job switches
    # to streaming, where its per-event watermarks drive Flink's WindowOperator.
    conf.set_string("execution.runtime-mode", "batch")
    conf.set_string("parallelism.default", str(parallelism))
    if jobmanager:
        # Informational for the job's config: what actually routes the job to the cluster is the
        # gateway started through the Flink CLI (see remote_submit_args / create_environment).
        host, port = parse_jobmanager(jobmanager)
        conf.set_string("execution.target", "remote")
        conf.set_string("rest.address", host)
        conf.set_string("rest.port", str(port))
        for key, value in REMOTE_CLIENT_OPTIONS.items():
            conf.set_string(key, value)
    elif rest_port:
        # Loopback only: the mini-cluster's REST API serves job progress (flink_jobs/progress.py).
        conf.set_string("rest.address", "127.0.0.1")
        conf.set_string("rest.bind-address", "127.0.0.1")
        conf.set_string("rest.port", str(rest_port))
    return conf


def _gateway_started() -> bool:
    """Whether this process's PyFlink Java gateway is running (it is one per process, and its mode
    is fixed when it starts). PyFlink 2.3 has no public way to ask: get_gateway() would start it.
    So its module attribute is read here, and only here; a PyFlink without it fails loudly."""
    from pyflink import java_gateway

    return java_gateway._gateway is not None


def prepare_gateway(jobmanager: str | None, jvm_heap: str | None = None) -> None:
    """Make the PyFlink gateway of this process target the mini-cluster or `jobmanager`.

    `jvm_heap` (e.g. "1g") caps the local gateway JVM, which hosts the mini-cluster: left alone the
    JVM grows towards a quarter of the machine's RAM (2.5-3 GB at 10M rows here, 1.3 GB with 1g, at
    the same speed). An -Xmx already in JVM_ARGS wins.
    """
    global _gateway_target
    target = f"remote {jobmanager}" if jobmanager else "local"
    if "PYFLINK_GATEWAY_PORT" in os.environ:
        # Started by `flink run -py ...`: the Flink CLI has already decided where the job runs.
        return
    if _gateway_started():
        started_as = _gateway_target or "local"
        if started_as != target:
            raise RuntimeError(
                f"this process's PyFlink gateway was already started for {started_as!r}; "
                f"running on {target!r} needs a new process"
            )
        return
    if jobmanager:
        check_jobmanager(jobmanager)
        os.environ["SUBMIT_ARGS"] = remote_submit_args(jobmanager)
    else:
        if os.environ.get("SUBMIT_ARGS", "local").split()[:1] != ["local"]:
            os.environ["SUBMIT_ARGS"] = "local"  # no --jobmanager means the mini-cluster, whatever the shell had
        jvm_args = os.environ.get("JVM_ARGS", "")
        if jvm_heap and "-Xmx" not in jvm_args:
            jvm_args = f"{jvm_args} -Xmx{jvm_heap}"
        if "SharedArchiveFile" not in jvm_args and "Xshare" not in jvm_args:
            jvm_args = f"{jvm_args} {class_data_sharing_args()}"
        os.environ["JVM_ARGS"] = jvm_args.strip()  # read by pyflink_gateway_server
    _gateway_target = target


# --- class-data sharing ---------------------------------------------------------------------
# The local gateway JVM loads about 20k classes from Flink's jars at every start. An AppCDS archive
# of them (JDK 13+: -XX:ArchiveClassesAtExit once, -XX:SharedArchiveFile after) maps them instead
# (the saving is measured in docs/windows.md, "JVM start-up"). The archive is written by the first
# run's JVM as it exits, to a name of its own, and renamed into place once complete, so a run never
# maps a half-written one. The JVM checks that the archive matches its version and classpath and
# runs without it otherwise (-Xshare:auto, the default), so a stale archive costs the saving, never
# the run. A JVM killed while it writes can leave a truncated archive that later JVMs decline
# silently: delete build/flink-cds-*.jsa and the next job writes a new one.
CDS_DIR = REPO_ROOT / "build"  # beside the operators' jar (flink_jobs/java_operators.py)
_CDS_QUIET = "-Xlog:cds=off,cds+dynamic=off"  # a class it cannot archive is not worth a log line
_archive_being_written: tuple[Path, Path] | None = None


def class_data_archive() -> Path:
    """Where this JDK's archive of this Flink's jars is kept: named by the java binary and the jars."""
    import hashlib
    import shutil

    import pyflink

    digest = hashlib.sha256()
    java = (
        shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) if os.environ.get("JAVA_HOME") else None
    )
    java = Path(java or shutil.which("java") or "java").resolve()
    for path in [java, *sorted((Path(pyflink.__file__).resolve().parent / "lib").glob("*.jar"))]:
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}:{stat.st_size if stat else 0}:{stat.st_mtime_ns if stat else 0}\n".encode())
    return CDS_DIR / f"flink-cds-{digest.hexdigest()[:16]}.jsa"


def class_data_sharing_args() -> str:
    """JVM flags that map the archive, or that write it at exit when there is none yet ("" if unwritable)."""
    global _archive_being_written
    archive = class_data_archive()
    if any(c.isspace() for c in str(archive)):
        return ""  # pyflink splits JVM_ARGS on whitespace: such a path would break the JVM's command line
    if archive.is_file():
        return f"{_CDS_QUIET} -XX:SharedArchiveFile={archive}"
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return ""
    if not os.access(archive.parent, os.W_OK):
        return ""
    _remove_abandoned_archives(archive)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
    _archive_being_written = (partial, archive)
    return f"{_CDS_QUIET} -XX:ArchiveClassesAtExit={partial}"


def finish_class_data_archive() -> None:
    """If this process's JVM writes the archive: have it renamed into place once the JVM has exited.

    The JVM writes the archive as it exits, which is after this process (it exits when its stdin, a
    pipe from this process, closes). So a detached watcher waits for the JVM to be gone and renames
    the finished file; this process does not wait. Call it once the job has finished."""
    global _archive_being_written
    if _archive_being_written is None or not _gateway_started():
        return
    partial, archive = _archive_being_written
    _archive_being_written = None
    pids = child_java_pids()
    if len(pids) != 1:
        return
    import subprocess

    subprocess.Popen(
        [sys.executable, "-c", _RENAME_WHEN_GONE, str(pids[0]), str(partial), str(archive)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives this process, and a stop signal to its group
    )


_RENAME_WHEN_GONE = """
import os, sys, time
pid, partial, archive = sys.argv[1], sys.argv[2], sys.argv[3]
deadline = time.monotonic() + 120
while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
    time.sleep(0.1)
if not os.path.exists(f"/proc/{pid}") and os.path.isfile(partial) and os.path.getsize(partial) > 0:
    os.replace(partial, archive)
"""


def _remove_abandoned_archives(archive: Path) -> None:
    """Partial archives of runs that died before renaming theirs (their process gone for 10 minutes)."""
    import time

    for partial in archive.parent.glob(f".{archive.name}.*.partial"):
        pid = partial.name.rsplit(".", 2)[-2]
        try:
            abandoned = not Path(f"/proc/{pid}").exists() and time.time() - partial.stat().st_mtime > 600
            if abandoned:
                partial.unlink()
        except (OSError, ValueError):
            continue


def child_java_pids() -> list[int]:
    """This process's child processes that are JVMs (the PyFlink gateway)."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in map(int, children):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if command.endswith(b"java"):
                pids.append(pid)
    return pids


def create_environment(
    parallelism: int, jobmanager: str | None = None, jvm_heap: str | None = None
) -> tuple[StreamExecutionEnvironment, str]:
    """The execution environment on the local mini-cluster, or on the Flink cluster at `jobmanager`
    (host:port), and the base URL of the REST API that reports the job's progress.

    With `jobmanager`, raises JobManagerUnreachable (a ConnectionError) within about
    JOBMANAGER_CHECK_TIMEOUT_S if its REST API does not answer; `env.execute()` then submits the
    job to that cluster and waits for it to finish.

    No table environment: the window job is a DataStream job and would pay its planner's start-up
    (the plain SQL baseline creates its own). Nor PyFlink's loopback server for Python workers: it
    serves only process-mode workers, and Python runs in thread mode here (flink_configuration).
    Their costs are in docs/windows.md ("JVM start-up").
    """
    # Validate before any JVM starts; a pyflink Configuration() already starts the gateway, so
    # the gateway's target must be chosen before flink_configuration() runs.
    if (problem := parallelism_problem(parallelism)) is not None:
        raise ValueError(problem)
    if jobmanager:
        parse_jobmanager(jobmanager)
    prepare_gateway(jobmanager or None, jvm_heap)
    rest_port = None if jobmanager else free_loopback_port()
    base_url = rest_url(jobmanager) if jobmanager else f"http://127.0.0.1:{rest_port}"
    cancellation.arm(remote=bool(jobmanager), where=base_url)  # from here on, a stop signal cancels the job
    # PyFlink reads this (private, as in its own test utilities) when it builds the environment:
    # "process" skips starting the loopback server. A value set by the caller is kept.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(parallelism, jobmanager, rest_port))
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.set_parallelism(parallelism)
    return env, base_url
