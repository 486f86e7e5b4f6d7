"""A private Responder on a throwaway store and a clock of its own.

Rule tests and `responder simulate` feed it alerts and events exactly as webhooks would
reach the real engine loop, and read back what it decided. Nothing is dispatched.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from responder.control import leases
from responder.control.guard import Guard
from responder.control.runs import ActiveRun, active_runs, batch_group, merge_batch
from responder.decision.engine import Engine
from responder.decision.rules import RuleBook
from responder.decision.services import ServiceCatalog
from responder.events.facts import Fact
from responder.orchestration.flow_catalog import parameter_errors
from responder.runtime.loop import EngineLoop
from responder.storage.inbox import InboxSource
from responder.storage.store import Store

EPOCH = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


class Clock:
    """Time that moves only when told to."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fingerprint_of(labels: dict[str, str]) -> str:
    """A stable stand-in for Alertmanager's fingerprint of a label set."""
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


class Sandbox:
    """An engine loop over a temporary SQLite store, driven step by step."""

    def __init__(
        self,
        book: RuleBook,
        catalog: ServiceCatalog,
        rule_vars: dict[str, str],
        *,
        dry_run: bool = False,
        facts: Sequence[Fact] = (),
        run_seconds: float | None = None,
        run_state: str = "COMPLETED",
    ) -> None:
        """`run_seconds`: each admitted run ends this long after its admission, `run_state`
        (a replay's stand-in for Prefect); None: runs end only when `finish` says so."""
        self.clock = Clock()
        self._dir = tempfile.TemporaryDirectory(prefix="responder-sandbox-")
        self.store = Store(
            f"sqlite+aiosqlite:///{Path(self._dir.name) / 'sandbox.db'}", durable=False
        )
        self.loop = EngineLoop(
            self.store,
            Guard(self.store, lease_seconds=86400.0, dry_run=dry_run, clock=self.clock),
            None,
            book,
            catalog,
            rule_vars=rule_vars,
            check_parameters=parameter_errors,
            clock=self.clock,
            # Refused incidents are looked at again when their block may have cleared: the
            # clock moved (a timer, a window's end), a run ended (`settle`, and the loop
            # itself on hearing an outcome), not at every step.
            recheck_seconds=math.inf,
        )
        self._converged_at: float | None = None  # the clock at the last convergence
        self._started: dict[str, float] = {}
        self._facts = facts  # held from the start: fixtures of rule tests
        self._run_seconds = run_seconds
        self._run_state = run_state
        self._run_ends: dict[int, float] = {}  # decision id → when its run ends
        self._admitted: dict[int, tuple[ActiveRun, float]] = {}  # decision id → run, when

    @property
    def engine(self) -> Engine:
        return self.loop.engine

    async def __aenter__(self) -> Sandbox:
        await self.store.migrate()
        async with self.store.transaction(turn=True) as conn:
            for fact in self._facts:
                await self.store.facts.save(conn, fact)
        await self.loop.rebuild()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()
        self._dir.cleanup()

    def alert(
        self,
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
        status: str = "firing",
    ) -> dict[str, Any]:
        """An alert as Alertmanager would send it; a resolution reuses the firing's start."""
        fingerprint = fingerprint_of(labels)
        started = self._started.setdefault(fingerprint, self.clock.now)
        if status == "resolved":
            self._started.pop(fingerprint, None)
        return {
            "status": status,
            "labels": labels,
            "annotations": annotations or {},
            "startsAt": datetime.fromtimestamp(started, UTC).isoformat(),
            "endsAt": datetime.fromtimestamp(self.clock.now, UTC).isoformat()
            if status == "resolved"
            else "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint,
        }

    async def send_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Deliver alerts in one webhook body, as Alertmanager does for a group."""
        status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
        body = {
            "version": "4",
            "groupKey": "{}:{}",
            "status": status,
            "receiver": "responder",
            "alerts": alerts,
        }
        await self.send("alertmanager", json.dumps(body).encode())

    async def send(self, source: str, body: bytes) -> None:
        await self.send_together([(source, body)])

    async def send_together(self, bodies: Sequence[tuple[str, bytes]]) -> None:
        """Bodies that arrive at one instant: all in the inbox, in order, then the loop
        runs (as it reads what arrived together in one batch)."""
        for source, body in bodies:
            await self.store.inbox.add(InboxSource(source), body)
        await self.settle()

    async def settle(self) -> None:
        """Run the engine loop until the inbox is empty and due timers have fired."""
        if self.clock.now != self._converged_at:
            self.loop.recheck_now()
            self._converged_at = self.clock.now
        while await self.loop.step():
            pass
        for run in await active_runs(self.store):  # the runs admitted meanwhile, and when
            if run.decision_id not in self._admitted:
                self._admitted[run.decision_id] = (run, self.clock.now)
                if self._run_seconds is not None:
                    self._run_ends[run.decision_id] = self.clock.now + self._run_seconds

    async def run_until(self, end: float) -> None:
        """Move the clock on to `end`, stopping at each timer due by then so that each
        fires at its own time (and the timers it sets, if due by `end`, too); with
        `run_seconds`, runs end at their time too."""
        await self._end_runs()
        while (due := await self._next_timer()) is not None and due <= end:
            self.clock.now = due
            await self.settle()
            await self._end_runs()
        # Nothing comes due before `end`: the clock moves on, and the loop has nothing to do.
        self.clock.now = max(self.clock.now, end)

    async def _end_runs(self) -> None:
        """End the runs whose time is up (`run_seconds`), in the order they end."""
        for decision_id, at in sorted(self._run_ends.items(), key=lambda item: item[1]):
            if at <= self.clock.now and self._run_ends.pop(decision_id, None) is not None:
                await leases.finish(self.store, decision_id, self._run_state, now=self.clock.now)
                self.loop.recheck_now()  # its names are free
                await self.settle()  # the engine hears the outcome

    async def _next_timer(self) -> float | None:
        """The next time after now something comes due: a `firing_for` rule or a fact's
        expiry (the engine), the ladder's next attempt (a durable timer), the end of a
        waiting incident's cooldown or budget window (due once past: the next instant),
        the end of a run (`run_seconds`)."""
        async with self.store.transaction() as conn:
            timer = await self.store.timers.next_due(conn)
            until = await self.store.incidents.next_until(conn)
        times = [self.engine.next_timer(), timer, *self._run_ends.values()]
        times.append(None if until is None else math.nextafter(until, math.inf))
        return min((t for t in times if t is not None and t > self.clock.now), default=None)

    async def held_keys(self) -> list[str]:
        """The guard keys the active flow runs hold."""
        return sorted(run.guard_key for run in await active_runs(self.store))

    async def finish(self, key: str, state: str) -> bool:
        """Report the flow run holding `key` as final; False if no run holds it."""
        for run in await active_runs(self.store):
            if run.guard_key == key:
                self._run_ends.pop(run.decision_id, None)
                finished = await leases.finish(
                    self.store, run.decision_id, state, now=self.clock.now
                )
                self.loop.recheck_now()  # its names are free
                await self.settle()  # the engine hears the outcome
                return finished
        return False

    def admitted(self) -> list[tuple[ActiveRun, float]]:
        """Every run admitted so far (ended ones too), and when, in order."""
        return sorted(self._admitted.values(), key=lambda member: member[0].decision_id)

    def runs(self) -> list[tuple[ActiveRun, list[int]]]:
        """The flow runs dispatch would create, in order: one per admitted decision, and one
        per batch (a batched rule's decisions admitted within its window of the first
        one's, `control.runs.batch_group`), each with its members' decision ids."""
        groups: list[list[tuple[ActiveRun, float]]] = []
        batching: dict[tuple[str, str, str], list[tuple[ActiveRun, float]]] = {}
        for run, at in self.admitted():
            key = batch_group(run)
            group = None if key is None else batching.get(key)
            if group is None or at > group[0][1] + run.batch_window:
                group = []
                groups.append(group)
                if key is not None:
                    batching[key] = group
            group.append((run, at))
        return [
            (
                merge_batch([run for run, _ in group]) if run.batch_over else run,
                [member.decision_id for member, _ in group],
            )
            for group in groups
            for run in [group[0][0]]
        ]

    async def decisions(self) -> list[dict[str, Any]]:
        return list(reversed(await self.store.decisions.recent(limit=100_000)))
