"""`approval`: a flow run waits for a person's answer, from `responder approve`/`reject` (which
resume it with the operator's name as `approver`) or from the Prefect UI's Resume form.

Approval is not a task: it pauses the whole flow run, which keeps its guard key and mutexes
while it waits (Prefect reports it as Paused, so Responder renews its leases).
"""

from __future__ import annotations

from prefect import State, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Cancelled
from pydantic import Field


class ApprovalInput(RunInput):
    """What a person answers in the Prefect UI when a remediation asks for approval."""

    approved: bool
    approver: str = Field(min_length=1, max_length=200)
    comment: str = Field("", max_length=2000)


def require_approval(what: str, timeout_seconds: int) -> ApprovalInput:
    """Pause the flow run until a person approves or rejects it in the Prefect UI.

    Without an answer within `timeout_seconds` the run fails.
    """
    get_run_logger().info("waiting for approval: %s", what)
    answer = pause_flow_run(
        wait_for_input=ApprovalInput.with_initial_data(
            description=f"Approve this remediation? {what}", approved=False
        ),
        timeout=timeout_seconds,
        poll_interval=2,
    )
    get_run_logger().info(
        "%s by %s: %s",
        "approved" if answer.approved else "rejected",
        answer.approver,
        answer.comment,
    )
    return answer


def rejected(answer: ApprovalInput) -> State:
    """The final state of a run a person rejected: Cancelled, saying who and why."""
    return Cancelled(message=f"rejected by {answer.approver}: {answer.comment or '-'}")
