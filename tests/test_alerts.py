"""The webhook alert sink ([daemon.alerts] webhook), against a real HTTP server on 127.0.0.1 and a real
lake whose sandbox goes over a quota, holds a credential, and is cleaned up again."""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import socket
import string
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start

from bedrot_lab.daemon import alerts
from bedrot_lab.lab import Lab
from bedrot_lab.sandbox.index import UsageIndex
from bedrot_lab.sandbox.violations import CheckResult, check


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def document(self) -> dict:
        return json.loads(self.body)


@dataclass
class Hook:
    """A webhook receiver: records every request, answers each with the next of ``statuses`` (then 200)."""

    port: int
    statuses: list[int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/hook"

    def documents(self) -> list[dict]:
        return [request.document for request in self.requests]


@pytest.fixture
def hook() -> Iterator[Hook]:
    received = Hook(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.requests.append(Request(self.path, dict(self.headers), body))
            status = received.statuses.pop(0) if received.statuses else 200
            answer = b"ok" if status < 400 else b"invalid_payload"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts, "BACKOFF", 0.01)
    monkeypatch.setattr(alerts, "_held_until", {})


def lake_with(lake: Path, webhook: str, *, quota: str = "1KiB") -> Lab:
    """The lake with ``webhook`` and a hard user quota, opened."""
    with (lake / "bedrot-lab.toml").open("a") as config:
        config.write(f'\n[daemon.alerts]\nwebhook = "{webhook}"\ntimeout = 2\n'
                     f'\n[sandbox.quotas]\nuser = {{ hard = "{quota}" }}\n')
    return Lab.open(lake)


def check_now(lab: Lab) -> CheckResult:
    with UsageIndex.for_settings(lab.settings) as index:
        index.full_scan()
        return check(lab.settings, index, lab.plugins.hook)


def fill(lake: Path, name: str = "data.csv", size: int = 2000) -> Path:
    path = lake / "sandbox/users/ana/churn" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The lines that say a plugin's hook failed (the log sink writes its own lines too)."""
    return [record for record in caplog.records if record.name == "bedrot_lab.plugins"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_aws_key() -> str:
    return "AKIA" + "".join(random.choices(string.ascii_uppercase + string.digits, k=16))


def test_a_violation_is_posted_once_when_new_and_once_when_resolved(bedrot_lake: Path, hook: Hook):
    lab = lake_with(bedrot_lake, hook.url())
    data = fill(bedrot_lake)

    first = check_now(lab)
    assert [t.kind for t in first.transitions] == ["new"] and first.sink_failures == 0
    [request] = hook.requests
    assert request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("bedrot-lab/")
    assert "Authorization" not in request.headers
    document = request.document
    assert {key: document[key] for key in ("lake", "event", "rule", "subject", "severity", "measured", "limit",
                                           "path", "line", "previous_severity")} == {
        "lake": "lake", "event": "new", "rule": "quota.user", "subject": "user:ana", "severity": "hard",
        "measured": 2000, "limit": 1024, "path": "users/ana", "line": None, "previous_severity": None}
    assert document["at"] == document["since"] and document["at"].endswith("+00:00")
    assert "over its hard limit" in document["detail"]
    assert document["text"].startswith("lake: sandbox violation new: [hard] quota.user user:ana: ")
    line = json.loads((lab.settings.state_dir / "violations.jsonl").read_text().splitlines()[0])
    assert {key: value for key, value in document.items() if key != "text"} == line  # one format for both sinks

    assert check_now(lab).transitions == []
    assert len(hook.requests) == 1  # a violation that persists is not posted again

    data.unlink()
    assert [t.kind for t in check_now(lab).transitions] == ["resolved"]
    assert [(d["event"], d["rule"], d["subject"]) for d in hook.documents()] == [
        ("new", "quota.user", "user:ana"), ("resolved", "quota.user", "user:ana")]


def test_a_credential_never_reaches_the_webhook(bedrot_lake: Path, hook: Hook):
    lab = lake_with(bedrot_lake, hook.url())
    key = fake_aws_key()
    fill(bedrot_lake, f"keys-{key}.txt", 0).write_text(f"aws_access_key_id = {key}\n")  # in its name too

    result = check_now(lab)
    assert [v.rule for v in result.violations] == ["secrets"]
    [request] = hook.requests
    assert key.encode() not in request.body
    assert key[4:].encode() not in request.body
    document = request.document
    assert (document["rule"], document["detail"]) == ("secrets", "AWS access key")
    assert document["subject"] == "users/ana/churn/keys-****.txt:1"
    assert document["path"] == "users/ana/churn/keys-****.txt"
    assert "keys-****.txt" in document["text"]


def test_a_name_that_is_not_utf8_is_sent_escaped(bedrot_lake: Path, hook: Hook):
    lab = lake_with(bedrot_lake, hook.url())
    fill(bedrot_lake, os.fsdecode(b"caf\xe9.env"), 0).write_text(f"AWS_KEY={fake_aws_key()}\n")
    check_now(lab)
    [request] = hook.requests
    assert request.document["path"] == "users/ana/churn/caf\\udce9.env"  # no lone surrogate for strict parsers
    request.body.decode("ascii")


def test_a_server_error_is_retried(bedrot_lake: Path, hook: Hook, caplog: pytest.LogCaptureFixture):
    lab = lake_with(bedrot_lake, hook.url())
    fill(bedrot_lake)
    hook.statuses = [500, 503]
    with caplog.at_level(logging.WARNING):
        result = check_now(lab)
    assert result.sink_failures == 0 and failures(caplog) == []
    assert len(hook.requests) == 3
    assert len({request.body for request in hook.requests}) == 1


def test_a_client_error_is_not_retried(bedrot_lake: Path, hook: Hook, caplog: pytest.LogCaptureFixture):
    lab = lake_with(bedrot_lake, hook.url())
    fill(bedrot_lake)
    hook.statuses = [400]
    with caplog.at_level(logging.WARNING):
        result = check_now(lab)
    assert result.sink_failures == 1 and len(hook.requests) == 1
    [record] = failures(caplog)
    assert record.getMessage() == (
        f"handle_violation of plugin 'daemon' raised WebhookError: http://127.0.0.1:{hook.port} answered "
        "400 Bad Request: invalid_payload; not retried (for quota.user user:ana)")


def test_a_webhook_that_is_down_does_not_stop_the_check(bedrot_lake: Path, caplog: pytest.LogCaptureFixture):
    port = closed_port()
    lab = lake_with(bedrot_lake, f"http://127.0.0.1:{port}/hook")
    fill(bedrot_lake)
    with caplog.at_level(logging.WARNING):
        result = check_now(lab)
    assert [t.kind for t in result.transitions] == ["new"] and result.sink_failures == 1
    [record] = failures(caplog)
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert record.getMessage().startswith(
        f"handle_violation of plugin 'daemon' raised WebhookError: http://127.0.0.1:{port} failed 3 tries, the "
        "last: ConnectionRefusedError: [Errno 111] Connection refused; alerts to it fail at once for 60 s")
    assert "Traceback" not in caplog.text
    assert len((lab.settings.state_dir / "violations.jsonl").read_text().splitlines()) == 1  # the log sink ran


def test_a_failing_webhook_is_tried_once_per_check_not_once_per_transition(bedrot_lake: Path, hook: Hook,
                                                                            caplog: pytest.LogCaptureFixture):
    lab = lake_with(bedrot_lake, hook.url())
    fill(bedrot_lake)
    for name in ("a.txt", "b.txt"):
        fill(bedrot_lake, name, 0).write_text(f"key = {fake_aws_key()}\n")
    hook.statuses = [502] * 10
    with caplog.at_level(logging.WARNING):
        result = check_now(lab)
    assert len(result.transitions) == 3 and result.sink_failures == 3  # the quota, two secrets
    assert len(hook.requests) == alerts.ATTEMPTS
    messages = [record.getMessage() for record in failures(caplog)]
    assert "answered 502 Bad Gateway: invalid_payload; alerts to it fail at once" in messages[0]
    assert all("failed every try; trying it again in 60 s" in message for message in messages[1:])


def test_the_webhook_password_is_sent_as_basic_auth_and_never_logged(bedrot_lake: Path, hook: Hook,
                                                                     caplog: pytest.LogCaptureFixture):
    password = "pw-" + fake_aws_key()[4:].lower()
    lab = lake_with(bedrot_lake, hook.url(f"alert%40lab:{password}@"))
    fill(bedrot_lake)
    hook.statuses = [500] * 3
    with caplog.at_level(logging.DEBUG):
        assert check_now(lab).sink_failures == 1
    assert password not in caplog.text
    assert all(password not in record.getMessage() for record in caplog.records)
    [record] = failures(caplog)
    assert f"http://127.0.0.1:{hook.port} failed 3 tries" in record.getMessage()
    sent = {request.headers["Authorization"] for request in hook.requests}
    assert sent == {"Basic " + base64.b64encode(f"alert@lab:{password}".encode()).decode()}
    assert all(password.encode() not in request.body for request in hook.requests)


def test_the_command_line_says_it_in_one_line_and_never_shows_the_password(bedrot_lake: Path, cli_env: dict,
                                                                           write_plugin):
    write_plugin("quick_retries", "from bedrot_lab.daemon import alerts\nalerts.BACKOFF = 0.01\n")
    password, token = "pw-" + fake_aws_key()[4:].lower(), fake_aws_key()[4:]
    port = closed_port()
    lake_with(bedrot_lake, f"http://alerts:{password}@127.0.0.1:{port}/services/T0/{token}")  # a Slack-style path
    data = fill(bedrot_lake)
    quiet = bedrot("sandbox", "check", env=cli_env)
    assert quiet.returncode == 1  # the hard quota, not the webhook
    assert password not in quiet.stdout + quiet.stderr and token not in quiet.stdout + quiet.stderr
    [error] = [line for line in quiet.stderr.splitlines() if line.startswith("ERROR")]
    assert error.startswith(f"ERROR bedrot_lab.plugins: handle_violation of plugin 'daemon' raised WebhookError: "
                            f"http://127.0.0.1:{port} failed 3 tries")
    assert "Traceback" not in quiet.stderr

    data.unlink()  # a resolved violation: a transition to alert again, now with every hook call traced
    traced = bedrot("--debug", "sandbox", "check", env={**cli_env, "BEDROT_LAB_TRACE_PLUGINS": "1"})
    assert traced.returncode == 0
    assert "Traceback" in traced.stderr and "handle_violation" in traced.stderr
    assert password not in traced.stdout + traced.stderr
