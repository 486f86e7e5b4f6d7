"""`notify`: tell people what a flow did, through Apprise (Slack, PagerDuty, e-mail, webhooks).

An Apprise URL carries the credentials of its service (`slack://TokenA/TokenB/TokenC`), so a
target is the *name* of a secret holding the URL (see `flows.secrets`), and the URL never
appears in parameters, exceptions or logs, Apprise's own logs included.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal
from urllib.parse import quote, unquote

import apprise
from prefect import get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from flows.errors import OperationFailed
from flows.operations import operation
from flows.secrets import SecretName, read_secret

# Parts of a URL at least this long are masked in Apprise's log messages.
MASKED_PART_LENGTH = 4
MASK = "***"
# Apprise logs the URLs it calls at debug level, and so does urllib3 under its HTTP plugins.
REDACTED_LOGGERS = ("apprise", "urllib3.connectionpool")


class Notification(BaseModel):
    """Parameters of the `notify` operation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: list[SecretName] = Field(
        min_length=1,
        max_length=20,
        description="Secret names (FLOW_SECRET_* or prefect:<block>), each holding an Apprise "
        "URL such as slack://…, pagerduty://…, mailto://… or json://host:port/path.",
    )
    title: str = Field("", max_length=250)
    body: str = Field(min_length=1, max_length=10_000)
    severity: Literal["info", "success", "warning", "failure"] = "info"


class NotificationResult(BaseModel):
    """How many targets were notified; all of them were, or the operation failed."""

    targets: int
    delivered: bool


class NotificationFailed(OperationFailed):
    """A target was not notified, or its URL is not one Apprise understands (never the URL)."""


@operation("notify", risk="low", tags=["notify"], retries=2, retry_delays=(2, 10))
def notify(params: Notification) -> NotificationResult:
    """Send one message to every target; fail unless Apprise delivered it to all of them.

    Every secret is read and every URL understood before anything is sent. A delivery failure
    is retried, and a retry notifies every target again.
    """
    urls = {name: read_secret(name) for name in params.targets}
    with _redacted_apprise_logs(urls.values()) as redactor:
        services = {name: _service(name, url) for name, url in urls.items()}
        failed = [
            f"{name}: {redactor.mask(why)}"
            for name, service in services.items()
            if (why := _send(service, params))
        ]
    if failed:
        raise NotificationFailed(
            f"{len(failed)} of {len(urls)} targets not notified: {'; '.join(failed)}",
            transient=True,
        )
    get_run_logger().info("notified %d targets: %s", len(urls), ", ".join(urls))
    return NotificationResult(targets=len(urls), delivered=True)


def _service(name: str, url: str) -> apprise.Apprise:
    """An Apprise instance for one target URL; refuses (naming the secret) what it cannot parse."""
    service = apprise.Apprise(asset=apprise.AppriseAsset(secure_logging=True))
    if not service.add(url):
        raise NotificationFailed(
            f"{name} does not hold an Apprise URL that Apprise understands", transient=False
        )
    return service


def _send(service: apprise.Apprise, params: Notification) -> str:
    """Notify one target; the empty string when delivered, else why not (may hold URL parts)."""
    try:
        result = service.notify(
            body=params.body, title=params.title, notify_type=apprise.NotifyType(params.severity)
        )
    except Exception as exc:  # Apprise handles delivery errors; anything else is a bug there.
        return f"Apprise failed: {type(exc).__name__}: {exc}"
    if result:
        return ""
    reasons = [entry.message for entry in result.logs()]
    return f"{result.status.name}: {' '.join(reasons) or 'no reason given'}"


@contextmanager
def _redacted_apprise_logs(urls: Iterable[str]) -> Iterator[_Redactor]:
    """While inside, what Apprise and urllib3 log has these URLs (and their parts) masked."""
    redactor = _Redactor(urls)
    loggers = [logging.getLogger(name) for name in REDACTED_LOGGERS]
    for logger in loggers:
        logger.addFilter(redactor)
    try:
        yield redactor
    finally:
        for logger in loggers:
            logger.removeFilter(redactor)


class _Redactor(logging.Filter):
    """Masks secret URLs, and every part of them, in log records and in strings."""

    def __init__(self, urls: Iterable[str]) -> None:
        super().__init__()
        fragments: set[str] = set()
        for url in urls:
            parts = re.split(r"[/:@?&=#,;+\s]+", url.split("://", 1)[-1])
            for text in (url, *parts):
                fragments.update({text, quote(text, safe=""), unquote(text)})
        self.fragments = sorted(
            (f for f in fragments if len(f) >= MASKED_PART_LENGTH), key=len, reverse=True
        )

    def mask(self, text: str) -> str:
        """The text with every URL part replaced by the mask."""
        for fragment in self.fragments:
            text = text.replace(fragment, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
