"""Progress of a running Flink job for the logs of long runs (rows read, elapsed, running tasks).

The job's REST API (the mini-cluster's, on a loopback port we pick, or the cluster's) reports
per-vertex record counts while tasks run. Batch jobs schedule their vertices stage by stage, so
the report names the tasks that are running now. Progress is best effort: a REST error never
fails the job; the report then says only how long the job has been running.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable

REPORT_EVERY_S = 10.0


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the mini-cluster's REST endpoint binds it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def describe(job: dict, elapsed_s: float) -> str:
    """One log line from the REST API's /jobs/<id> answer."""
    vertices = job.get("vertices") or []
    sources = [v for v in vertices if str(v.get("name", "")).startswith("Source")]
    # max, not sum: an engine may read the input in two source vertices (each reads every row)
    rows_read = max((int(v.get("metrics", {}).get("write-records", 0)) for v in sources), default=0)
    running = [
        f"{_short(v.get('name', '?'))} ({int(v.get('metrics', {}).get('read-records', 0)):,} rows in)"
        for v in vertices
        if v.get("status") == "RUNNING" and v not in sources
    ]
    text = f"Flink job {str(job.get('state', 'RUNNING')).lower()} for {elapsed_s:.0f} s: {rows_read:,} rows read"
    if sources and all(v.get("status") == "FINISHED" for v in sources):
        text += " (input done)"
    if running:
        text += "; running: " + ", ".join(running)
    return text


def _short(name: str, limit: int = 60) -> str:
    name = " ".join(str(name).split())
    return name if len(name) <= limit else name[: limit - 1] + "…"


def fetch_job(rest_url: str, job_id: str, timeout_s: float = 2.0) -> dict:
    with urllib.request.urlopen(f"{rest_url.rstrip('/')}/jobs/{job_id}", timeout=timeout_s) as answer:
        return json.load(answer)


def wait_for_result(
    job_client,
    rest_url: str | None,
    report: Callable[[str], None] | None,
    every_s: float | None = None,
):
    """Block until the job ends (its JobExecutionResult), reporting progress every `every_s`
    (default REPORT_EVERY_S)."""
    every_s = REPORT_EVERY_S if every_s is None else every_s
    future = job_client.get_job_execution_result()
    if report is None:
        return future.result()
    job_id = str(job_client.get_job_id())
    started = time.monotonic()
    next_report = started + every_s
    while not future.done():
        time.sleep(min(0.2, every_s))
        now = time.monotonic()
        if now < next_report:
            continue
        next_report = now + every_s
        try:
            line = describe(fetch_job(rest_url, job_id), now - started) if rest_url else None
        except (OSError, ValueError):  # REST not up yet, or gone as the job ends
            line = None
        if future.done():
            break
        report(line or f"Flink job running for {now - started:.0f} s")
    return future.result()
