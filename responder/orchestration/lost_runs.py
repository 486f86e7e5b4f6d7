"""Lost runs: a flow run Prefect reports as PENDING or RUNNING that no runner is running.

A runner killed while its run is PENDING, or a machine lost while it is RUNNING, leaves the
run in that state in Prefect forever, and Responder would renew its lease forever. A live
run's engine sends a heartbeat event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (30
with `responder up`), and every state change is an event too. The dispatcher hears them on
Prefect's event stream and tells this watch; a run not heard of for `lost_run_seconds` (since
its last heartbeat, or since it entered its state) is lost, and the dispatcher marks it
CRASHED in Prefect and ends its decision (its key freed, its incident decided again).

A run Prefect no longer knows (its database lost, the run deleted) is ended as EXPIRED
once it has been missing from Prefect's answers for `lost_run_seconds` (`forgotten`).

No run is judged before the stream has been listening for `lost_run_seconds` without a
break: after a restart or a lost connection, a live run's heartbeat may not have come yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The states in which a live run sends heartbeats or soon leaves (Paused waits for a person).
WATCHED = frozenset({"PENDING", "RUNNING"})


@dataclass(frozen=True)
class LostRun:
    """A run no runner runs: its state, and how long nothing was heard of it."""

    flow_run_id: str
    state: str
    silent_for: float

    @property
    def message(self) -> str:
        return (
            f"lost: {self.state} with no heartbeat for {self.silent_for:.0f}s; Responder "
            "marked it crashed and freed its key"
        )


class LostRuns:
    """What the dispatcher heard of each flow run, and which runs it should now call lost."""

    def __init__(self, after_seconds: float) -> None:
        self.after_seconds = after_seconds
        self._heard: dict[str, float] = {}
        self._listening_since: float | None = None
        self._missing_since: dict[str, float] = {}

    def listening(self, now: float | None = None) -> None:
        """The event stream is connected (from now, unless it already was)."""
        if self._listening_since is None:
            self._listening_since = time.time() if now is None else now

    def deaf(self) -> None:
        """The event stream is lost: nothing is judged until it has listened long again."""
        self._listening_since = None

    def heard(self, flow_run_id: str, now: float | None = None) -> None:
        """An event of this run (a heartbeat, a state change) arrived."""
        self._heard[flow_run_id] = time.time() if now is None else now

    def forget(self, flow_run_id: str) -> None:
        self._heard.pop(flow_run_id, None)

    def lost(self, flow_runs: Iterable[Any], now: float | None = None) -> list[LostRun]:
        """The runs among `flow_runs` (Prefect's, going) that are lost."""
        now = time.time() if now is None else now
        since = self._listening_since
        if self.after_seconds <= 0 or since is None or now - since < self.after_seconds:
            return []
        found = []
        for flow_run in flow_runs:
            state = flow_run.state
            if state is None or state.type.value not in WATCHED:
                continue
            flow_run_id = str(flow_run.id)
            last = max(self._heard.get(flow_run_id, 0.0), state.timestamp.timestamp())
            if now - last >= self.after_seconds:
                found.append(LostRun(flow_run_id, state.type.value, now - last))
        return found

    def forgotten(
        self, wanted: Iterable[str], found: set[str], now: float | None = None
    ) -> list[str]:
        """The runs among `wanted` that Prefect has not known (not `found` in its answers)
        for `lost_run_seconds`: its database was lost or the run deleted."""
        now = time.time() if now is None else now
        for flow_run_id in found:
            self._missing_since.pop(flow_run_id, None)
        gone = []
        for flow_run_id in wanted:
            if flow_run_id in found:
                continue
            since = self._missing_since.setdefault(flow_run_id, now)
            if self.after_seconds > 0 and now - since >= self.after_seconds:
                gone.append(flow_run_id)
                del self._missing_since[flow_run_id]
        return gone
