"""The alert webhook sender (warehouse.alerts) against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from warehouse import alerts
from warehouse.alerts import DeliveryPolicy, post_json, redact, url_problem

FAST = DeliveryPolicy(timeout_s=0.5, attempts=3, backoff_s=0.01)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Hook:
    """A webhook receiver: answers each request with the next step of `script` (the last repeats)."""

    url: str
    port: int
    script: list[tuple] = field(default_factory=lambda: [("status", 200)])
    received: list[Received] = field(default_factory=list)

    def json_bodies(self) -> list[dict]:
        return [json.loads(r.body) for r in self.received]


def _handler(hook: Hook):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            index = len(hook.received)
            hook.received.append(Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            step = hook.script[min(index, len(hook.script) - 1)]
            try:
                if step[0] == "sleep":  # answer only after the client gave up
                    time.sleep(step[1])
                    self.send_response(200)
                    self.end_headers()
                elif step[0] == "trickle":  # one byte every 0.1 s: no single read ever times out
                    for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.1)
                elif step[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", step[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_response(step[1])
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    server.daemon_threads = True
    port = server.server_address[1]
    receiver = Hook(url=f"http://127.0.0.1:{port}/hook", port=port)
    server.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BODY = {"source_file": "/data/a.csv", "run_id": "r1", "count": 1, "anomalies": []}


# --------------------------------------------------------------------------- #
# configuration
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "url", ["", "   ", "http://127.0.0.1:8080/hook", "https://hooks.example.com/a/b?token=x", "https://u:p@h.example"]
)
def test_valid_or_empty_urls_have_no_problem(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://user:secret@files.example.com/?token=abc", "http:// or https://"),
        ("hooks.example.com/hook?token=abc", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https:///only-a-path?token=abc", "must name a host"),
        ("https://user:secret@hooks.example.com:99999/x", "not a valid URL"),
        ("https://hooks.example.com:abc/x", "not a valid URL"),
        ("https://hooks.example.com:0/x", "port 0"),
        ("https://hooks.example.com/a b", "spaces or control characters"),
        ("https://hooks.example.com/\x00", "spaces or control characters"),
    ],
)
def test_bad_urls_get_one_sentence_without_the_secrets(url: str, says: str) -> None:
    problem = url_problem(url)
    assert problem is not None and says in problem
    assert problem.startswith("TXN_ALERT_WEBHOOK_URL ")
    assert "\n" not in problem
    for secret in ("secret", "abc", "passwd", "user"):
        assert secret not in problem


def test_redact_keeps_only_scheme_host_and_port() -> None:
    assert redact("https://user:pw@Hooks.Example.com:8443/services/T1/B2/tok3n?key=k3y#frag") == (
        "https://hooks.example.com:8443/…"
    )
    assert redact("http://127.0.0.1:9/") == "http://127.0.0.1:9"
    assert redact("http://[::1]:8080/x") == "http://[::1]:8080/…"
    assert redact("https://h.example?token=1") == "https://h.example/…"


def test_payload_lists_at_most_max_items_with_epoch_ms() -> None:
    items = [
        {
            "key": f"k{i}",
            "window_start": 1000 * i,
            "window_end": 1000 * i + 5000,
            "avg_amount": 10.0 * i,
            "threshold": 5.0,
            "score": 10.0 - i,
            "txn_count": 3,
        }  # fmt: skip
        for i in range(5)
    ]
    items[4]["threshold"] = float("inf")
    body = alerts.payload("/data/a.csv", "run-9", 5, items, max_items=2)
    assert body == {
        "source_file": "/data/a.csv",
        "run_id": "run-9",
        "count": 5,
        "anomalies": [
            {"key": "k0", "window_start": 0, "window_end": 5000, "avg_amount": 0.0, "threshold": 5.0, "score": 10.0},
            {"key": "k1", "window_start": 1000, "window_end": 6000, "avg_amount": 10.0, "threshold": 5.0, "score": 9.0},
        ],
    }
    # JSON has no Infinity: a non-finite value becomes null
    assert alerts.payload("f", "r", 5, items, max_items=5)["anomalies"][4]["threshold"] is None
    json.dumps(alerts.payload("f", "r", 5, items, max_items=5), allow_nan=False)


# --------------------------------------------------------------------------- #
# delivery
# --------------------------------------------------------------------------- #
def test_delivers_one_json_post(hook: Hook) -> None:
    delivery = post_json(hook.url + "?token=s3cret", BODY, FAST)
    assert delivery.delivered and delivery.attempts == 1 and delivery.status == 200 and delivery.error is None
    (request,) = hook.received
    assert request.path == "/hook?token=s3cret"  # the query reaches the receiver
    assert request.headers["content-type"].startswith("application/json")
    assert json.loads(request.body) == BODY
    assert "authorization" not in request.headers


def test_userinfo_is_sent_as_basic_auth_not_in_the_url(hook: Hook) -> None:
    url = f"http://al%40ice:p%3Ass@127.0.0.1:{hook.port}/hook"
    assert post_json(url, BODY, FAST).delivered
    (request,) = hook.received
    assert request.path == "/hook"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"al@ice:p:ss").decode()


def test_a_server_error_is_retried_with_backoff(hook: Hook) -> None:
    hook.script = [("status", 500), ("status", 503), ("status", 204)]
    sleeps: list[float] = []
    delivery = post_json(hook.url, BODY, DeliveryPolicy(timeout_s=0.5, attempts=3, backoff_s=0.25), sleep=sleeps.append)
    assert delivery.delivered and delivery.attempts == 3 and delivery.status == 204
    assert sleeps == [0.25, 0.5]
    assert len(hook.received) == 3 and all(json.loads(r.body) == BODY for r in hook.received)


def test_a_server_that_keeps_failing_gives_up_after_the_attempts(hook: Hook) -> None:
    hook.script = [("status", 500)]
    delivery = post_json(hook.url, BODY, FAST)
    assert not delivery.delivered
    assert (delivery.attempts, delivery.status, len(hook.received)) == (3, 500, 3)
    assert delivery.error is not None and delivery.error.startswith("HTTP 500")


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_client_error_is_not_retried(hook: Hook, status: int) -> None:
    hook.script = [("status", status)]
    delivery = post_json(hook.url, BODY, FAST)
    assert not delivery.delivered and delivery.attempts == 1 and len(hook.received) == 1
    assert delivery.status == status


def test_too_many_requests_is_retried(hook: Hook) -> None:
    hook.script = [("status", 429), ("status", 200)]
    delivery = post_json(hook.url, BODY, FAST)
    assert delivery.delivered and delivery.attempts == 2


def test_a_redirect_is_not_followed(hook: Hook) -> None:
    hook.script = [("redirect", f"http://127.0.0.1:{hook.port}/elsewhere")]
    delivery = post_json(hook.url, BODY, FAST)
    assert not delivery.delivered and delivery.attempts == 1 and delivery.status == 302
    assert "redirect" in (delivery.error or "")
    assert [r.path for r in hook.received] == ["/hook"]


def test_a_closed_port_fails_without_raising() -> None:
    delivery = post_json(f"http://127.0.0.1:{closed_port()}/hook", BODY, FAST)
    assert not delivery.delivered and delivery.attempts == 3 and delivery.status is None
    assert "could not connect" in (delivery.error or "")


def test_a_server_that_does_not_answer_in_time_fails(hook: Hook) -> None:
    hook.script = [("sleep", 5.0)]
    delivery = post_json(hook.url, BODY, DeliveryPolicy(timeout_s=0.3, attempts=2, backoff_s=0.01))
    assert not delivery.delivered and delivery.attempts == 2 and len(hook.received) == 2
    assert "no answer within 0.3 s" in (delivery.error or "") or "timed out" in (delivery.error or "")
    assert delivery.elapsed_s < 5.0  # it did not wait for the server


def test_a_trickling_server_is_cut_off_by_the_wall_clock_limit(hook: Hook) -> None:
    # a byte every 0.1 s never trips a 0.5 s socket timeout; only the attempt's wall-clock limit ends it
    hook.script = [("trickle",)]
    delivery = post_json(hook.url, BODY, DeliveryPolicy(timeout_s=0.5, attempts=1, backoff_s=0.01))
    assert not delivery.delivered and delivery.attempts == 1
    assert delivery.error == "no answer within 0.5 s"
    assert delivery.elapsed_s < 5.0  # the trickle alone lasts 170 s


def test_errors_never_contain_the_urls_secrets(hook: Hook) -> None:
    hook.script = [("status", 500)]
    for url in (
        f"http://us3r:pa55word@127.0.0.1:{hook.port}/services/T0K3N?token=qu3ry",
        f"http://us3r:pa55word@127.0.0.1:{closed_port()}/services/T0K3N?token=qu3ry",
    ):
        delivery = post_json(url, BODY, FAST)
        assert not delivery.delivered and delivery.error
        for secret in ("us3r", "pa55word", "T0K3N", "qu3ry"):
            assert secret not in delivery.error


def test_never_raises_for_bad_input(hook: Hook) -> None:
    assert post_json("ftp://x/", BODY, FAST) == alerts.Delivery(
        False, 0, None, "TXN_ALERT_WEBHOOK_URL must be an http:// or https:// URL (scheme: 'ftp')", 0.0
    )
    assert not post_json("", BODY, FAST).delivered
    nan_body = {"anomalies": [{"score": float("nan")}]}
    delivery = post_json(hook.url, nan_body, FAST)
    assert not delivery.delivered and "ValueError" in (delivery.error or "")
    assert hook.received == []


def test_default_policy_is_5_s_with_retries() -> None:
    policy = DeliveryPolicy()
    assert policy.timeout_s == 5.0 and policy.attempts == 3 and policy.backoff_s == 1.0
