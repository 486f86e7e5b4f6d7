"""The guard policy a decision is admitted under, as its record keeps it.

The guard writes it when it admits (`to_json`, into the decision's `policy` column); the store
reads it back (`from_json`) when the run ends, for the cooldown, and when the dispatcher picks
the run up again, for its silence and batch. Nothing else reads or writes that column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from responder.events.manual_runs import MANUAL_RULE

if TYPE_CHECKING:
    from responder.decision.decisions import Decision

COMPLETED = "COMPLETED"


@dataclass(frozen=True)
class Batch:
    """Machine batching: the list parameter merged with other runs', and the wait for them."""

    window: float
    over: str


@dataclass(frozen=True)
class RunPolicy:
    """What still applies to an admitted decision once its run is going or has ended."""

    mutex: tuple[str, ...] = ()
    cooldown: float = 0.0
    cooldown_failed: float | None = None  # None: `cooldown` after any final state
    silence: bool = False
    batch: Batch | None = None
    # The run may act after its alert resolved (fencing): the rule says so, the decision
    # answers a resolution, or it was started by hand (no alert to resolve).
    act_when_resolved: bool = False

    @classmethod
    def of(cls, decision: Decision) -> RunPolicy:
        """The policy of a decision the guard is recording."""
        spec = decision.policy
        batch = decision.batch
        return cls(
            mutex=tuple(decision.mutex),
            cooldown=spec.cooldown,
            cooldown_failed=spec.cooldown_failed,
            silence=spec.silence,
            batch=Batch(batch.window, batch.over) if batch else None,
            act_when_resolved=(
                spec.act_when_resolved
                or decision.alert.status == "resolved"
                or decision.rule == MANUAL_RULE
                or decision.from_event
            ),
        )

    def cooldown_after(self, state: str) -> float:
        """How long the key cools down after a run ends in `state`: `cooldown_failed` for
        any state but COMPLETED, where it is set; `cooldown` otherwise."""
        if state != COMPLETED and self.cooldown_failed is not None:
            return self.cooldown_failed
        return self.cooldown

    def to_json(self) -> dict[str, Any]:
        """The `policy` column's value."""
        value: dict[str, Any] = {
            "mutex": list(self.mutex),
            "cooldown": self.cooldown,
            "cooldown_failed": self.cooldown_failed,
            "silence": self.silence,
            "act_when_resolved": self.act_when_resolved,
        }
        if self.batch is not None:
            value["batch"] = {"window": self.batch.window, "over": self.batch.over}
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> RunPolicy:
        """Read the `policy` column (NULL for a decision that was never admitted)."""
        value = value or {}
        batch = value.get("batch") or {}
        return cls(
            mutex=tuple(value.get("mutex") or ()),
            cooldown=float(value.get("cooldown") or 0.0),
            cooldown_failed=(
                None if value.get("cooldown_failed") is None else float(value["cooldown_failed"])
            ),
            silence=bool(value.get("silence")),
            act_when_resolved=bool(value.get("act_when_resolved")),
            batch=Batch(float(batch.get("window") or 0.0), batch["over"])
            if batch.get("over") is not None
            else None,
        )
