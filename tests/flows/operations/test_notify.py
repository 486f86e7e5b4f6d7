"""`notify` through Apprise to a real local webhook receiver, run as a flow step on the test
Prefect server. The Apprise URL carries a token: it must never reach an exception or a log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prefect import flow

from flows.operations.notify import (
    Notification,
    NotificationFailed,
    NotificationResult,
    notify,
)
from flows.secrets import MissingSecret
from tests.servers import QuietHandler, http_server

pytestmark = [
    pytest.mark.prefect,
    # Apprise loads its e-mail plugin lazily, which imports the stdlib's deprecated imghdr.
    pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning"),
]

USER, PASSWORD, TOKEN = "bot", "pa55w0rd-Xq7", "T0KEN-4f9c1e"


@dataclass
class Receiver:
    """A local webhook receiver: what it got, and the status it answers with."""

    url: str = ""
    status: int = 200
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def apprise_url(self) -> str:
        """An Apprise json:// URL for this receiver, with a password and a token in it."""
        return f"json://{USER}:{PASSWORD}@{self.url.removeprefix('http://')}/hooks/{TOKEN}"


@pytest.fixture
def receiver(prefect_api_url: str) -> Iterator[Receiver]:
    received = Receiver()

    class Hook(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.posts.append((self.path, json.loads(body)))
            self.reply(received.status)

    with http_server(Hook) as url:
        received.url = url
        yield received


@flow
def send(params: Notification) -> NotificationResult:
    """The operation as a flow step, retried at once (not after its real delays)."""
    return notify.with_options(retry_delay_seconds=0)(params)


def assert_never_shown(text: str, receiver: Receiver) -> None:
    for secret in (PASSWORD, TOKEN, receiver.apprise_url):
        assert secret not in text


def test_the_receiver_gets_title_body_and_type(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_SECRET_TEST_HOOK", receiver.apprise_url)

    result = send(
        Notification(
            targets=["FLOW_SECRET_TEST_HOOK"],
            title="checkout restarted",
            body="checkout on host-7 is healthy again",
            severity="success",
        )
    )

    assert result == NotificationResult(targets=1, delivered=True)
    [(path, payload)] = receiver.posts
    assert path == f"/hooks/{TOKEN}"
    assert payload["title"] == "checkout restarted"
    assert payload["message"] == "checkout on host-7 is healthy again"
    assert payload["type"] == "success"


def test_a_failed_delivery_is_retried_and_never_shows_the_url(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("FLOW_SECRET_TEST_HOOK", receiver.apprise_url)
    receiver.status = 500

    with pytest.raises(NotificationFailed) as failure:
        send(Notification(targets=["FLOW_SECRET_TEST_HOOK"], body="disk full", severity="failure"))

    message = str(failure.value)
    assert "FLOW_SECRET_TEST_HOOK" in message
    assert "error=500" in message
    assert len(receiver.posts) == 3  # the first attempt and two retries
    assert [payload["type"] for _, payload in receiver.posts] == ["failure"] * 3
    # Apprise and urllib3 log the URL they call at debug level: it must be masked.
    assert "JSON POST URL" in caplog.text
    assert "Retries are exhausted" in caplog.text
    assert_never_shown(message, receiver)
    assert_never_shown(caplog.text, receiver)


def test_a_url_apprise_does_not_understand_fails_at_once(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("FLOW_SECRET_TEST_HOOK", receiver.apprise_url)
    monkeypatch.setenv("FLOW_SECRET_BAD_HOOK", f"nosuchservice://{TOKEN}/{PASSWORD}")

    with pytest.raises(NotificationFailed) as failure:
        send(Notification(targets=["FLOW_SECRET_TEST_HOOK", "FLOW_SECRET_BAD_HOOK"], body="x"))

    assert str(failure.value) == (
        "FLOW_SECRET_BAD_HOOK does not hold an Apprise URL that Apprise understands"
    )
    assert not failure.value.transient
    assert "Retry" not in caplog.text
    assert receiver.posts == []  # the first target was not notified either
    assert_never_shown(caplog.text, receiver)


def test_a_missing_secret_fails_before_anything_is_sent(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_SECRET_TEST_HOOK", receiver.apprise_url)
    monkeypatch.delenv("FLOW_SECRET_MISSING_HOOK", raising=False)

    with pytest.raises(MissingSecret, match="FLOW_SECRET_MISSING_HOOK"):
        send(Notification(targets=["FLOW_SECRET_TEST_HOOK", "FLOW_SECRET_MISSING_HOOK"], body="x"))

    assert receiver.posts == []


def test_a_target_must_name_a_secret_not_hold_a_url() -> None:
    with pytest.raises(ValueError, match="should match pattern"):
        Notification(targets=["json://127.0.0.1/hooks/token"], body="x")
