"""An active run: an admitted decision whose flow run has not been seen final.

Two sources, one shape: the guard's admission (`ActiveRun.admitted`, the run about to be
created) and the store's record of a decision that still holds its names (read back by
`storage.decisions`, e.g. after a restart). Both carry the `RunPolicy` the guard recorded.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from responder.control.policy import RunPolicy

if TYPE_CHECKING:
    from sqlalchemy import Row

    from responder.decision.decisions import Decision
    from responder.storage.store import Store


@dataclass(frozen=True)
class ActiveRun:
    """An admitted decision whose flow run has not been seen final."""

    decision_id: int
    flow_run_id: str | None
    flow: str
    rule: str
    guard_key: str
    incident: str
    alertname: str
    parameters: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    policy: RunPolicy = field(default_factory=RunPolicy)

    @classmethod
    def admitted(cls, decision_id: int, decision: Decision) -> ActiveRun:
        """The run of a decision the guard has just admitted (no flow run yet)."""
        alert = decision.alert
        return cls(
            decision_id=decision_id,
            flow_run_id=None,
            flow=decision.flow,
            rule=decision.rule,
            guard_key=decision.key,
            incident=alert.incident,
            alertname=alert.alertname,
            parameters=decision.parameters,
            labels=dict(alert.labels),
            policy=RunPolicy.of(decision),
        )

    @property
    def silence(self) -> bool:
        """Whether the alert is silenced in Alertmanager while the run goes on."""
        return self.policy.silence

    @property
    def batch_over(self) -> str | None:
        """Machine batching: the list parameter merged with other runs' (None: no batch)."""
        return self.policy.batch.over if self.policy.batch else None

    @property
    def batch_window(self) -> float:
        """Machine batching: how long the first run waits for others to join it."""
        return self.policy.batch.window if self.policy.batch else 0.0

    @classmethod
    def of_row(cls, row: Row[Any]) -> ActiveRun:
        """The run a decision row describes (`storage.decisions`' run columns): the one
        reader of such rows."""
        return cls(
            row.id,
            row.flow_run_id,
            row.flow,
            row.rule,
            row.guard_key,
            row.incident,
            row.alertname,
            row.parameters or {},
            row.labels or {},
            RunPolicy.from_json(row.policy),
        )


def batch_group(run: ActiveRun) -> tuple[str, str, str] | None:
    """Which batch a run joins: the runs of one rule and flow whose parameters other than
    the batched list are equal (None: the run is not batched)."""
    if run.batch_over is None:
        return None
    common = {k: v for k, v in run.parameters.items() if k != run.batch_over}
    return (run.rule, run.flow, json.dumps(common, sort_keys=True, default=str))


def merge_batch(members: list[ActiveRun]) -> ActiveRun:
    """A batch's one run: the first member's, over the union of every member's list."""
    lead = members[0]
    over = lead.batch_over or ""
    items: list[Any] = []
    for run in members:
        items.extend(i for i in run.parameters.get(over, []) if i not in items)
    return dataclasses.replace(lead, parameters={**lead.parameters, over: items})


async def active_runs(store: Store) -> list[ActiveRun]:
    """Admitted decisions that still hold their lease."""
    return [ActiveRun.of_row(row) for row in await store.decisions.active()]


async def runs_of(store: Store, flow_run_id: str) -> list[ActiveRun]:
    """The active decisions a flow run serves (several for a batched run)."""
    return [ActiveRun.of_row(row) for row in await store.decisions.of_flow_run(flow_run_id)]
