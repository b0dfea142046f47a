"""Alert delivery: one POST per event to the configured webhook (DESIGN §5, Alerts).

* Generic URL: the body is the event's JSON (compact, UTF-8).
* Slack incoming webhook (host ``hooks.slack.com``): ``{"text": "<one line>"}`` built from the
  event's fields alone (never an amount).
* With a secret, every POST carries ``X-Recon-Signature: sha256=<hex>``, the HMAC-SHA256 of the
  exact body bytes sent.

One POST per event (not a batch): a receiver deduplicates and routes each break on its own,
and a Slack message stays one line. A transient failure (timeout, connection error, 5xx, 429)
is retried ``retries`` times with backoff 0.5, 1, 2 … seconds; any other answer (3xx, 4xx) is
final. Then the event is logged at WARNING and given up: :meth:`WebhookAlerts.send` never
raises. Once one event of a batch has used up its retries, the batch's remaining events get
one attempt each (a dead webhook costs a cycle one retry series, not one per event).

Logs name the host only — never the URL's path or query (a Slack URL's path is its secret),
never the body, never the secret.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

import httpx

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Recon-Signature"
SLACK_HOST: Final = "hooks.slack.com"
#: Seconds before the first retry; doubled each time.
FIRST_BACKOFF: Final = 0.5


def sign(secret: str, body: bytes) -> str:
    """The ``X-Recon-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def is_slack_url(url: str) -> bool:
    """True for a Slack incoming-webhook URL (host ``hooks.slack.com``)."""
    return (urlsplit(url).hostname or "").lower() == SLACK_HOST


def slack_text(event: Mapping[str, str]) -> str:
    """One line describing ``event``, from its non-amount fields only."""
    verb = "RESOLVED" if event.get("event") == "resolved" else "OPENED"
    return (
        f"[recon] {verb} {event.get('severity', '')} {event.get('type', '')} "
        f"account={event.get('account_id', '')} exchange={event.get('exchange', '')} "
        f"asset={event.get('asset', '')} reconciliation={event.get('reconciliation_id', '')} "
        f"cycle={event.get('cycle_id', '')} at={event.get('at', '')}"
    )


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    REJECTED = "rejected"  # a final answer (3xx, 4xx other than 429)
    UNREACHABLE = "unreachable"  # transient failures until the retries ran out


def _is_transient(response: httpx.Response) -> bool:
    return response.status_code >= 500 or response.status_code == 429


class WebhookAlerts:
    """Posts alert events to one webhook; never raises into the caller."""

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        *,
        secret: str | None,
        timeout: float,
        retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self._http = http
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._retries = retries
        self._sleep = sleep
        self._slack = is_slack_url(url)
        parts = urlsplit(url)
        #: What logs may name: scheme and host, never path, query or credentials.
        self._where = f"{parts.scheme}://{parts.hostname or '?'}"

    def body(self, event: Mapping[str, str]) -> bytes:
        """The exact bytes posted for ``event``."""
        payload: Mapping[str, str] = {"text": slack_text(event)} if self._slack else event
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    def headers(self, body: bytes) -> dict[str, str]:
        """The request headers for ``body`` (the signature when a secret is set)."""
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        return headers

    def send(self, events: Sequence[Mapping[str, str]]) -> int:
        """Post every event; returns how many were delivered (2xx). Never raises."""
        delivered = 0
        retries = self._retries
        for event in events:
            try:
                outcome = self._post(event, retries)
                if outcome is _Outcome.DELIVERED:
                    delivered += 1
                elif outcome is _Outcome.UNREACHABLE:
                    # The webhook looks down: the rest of this batch gets one attempt each, so
                    # a dead webhook costs the cycle one retry series, not one per event.
                    retries = 0
            except Exception as exc:  # noqa: BLE001  (delivery must never fail the cycle)
                log.warning(
                    "alert delivery failed: webhook=%s event=%s error=%s",
                    self._where,
                    event.get("event", "?"),
                    type(exc).__name__,
                )
        return delivered

    def _post(self, event: Mapping[str, str], retries: int) -> _Outcome:
        body = self.body(event)
        headers = self.headers(body)
        delay = FIRST_BACKOFF
        attempts = retries + 1
        for attempt in range(1, attempts + 1):
            reason: str
            try:
                response = self._http.post(
                    self._url, content=body, headers=headers, timeout=self._timeout
                )
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.TransportError as exc:
                reason = type(exc).__name__
            else:
                if response.is_success:
                    return _Outcome.DELIVERED
                reason = f"HTTP {response.status_code}"
                if not _is_transient(response):
                    log.warning(
                        "alert rejected, not retried: webhook=%s event=%s account=%s %s",
                        self._where,
                        event.get("event", "?"),
                        event.get("account_id", "?"),
                        reason,
                    )
                    return _Outcome.REJECTED
            if attempt < attempts:
                log.info(
                    "alert delivery failed, retrying: webhook=%s attempt=%d delay_s=%.1f %s",
                    self._where,
                    attempt,
                    delay,
                    reason,
                )
                self._sleep(delay)
                delay *= 2
            else:
                log.warning(
                    "alert given up after %d attempts: webhook=%s event=%s account=%s %s",
                    attempts,
                    self._where,
                    event.get("event", "?"),
                    event.get("account_id", "?"),
                    reason,
                )
        return _Outcome.UNREACHABLE


__all__ = ["SIGNATURE_HEADER", "WebhookAlerts", "is_slack_url", "sign", "slack_text"]
