"""`http.request` against a real local HTTP server, run as a flow step on the test Prefect
server: an action (a POST) is never sent twice by the operation's own retries."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from prefect import flow

from flows.operations.http import HttpFailed, HttpRequest, HttpResponse, OutcomeUnknown
from flows.operations.http import http_request as http_request_task
from tests.servers import QuietHandler, http_server

pytestmark = pytest.mark.prefect


@dataclass
class Target:
    """A local HTTP target: what it got, how long it waits and what it answers."""

    url: str = ""
    delay: float = 0.0
    status: int = 200
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def target() -> Iterator[Target]:
    state = Target()

    class Handler(QuietHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            state.requests.append((self.command, dict(self.headers)))
            time.sleep(state.delay)
            with contextlib.suppress(OSError):  # the client may have given up waiting
                self.reply(state.status, b"{}", "application/json")

        do_GET = do_POST = answer

    with http_server(Handler) as url:
        state.url = url
        yield state


@flow(name="http-request-test")
def send(request: HttpRequest) -> HttpResponse:
    return http_request_task(request)  # type: ignore[no-any-return]


def test_a_post_answered_after_its_timeout_is_sent_once_and_fails_as_unknown(
    target: Target, prefect_api_url: str
) -> None:
    target.delay = 2.0  # longer than the timeout: the restart may well have happened
    request = HttpRequest(method="POST", url=f"{target.url}/restart", timeout_seconds=0.5)

    with pytest.raises(OutcomeUnknown) as failure:
        send(request)

    time.sleep(target.delay)  # a retry would have arrived by now
    assert [method for method, _ in target.requests] == ["POST"]
    assert "outcome unknown" in str(failure.value)
    assert "verify before acting again" in str(failure.value)
    key = target.requests[0][1]["Idempotency-Key"]
    assert key.startswith("flow-run:")


def test_a_post_answered_503_is_not_retried_unless_declared_idempotent(
    target: Target, prefect_api_url: str
) -> None:
    target.status = 503
    with pytest.raises(HttpFailed, match="not retried: the request is not idempotent"):
        send(HttpRequest(method="POST", url=f"{target.url}/restart"))
    assert len(target.requests) == 1

    target.requests.clear()
    with pytest.raises(HttpFailed, match="answered 503"):
        send(HttpRequest(method="POST", url=f"{target.url}/restart", idempotent=True))
    # The first attempt and two retries, all with the one key the target can deduplicate by.
    assert len(target.requests) == 3
    assert len({headers["Idempotency-Key"] for _, headers in target.requests}) == 1


def test_a_read_that_times_out_is_retried(target: Target, prefect_api_url: str) -> None:
    target.delay = 1.0
    with pytest.raises(HttpFailed, match="ReadTimeout"):
        send(HttpRequest(url=f"{target.url}/health", timeout_seconds=0.2))
    assert [method for method, _ in target.requests] == ["GET"] * 3
    assert "Idempotency-Key" not in target.requests[0][1]


def test_each_request_is_logged_with_method_url_status_and_duration_secrets_masked(
    target: Target, prefect_api_url: str
) -> None:
    import httpx

    base = target.url.replace("http://", "http://ops:hunter2@")
    url = f"{base}/restart?host=h1&token=s3cret"
    state = send(HttpRequest(method="POST", url=url), return_state=True)  # type: ignore[call-overload]
    assert state.is_completed()

    def messages() -> list[str]:
        response = httpx.post(
            f"{prefect_api_url}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [str(state.state_details.flow_run_id)]}}},
        )
        response.raise_for_status()
        return [entry["message"] for entry in response.json()]

    deadline = time.monotonic() + 20
    while True:
        logged = messages()
        answered = [m for m in logged if "→ 200 in" in m]
        if answered:
            break
        assert time.monotonic() < deadline, logged
        time.sleep(0.5)
    [line] = answered
    assert line.startswith("POST http://***@127.0.0.1:")
    assert "/restart?host=h1&token=***" in line and line.endswith(" ms")
    assert not any("hunter2" in m or "s3cret" in m for m in logged)


def test_shown_url_masks_passwords_and_secret_looking_query_values() -> None:
    from flows.operations.http import shown_url

    assert shown_url("https://u:p@h/x?api_key=1&page=2&sig=3") == (
        "https://***@h/x?api_key=***&page=2&sig=***"
    )
    assert shown_url("https://TOKEN@h/x") == "https://***@h/x"
    assert shown_url("http://h:9/plain") == "http://h:9/plain"
