"""The anomaly alert: one JSON POST to a webhook (TXN_ALERT_WEBHOOK_URL), standard library only.

The sink is this one small function, `post_json`: a Kafka, Slack or e-mail sender can replace it without
touching the method or the tables, and no broker is needed (docs/decisions/0006-webhook-not-kafka.md).

* **Off by default**: an empty URL sends nothing. `url_problem` accepts only http:// and https:// URLs
  with a host; the settings report anything else as one sentence before a run writes anything.
* **Bounded**: each attempt has a wall-clock limit (`DeliveryPolicy`), enforced by running it in a daemon
  thread abandoned at the limit, because urllib's timeout applies per socket operation. Connection errors,
  timeouts, HTTP 408, 429 and 5xx are retried; another 4xx is not, as the same request cannot help.
  Redirects are not followed: a POST would silently turn into a GET, or go to another host.
* **Never fails the caller**: `post_json` returns a `Delivery` and does not raise.
* **No secrets in logs**: `redact` keeps only scheme, host and port (userinfo, query and the path, which
  often holds a token, are dropped). Userinfo is sent as HTTP Basic auth (urllib does not take it from the
  URL), and error texts are scrubbed of every URL part.

Limits, retries and the payload: docs/anomalies.md#the-alert-webhook.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

ENV_VAR = "TXN_ALERT_WEBHOOK_URL"
USER_AGENT = "txn-window-pipeline-alert/1"
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
MAX_RESPONSE_BYTES = 64 * 1024  # read (and drop) at most this much of the answer


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_s: float = 5.0  # wall clock per attempt
    attempts: int = 3
    backoff_s: float = 1.0  # before the 2nd attempt; doubles after each failed attempt


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    status: int | None  # HTTP status of the last answer, None when there was none
    error: str | None  # why it was not delivered (no URL parts), None when delivered
    elapsed_s: float


def url_problem(url: str) -> str | None:
    """One sentence saying why `url` is not a usable webhook URL, or None (also for "" = off).

    The sentence never repeats the URL, which may hold credentials."""
    if not url or not url.strip():
        return None
    url = url.strip()
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return f"{ENV_VAR} must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        return f"{ENV_VAR} is not a valid URL (check the host and the port)"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"'{scheme}'" if scheme and scheme.isascii() and scheme.isalnum() else "none"
        return f"{ENV_VAR} must be an http:// or https:// URL (scheme: {shown})"
    if not parts.hostname:
        return f"{ENV_VAR} must name a host, like https://alerts.example.com/hook"
    if port == 0:
        return f"{ENV_VAR} must not use port 0"
    return None


def redact(url: str) -> str:
    """scheme://host[:port]/… : what may be logged of a webhook URL."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{port}" if port else host
    tail = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme.lower()}://{netloc}{tail}"


def payload(
    source_file: str, run_id: str, count: int, items: Sequence[Mapping[str, object]], max_items: int
) -> dict[str, object]:
    """The alert body: the run's anomaly count and at most `max_items` of them (already ordered,
    largest score first); window bounds in epoch milliseconds."""
    listed = []
    for item in list(items)[: max(0, int(max_items))]:
        listed.append(
            {
                "key": item["key"],
                "window_start": int(item["window_start"]),
                "window_end": int(item["window_end"]),
                "avg_amount": _finite(item["avg_amount"]),
                "threshold": _finite(item["threshold"]),
                "score": _finite(item["score"]),
            }
        )
    return {"source_file": source_file, "run_id": run_id, "count": int(count), "anomalies": listed}


def _finite(value: object) -> float | None:
    # JSON has no NaN or Infinity; a receiver would reject the whole body for one of them
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        return None  # urllib then raises HTTPError with the 3xx status


def _request(url: str, body: bytes) -> urllib.request.Request:
    parts = urlsplit(url.strip())
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    bare = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return urllib.request.Request(bare, data=body, headers=headers, method="POST")


def _scrub(message: str, url: str) -> str:
    """The message with every part of the URL that may be secret replaced by '…'."""
    parts = urlsplit(url.strip())
    secrets = [url.strip(), parts.netloc, parts.path if parts.path not in ("", "/") else "", parts.query,
               parts.username or "", parts.password or "", parts.fragment]  # fmt: skip
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        message = message.replace(secret, "…")
    return message


def _attempt(opener: urllib.request.OpenerDirector, request: urllib.request.Request, timeout_s: float):
    """(status, error, retry): one POST with a hard wall-clock limit."""
    outcome: list[tuple[int | None, str | None, bool]] = []

    def run() -> None:
        try:
            with opener.open(request, timeout=timeout_s) as response:
                response.read(MAX_RESPONSE_BYTES)
                status = response.status
            ok = 200 <= status < 300
            outcome.append((status, None if ok else f"HTTP {status}", status in RETRY_STATUSES))
        except urllib.error.HTTPError as error:
            kind = "redirect (not followed)" if 300 <= error.code < 400 else (error.reason or "")
            outcome.append((error.code, f"HTTP {error.code} {kind}".strip(), error.code in RETRY_STATUSES))
        except urllib.error.URLError as error:
            reason = error.reason
            text = "timed out" if isinstance(reason, TimeoutError) else str(reason)
            outcome.append((None, f"could not connect: {text}", True))
        except TimeoutError:
            outcome.append((None, f"no answer within {timeout_s:g} s", True))
        except Exception as error:  # noqa: BLE001 - e.g. a connection reset mid-answer; never raise
            outcome.append((None, f"{type(error).__name__}: {error}", True))

    worker = threading.Thread(target=run, name="anomaly-alert", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:  # still waiting: abandon the daemon thread, its socket times out on its own
        return None, f"no answer within {timeout_s:g} s", True
    return outcome[0]


def post_json(
    url: str,
    body: Mapping[str, object],
    policy: DeliveryPolicy = DeliveryPolicy(),
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST `body` as JSON to `url`, retrying per `policy`. Never raises."""
    started = time.monotonic()
    attempts = 0
    status: int | None = None
    error: str | None = None
    try:
        problem = url_problem(url)
        if problem or not url.strip():
            return Delivery(False, 0, None, problem or f"{ENV_VAR} is not set", 0.0)
        data = json.dumps(body, allow_nan=False, separators=(",", ":")).encode("utf-8")
        request = _request(url, data)
        opener = urllib.request.build_opener(_NoRedirects())
        delay = policy.backoff_s
        for attempts in range(1, max(1, policy.attempts) + 1):
            status, error, retry = _attempt(opener, request, policy.timeout_s)
            if error is None:
                return Delivery(True, attempts, status, None, round(time.monotonic() - started, 3))
            if not retry or attempts >= policy.attempts:
                break
            sleep(delay)
            delay *= 2
    except Exception as unexpected:  # noqa: BLE001 - the alert must never fail the run
        error = f"{type(unexpected).__name__}: {unexpected}"
    return Delivery(
        False, attempts, status, _scrub(error or "unknown error", url), round(time.monotonic() - started, 3)
    )
