"""Approvals: following a flow run that waits for a person, and answering it.

A run that asks for approval pauses (Prefect's Paused state): its decision is then `awaiting`
approval until someone answers, through Responder (`answer`, with the operator's name) or in
the Prefect UI (the approver typed there, read back from the run's input, marked as such).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID

from responder.control.leases import FINAL_STATES
from responder.exceptions import ApprovalError, DispatchError
from responder.storage.approvals import ANSWERING, APPROVED, AWAITING, REJECTED, UNANSWERED
from responder.storage.store import Store

log = logging.getLogger(__name__)

# How an answer reached the run, as the decision log records it.
VIA_API = "responder API"
VIA_PREFECT_UI = "Prefect UI"


class Approvals:
    """The runs waiting for a person, as Prefect reports them, and the answers given."""

    def __init__(
        self, store: Store, prefect: Callable[[], AbstractAsyncContextManager[Any]]
    ) -> None:
        self._store = store
        self._prefect = prefect  # a Prefect client, as the dispatcher lends it
        # Flow runs paused for approval: their next state tells that someone answered.
        self.awaiting: set[str] = set()

    async def resume_watch(self) -> None:
        """At start: follow the runs that wait again. An answer cut short by a stop is
        judged again from the run's own input."""
        for row in await self._store.approvals.awaiting():
            await self._store.approvals.set(row["flow_run_id"], AWAITING, (ANSWERING,))
            self.awaiting.add(row["flow_run_id"])

    async def answer(
        self, flow_run_id: str, approved: bool, by: str, comment: str
    ) -> dict[str, Any]:
        """Approve or reject a run that waits, as operator `by`; what the log records.

        `ApprovalError` when the run does not wait (anymore), `DispatchError` when Prefect
        refuses the answer or cannot be reached (the run still waits then).
        """
        if not await self._store.approvals.set(flow_run_id, ANSWERING, (AWAITING,)):
            raise ApprovalError(f"flow run {flow_run_id} is not awaiting approval")
        run_input = {"approved": approved, "approver": by, "comment": comment}
        try:
            async with self._prefect() as client:
                result = await client.resume_flow_run(UUID(flow_run_id), run_input=run_input)
            status = getattr(result.status, "value", str(result.status))
            if status != "ACCEPT":
                reason = getattr(result.details, "reason", None) or status
                raise DispatchError(f"Prefect did not resume flow run {flow_run_id}: {reason}")
        except Exception as exc:
            await self._store.approvals.set(flow_run_id, AWAITING, (ANSWERING,))
            # Answered in the Prefect UI meanwhile? Then its answer is the one to record.
            with contextlib.suppress(Exception):
                await self._answered_elsewhere(flow_run_id, final=False)
            if isinstance(exc, DispatchError):
                raise
            raise DispatchError(f"Prefect could not be asked to resume: {exc}") from exc
        approval = {
            "by": by,
            "via": VIA_API,
            "approved": approved,
            "comment": comment,
            "at": time.time(),
        }
        await self._store.approvals.set(
            flow_run_id, APPROVED if approved else REJECTED, (ANSWERING,), approval
        )
        self.awaiting.discard(flow_run_id)
        log.warning(
            "flow run %s %s by %s: %s",
            flow_run_id,
            "approved" if approved else "rejected",
            by,
            comment or "-",
        )
        return approval

    async def seen(self, flow_run_id: str, state_type: str) -> None:
        """Follow a run into and out of its wait for approval."""
        paused = state_type == "PAUSED"
        if paused == (flow_run_id in self.awaiting):
            return  # nothing new
        try:
            if not paused:
                await self._answered_elsewhere(flow_run_id, final=state_type in FINAL_STATES)
            # Also after an earlier approval: a flow may ask more than once.
            elif await self._store.approvals.set(
                flow_run_id, AWAITING, (None, APPROVED), {"since": time.time()}
            ):
                self.awaiting.add(flow_run_id)
        except Exception as exc:  # the next state or poll tries again
            log.warning("approval of flow run %s not followed: %s", flow_run_id, exc)

    async def _answered_elsewhere(self, flow_run_id: str, *, final: bool) -> None:
        """Record an answer given in the Prefect UI: the approver as typed there."""
        async with self._prefect() as client:
            inputs = await client.filter_flow_run_input(
                UUID(flow_run_id), key_prefix="paused-", limit=100, exclude_keys=set()
            )
        responses = sorted(
            (i for i in inputs if i.key.endswith("-response")), key=lambda i: i.created or 0
        )
        if not responses:
            if final and await self._store.approvals.set(flow_run_id, UNANSWERED, (AWAITING,)):
                self.awaiting.discard(flow_run_id)
            return
        try:
            answer = json.loads(responses[-1].value)
            approved = answer.get("approved") is True
        except (ValueError, AttributeError):
            answer, approved = {}, False
        approval = {
            "by": str(answer.get("approver") or "-")[:200],
            "via": VIA_PREFECT_UI,
            "approved": approved,
            "comment": str(answer.get("comment") or "")[:2000],
            "at": time.time(),
        }
        state = APPROVED if approved else REJECTED
        # Not over an answer this API is giving (`answering`): that one records itself.
        if await self._store.approvals.set(flow_run_id, state, (AWAITING,), approval):
            log.warning(
                "flow run %s %s in the Prefect UI by %r", flow_run_id, state, approval["by"]
            )
        self.awaiting.discard(flow_run_id)
