"""Fencing: a flow run acts only while its decision holds the key and its alert needs it.

A remediation run carries its token, its decision's id (the `decision:<id>` tag the
dispatcher gives it). Decision ids grow, and a key is held by one decision at a time, so the
id that holds the key is the key's generation: a run whose decision lost the key cannot act
in the name of the decision that took it. Before every step that changes something, the
run asks Responder (`POST /api/v1/fencing`, one round trip, one store transaction), and
this module answers:

- the token names an admitted decision whose flow run is this run (not started by Responder
  otherwise: a run from Prefect's UI or API, a schedule, or a copied tag);
- the decision has not ended (a Retry of a finished run ends here);
- the decision still holds its key (lease lost otherwise: Responder ended it as lost, its
  lease expired, and the key was freed; or another decision holds the key now);
- its incident still fires, unless its policy lets it act after the resolution
  (`act_when_resolved`: the rule says so, the decision answers a resolution, or it was
  started by hand).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from responder.control.guard import key_name
from responder.control.policy import RunPolicy
from responder.storage.store import Store

log = logging.getLogger(__name__)

ADMITTED = "admitted"
RUN_COMMAND = "start it through the guard with `responder run`"
# Final states Responder gives a decision whose run it lost track of: its key was freed
# while the run may still be going.
LOST_STATES = frozenset({"EXPIRED"})


class Refusal(StrEnum):
    """Why a run may not act; the first words of its CANCELLED state's message."""

    NOT_STARTED = "not started by Responder"
    ENDED = "decision ended"
    LEASE_LOST = "lease lost"
    RESOLVED = "alert resolved before acting"


@dataclass(frozen=True)
class Answer:
    """The answer to one fencing check: act, refuse (why), or ask again shortly."""

    act: bool
    refusal: Refusal | None = None
    message: str = ""
    again: bool = False  # the run is being recorded: ask again in a moment

    def to_json(self) -> dict[str, Any]:
        return {
            "act": self.act,
            "refusal": None if self.refusal is None else str(self.refusal),
            "message": self.message,
            "again": self.again,
        }


def _refuse(refusal: Refusal, why: str) -> Answer:
    return Answer(False, refusal, f"{refusal}: {why}")


async def check(store: Store, decision_id: int, flow_run_id: str) -> Answer:
    """May flow run `flow_run_id`, carrying decision `decision_id`'s token, act now?"""
    standing = await store.fencing.standing(decision_id)
    if standing is None or standing.verdict != ADMITTED:
        return _refuse(Refusal.NOT_STARTED, f"no admitted decision {decision_id}; {RUN_COMMAND}")
    if standing.flow_run_id is None and standing.finished_at is None:
        # The dispatcher records the run right after Prefect created it; a runner that
        # polls fast can start it first.
        return Answer(False, None, f"decision {decision_id}'s run is being recorded", again=True)
    if standing.flow_run_id != flow_run_id:
        return _refuse(
            Refusal.NOT_STARTED,
            f"decision {decision_id} runs as flow run {standing.flow_run_id}, not as "
            f"{flow_run_id}; {RUN_COMMAND}",
        )
    if standing.finished_at is not None and standing.flow_run_state in LOST_STATES:
        return _refuse(
            Refusal.LEASE_LOST,
            f"decision {decision_id} was ended as lost ({standing.flow_run_state}) and its "
            "key freed",
        )
    if standing.finished_at is not None:
        state = standing.flow_run_state or "ended"
        return _refuse(
            Refusal.ENDED,
            f"decision {decision_id} ended ({state}), so its run may not act again "
            f"(a Retry?); {RUN_COMMAND}",
        )
    if standing.guard_key is None or key_name(standing.guard_key) not in standing.held:
        return _refuse(
            Refusal.LEASE_LOST,
            f"decision {decision_id} no longer holds key {standing.guard_key!r}",
        )
    if not standing.firing and not RunPolicy.from_json(standing.policy).act_when_resolved:
        return _refuse(
            Refusal.RESOLVED,
            f"the alert of decision {decision_id} resolved; rule {standing.rule} does not "
            "say act_when_resolved",
        )
    return Answer(True)
