"""The flow's side of fencing (`flows.fencing.ask`) against a real HTTP server playing
Responder's answers: it acts on `act`, stops on a refusal, asks again while Responder cannot
answer, and fails closed when it never can."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from flows import fencing
from flows.errors import Fenced, FencingUnavailable
from flows.fencing import ask, token
from tests.helpers import free_port
from tests.servers import QuietHandler, http_server

RUN = "0b7e4a9c-58f4-4c8e-9a43-8e1f5d6c2a10"


class Script:
    """The answers to give, in order (the last one repeats), and the requests seen."""

    def __init__(self, *answers: tuple[int, dict[str, object]]) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[str, dict[str, object]]] = []
        self.lock = threading.Lock()


@pytest.fixture
def responder() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with script.lock:
                script.seen.append((self.headers.get("authorization", ""), body))
                status, answer = script.answers[0]
                if len(script.answers) > 1:
                    script.answers.pop(0)
            self.reply(status, json.dumps(answer).encode(), "application/json")

    with http_server(Handler) as url:
        yield url, script


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fencing, "ATTEMPT_DELAYS", (0.0, 0.0, 0.0))
    monkeypatch.setenv("RESPONDER_TOKEN", "runner-secret")
    fencing._client.cache_clear()


ACT = (200, {"act": True, "refusal": None, "message": "", "again": False})


def test_the_run_acts_when_responder_says_so_and_sends_its_token(
    responder: tuple[str, Script],
) -> None:
    url, script = responder
    script.answers = [ACT]
    ask(url, 7, RUN, "http.request")
    assert script.seen == [
        ("Bearer runner-secret", {"decision_id": 7, "flow_run_id": RUN}),
    ]


def test_a_refusal_stops_the_step_with_responders_reason(responder: tuple[str, Script]) -> None:
    url, script = responder
    message = "lease lost: decision 7 no longer holds key 'k'"
    script.answers = [(200, {"act": False, "refusal": "lease lost", "message": message})]
    with pytest.raises(Fenced, match=r"^lease lost: decision 7"):
        ask(url, 7, RUN, "http.request")
    assert len(script.seen) == 1


def test_a_run_being_recorded_and_an_unavailable_store_are_asked_again(
    responder: tuple[str, Script],
) -> None:
    url, script = responder
    again = (200, {"act": False, "refusal": None, "message": "being recorded", "again": True})
    script.answers = [again, (503, {"error": "store unavailable"}), ACT]
    ask(url, 7, RUN, "http.request")
    assert len(script.seen) == 3


def test_responder_that_never_answers_fails_the_step_closed(
    responder: tuple[str, Script],
) -> None:
    url, script = responder
    script.answers = [(503, {"error": "store unavailable"})]
    with pytest.raises(
        FencingUnavailable, match=r"http\.request did not act: Responder answered 503"
    ):
        ask(url, 7, RUN, "http.request")
    assert len(script.seen) == 4  # the first try and one per delay
    with pytest.raises(FencingUnavailable, match="unreachable"):
        ask(f"http://127.0.0.1:{free_port()}", 7, RUN, "http.request")


def test_a_wrong_token_fails_at_once(responder: tuple[str, Script]) -> None:
    url, script = responder
    script.answers = [(401, {"error": "missing or invalid credentials"})]
    with pytest.raises(FencingUnavailable, match="answered 401"):
        ask(url, 7, RUN, "http.request")
    assert len(script.seen) == 1


def test_the_token_is_the_decision_tag() -> None:
    assert token(["responder", "rule:r", "decision:42", "key:k"]) == 42
    assert token(["responder", "decision:4x2", "decision:"]) is None
    assert token([]) is None
