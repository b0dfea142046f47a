"""Webhook delivery (DESIGN §5, Alerts): signed JSON or Slack text, retried, never raising."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterator

import httpx
import pytest

from infra.alerts import SIGNATURE_HEADER, WebhookAlerts, is_slack_url, sign

SECRET = "s3cr3t-hmac-key"
URL = "https://alerts.example.test/hooks/recon?token=querytoken42"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/slackpathsecret99"
EVENT = {
    "event": "opened",
    "account_id": "cb-main",
    "exchange": "coinbase",
    "asset": "BTC",
    "type": "mismatch",
    "severity": "WARNING",
    "reconciliation_id": "r1",
    "cycle_id": "c1",
    "at": "2026-11-24T00:01:00Z",
}

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler answering from a list of responses (the last one repeats)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client(handler: Handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.fixture
def make(sleeps: list[float]) -> Iterator[Callable[..., tuple[WebhookAlerts, Recorder]]]:
    clients: list[httpx.Client] = []

    def build(
        *answers: int | Exception, url: str = URL, secret: str | None = SECRET, retries: int = 3
    ) -> tuple[WebhookAlerts, Recorder]:
        recorder = Recorder(*answers)
        http = client(recorder)
        clients.append(http)
        alerts = WebhookAlerts(
            http, url, secret=secret, timeout=2.0, retries=retries, sleep=sleeps.append
        )
        return alerts, recorder

    yield build
    for http in clients:
        http.close()


def test_generic_body_is_the_event_and_signature_verifies(
    make: Callable[..., tuple[WebhookAlerts, Recorder]],
) -> None:
    """The POST body is the event's JSON; its signature is the HMAC-SHA256 of those exact bytes."""
    alerts, recorder = make(200)
    assert alerts.send([EVENT]) == 1
    (request,) = recorder.requests
    assert request.method == "POST"
    assert json.loads(request.content) == EVENT
    expected = "sha256=" + hmac.new(SECRET.encode(), request.content, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
    assert request.headers["Content-Type"] == "application/json"
    assert SECRET not in request.content.decode()


def test_no_signature_without_a_secret(make: Callable[..., tuple[WebhookAlerts, Recorder]]) -> None:
    """Without a secret the POST carries no signature header."""
    alerts, recorder = make(204, secret=None)
    alerts.send([EVENT])
    assert SIGNATURE_HEADER not in recorder.requests[0].headers


def test_one_post_per_event(make: Callable[..., tuple[WebhookAlerts, Recorder]]) -> None:
    """Each event is its own POST, in order."""
    alerts, recorder = make(200)
    resolved = {**EVENT, "event": "resolved"}
    assert alerts.send([EVENT, resolved]) == 2
    assert [json.loads(r.content)["event"] for r in recorder.requests] == ["opened", "resolved"]


def test_slack_url_gets_one_text_line(make: Callable[..., tuple[WebhookAlerts, Recorder]]) -> None:
    """A hooks.slack.com URL gets {"text": one line} naming the break, still signed."""
    assert is_slack_url(SLACK_URL)
    assert not is_slack_url(URL)
    alerts, recorder = make(200, url=SLACK_URL)
    alerts.send([EVENT])
    request = recorder.requests[0]
    body = json.loads(request.content)
    assert list(body) == ["text"]
    assert "\n" not in body["text"]
    for word in ("OPENED", "WARNING", "mismatch", "cb-main", "coinbase", "BTC", "c1"):
        assert word in body["text"]
    assert request.headers[SIGNATURE_HEADER] == sign(SECRET, request.content)


@pytest.mark.parametrize(
    "failure",
    [500, 503, 429, httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
    ids=["500", "503", "429", "connect", "timeout"],
)
def test_transient_failures_are_retried_with_backoff(
    make: Callable[..., tuple[WebhookAlerts, Recorder]],
    sleeps: list[float],
    failure: int | Exception,
) -> None:
    """Timeouts, connection errors, 5xx and 429 are retried (0.5, 1 s …) until one succeeds."""
    alerts, recorder = make(failure, failure, 200)
    assert alerts.send([EVENT]) == 1
    assert len(recorder.requests) == 3
    assert sleeps == [0.5, 1.0]
    assert len({r.content for r in recorder.requests}) == 1  # the same signed bytes each time


def test_gives_up_after_the_retries_without_raising(
    make: Callable[..., tuple[WebhookAlerts, Recorder]],
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After 1 + retries attempts the event is logged at WARNING and dropped; send returns."""
    caplog.set_level(logging.INFO, logger="infra.alerts.webhook")
    alerts, recorder = make(503)
    assert alerts.send([EVENT]) == 0
    assert len(recorder.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "alerts.example.test" in caplog.text
    for hidden in ("querytoken42", "/hooks/recon", SECRET, '"asset"'):
        assert hidden not in caplog.text


def test_client_errors_are_not_retried(
    make: Callable[..., tuple[WebhookAlerts, Recorder]], sleeps: list[float]
) -> None:
    """A 4xx other than 429 is final: one attempt, no sleep, no exception."""
    alerts, recorder = make(404)
    assert alerts.send([EVENT]) == 0
    assert len(recorder.requests) == 1
    assert sleeps == []


def test_unexpected_errors_never_escape(
    make: Callable[..., tuple[WebhookAlerts, Recorder]], caplog: pytest.LogCaptureFixture
) -> None:
    """Any exception from delivery (even a bug-like one) is logged, not raised; the URL's
    secret path stays out of the log."""
    alerts, recorder = make(RuntimeError("boom"), 200, url=SLACK_URL)
    assert alerts.send([EVENT, EVENT]) == 1
    assert len(recorder.requests) == 2
    assert "slackpathsecret99" not in caplog.text
    assert "RuntimeError" in caplog.text


def test_negative_retries_rejected() -> None:
    """A negative retry count is a configuration error."""
    with httpx.Client() as http, pytest.raises(ValueError, match="retries"):
        WebhookAlerts(http, URL, secret=None, timeout=1.0, retries=-1)


def test_dead_webhook_costs_one_retry_series_per_batch(
    make: Callable[..., tuple[WebhookAlerts, Recorder]], sleeps: list[float]
) -> None:
    """After one event exhausts its retries, the rest of the batch is tried once each."""
    alerts, recorder = make(503)
    assert alerts.send([EVENT, EVENT, EVENT]) == 0
    assert len(recorder.requests) == 4 + 1 + 1
    assert sleeps == [0.5, 1.0, 2.0]
