"""Fencing, the flow's side: before a step changes something, ask Responder whether the run
may still act (`responder.control.fencing` says what is checked, and why).

Every operation whose risk is not `read` calls `check_before_acting` first (the `operation`
decorator puts the call in), and every remediation flow is `fenced`: a refusal ends the run
CANCELLED with the reason as its state's message, which Responder records in the decision
log. A call that only reads (an HTTP GET) asks nothing.

The worker's environment, never the run, says where Responder is: `RESPONDER_URL` (its base
URL), `RESPONDER_TOKEN` (an operator token; any role), `RESPONDER_CA_FILE` (to verify
Responder's certificate, if not a public CA's). `responder up` sets them for its runner.
`RESPONDER_FENCING=off` turns the check off, for flows run outside Responder (tests, a
laptop); a worker of Responder never has it.

When Responder cannot answer, the step does not act: it asks again with backoff
(`ATTEMPT_DELAYS`), then fails the run (fail closed).
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, get_type_hints

import httpx

from flows.errors import Fenced, FencingUnavailable

URL_VARIABLE = "RESPONDER_URL"
TOKEN_VARIABLE = "RESPONDER_TOKEN"
CA_VARIABLE = "RESPONDER_CA_FILE"
SWITCH_VARIABLE = "RESPONDER_FENCING"
TOKEN_TAG = "decision:"
# Seconds to wait before each further attempt when Responder cannot answer (or is still
# recording the run): about 15 s in all, then the run fails.
ATTEMPT_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
TIMEOUT_SECONDS = 5.0
NOT_STARTED = (
    "not started by Responder: this run carries no decision token (it was started from "
    "Prefect's UI or API, or by a schedule); start it through the guard with `responder run`"
)

P = ParamSpec("P")
R = TypeVar("R")


def enabled() -> bool:
    return os.environ.get(SWITCH_VARIABLE, "on").strip().lower() != "off"


def _run() -> tuple[str, list[str]] | None:
    """This flow run's id and tags; None outside a flow run (a task called by itself)."""
    from prefect.context import FlowRunContext, TaskRunContext

    flow_context = FlowRunContext.get()
    if flow_context is not None and flow_context.flow_run is not None:
        return str(flow_context.flow_run.id), list(flow_context.flow_run.tags)
    task_context = TaskRunContext.get()
    if task_context is None or task_context.task_run.flow_run_id is None:
        return None
    from prefect import runtime

    return str(task_context.task_run.flow_run_id), list(runtime.flow_run.tags)


def token(tags: list[str]) -> int | None:
    """The decision id a run carries in its `decision:<id>` tag (`orchestration.story`)."""
    for tag in tags:
        if tag.startswith(TOKEN_TAG) and tag[len(TOKEN_TAG) :].isdigit():
            return int(tag[len(TOKEN_TAG) :])
    return None


def check_before_acting(what: str) -> None:
    """Return if this run may act now; raise `Fenced` (it may not) or `FencingUnavailable`."""
    if not enabled():
        return
    run = _run()
    if run is None:
        return  # no flow run: code calling an operation itself, not a remediation run
    flow_run_id, tags = run
    decision_id = token(tags)
    if decision_id is None:
        raise Fenced(NOT_STARTED)
    url = os.environ.get(URL_VARIABLE, "").strip()
    if not url:
        raise FencingUnavailable(
            f"{what} did not act: {URL_VARIABLE} is not set on this worker, so it cannot ask "
            "Responder whether the run may act (docs/guard.md, Fencing)"
        )
    ask(url, decision_id, flow_run_id, what)


def ask(url: str, decision_id: int, flow_run_id: str, what: str) -> None:
    """One fencing check, asked again with backoff while Responder cannot answer."""
    # One client per process: building its TLS context costs more than the check itself.
    client = _client(
        os.environ.get(TOKEN_VARIABLE) or "",
        os.environ.get(CA_VARIABLE) or "",
        url.lower().startswith("https:"),
    )
    body = {"decision_id": decision_id, "flow_run_id": flow_run_id}
    problem = ""
    for delay in (0.0, *ATTEMPT_DELAYS):
        time.sleep(delay)
        try:
            response = client.post(f"{url.rstrip('/')}/api/v1/fencing", json=body)
        except httpx.HTTPError as exc:
            problem = f"Responder at {url} unreachable: {exc}"
            continue
        if response.status_code != 200:
            problem = f"Responder answered {response.status_code}: {response.text[:300]}"
            if response.status_code in (401, 403, 422):
                break  # asking again will not change that
            continue
        answer = response.json()
        if answer.get("act") is True:
            return
        problem = str(answer.get("message") or "no reason given")
        if not answer.get("again"):
            raise Fenced(problem)
    raise FencingUnavailable(f"{what} did not act: {problem}")


@functools.cache
def _client(token: str, ca_file: str, https: bool) -> httpx.Client:
    """The HTTP client of this process's checks (thread-safe: tasks run in threads). Over
    plain HTTP no certificate is read (loading the CA bundle costs tens of milliseconds)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    verify: str | bool = (ca_file or True) if https else False
    return httpx.Client(timeout=TIMEOUT_SECONDS, headers=headers, verify=verify)


def fenced(flow_function: Callable[P, R]) -> Callable[P, R | Any]:
    """A flow function whose run ends CANCELLED, with the reason, when a step is fenced."""

    @functools.wraps(flow_function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R | Any:
        from prefect.states import Cancelled

        try:
            return flow_function(*args, **kwargs)
        except Fenced as refusal:
            return Cancelled(message=str(refusal))

    # Prefect validates a run's parameters against the signature, resolving annotations in
    # the function's module: give it them resolved, as the flow's module knows them.
    run.__signature__ = inspect.signature(flow_function, eval_str=True)  # type: ignore[attr-defined]
    run.__annotations__ = get_type_hints(flow_function, include_extras=True)
    return run
