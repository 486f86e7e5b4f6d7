"""The guard: admits a decision only when it is safe and not a duplicate.

Admission happens inside the caller's store transaction, together with the decision's audit
record, so two engine loops or two identical webhooks can never both admit one key. The
checks run in this order, and the first that refuses names the refusal:

    paused → maintenance → max_attempts → budget → max_active → key_active / mutex_held
    → cooldown

(the cooldown is read once the key is taken, so a run ending meanwhile cannot slip past it).

Shadow rules and dry-run mode run the same checks without taking anything, and record what
the guard would have done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncConnection

from responder import metrics
from responder.control import leases
from responder.control.ledger import DecisionRecord, Ledger
from responder.control.pause import Pause, paused
from responder.control.policy import RunPolicy
from responder.decision.decisions import Decision, Verdict
from responder.decision.maintenance import MaintenanceWindow, covering
from responder.storage.leases import LeaseHolder
from responder.storage.store import Store

# Up to this many held names are read in one statement, once per transaction.
PREFETCH_LEASES = 10_000
# Every refusal code the guard records, in the order its checks run.
REFUSALS = (
    "paused",
    "maintenance",
    "max_attempts",
    "budget",
    "max_active",
    "key_active",
    "mutex_held",
    "cooldown",
)
for _code in REFUSALS:  # every refusal reason is in /metrics from the start, at 0
    metrics.DECISIONS.labels(verdict=Verdict.REFUSED, refusal=_code)


@dataclass(frozen=True)
class Admission:
    """The guard's answer. A refusal is a normal outcome, not an error."""

    verdict: Verdict
    refusal: str | None
    reason: str
    entry: DecisionRecord  # the decision's record in the transaction's ledger
    held_by: str | None = None  # for key_active and mutex_held: the holder's flow run, if any
    # What the refused decision waits for: the guard name held and its holder's decision,
    # or the time a cooldown or budget window ends.
    block: str | None = None
    holder: int | None = None
    until: float | None = None

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMITTED

    @property
    def decision_id(self) -> int:
        """Known at once for an admitted decision, for others once the ledger is flushed."""
        return self.entry.id


@dataclass(frozen=True)
class _Refusal:
    code: str
    reason: str
    flow_run_id: str | None = None
    block: str | None = None
    holder: int | None = None
    until: float | None = None


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def key_name(key: str) -> str:
    return f"key:{key}"


def mutex_name(name: str) -> str:
    return f"mutex:{name}"


class Guard:
    """One active remediation per key, mutexes, cooldowns, budgets, pause and dry-run."""

    def __init__(
        self,
        store: Store,
        lease_seconds: float,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.dry_run = dry_run
        # The catalog's maintenance windows (the engine loop sets them with the catalog);
        # the stored ones are read once per transaction.
        self.catalog_windows: tuple[MaintenanceWindow, ...] = ()
        self._parsed: dict[str, MaintenanceWindow] = {}

    async def pause(self, conn: AsyncConnection) -> Pause | None:
        """The global pause switch: None, or who paused and why."""
        return await paused(self.store, conn)

    async def windows(self, conn: AsyncConnection) -> list[MaintenanceWindow]:
        """Every maintenance window: the catalog's, and those kept in the store (each
        parsed once, while it stays as it is)."""
        parsed: dict[str, MaintenanceWindow] = {}
        for spec in await self.store.maintenance.windows(conn):
            text = json.dumps(spec, sort_keys=True)
            parsed[text] = self._parsed.get(text) or MaintenanceWindow.model_validate(spec)
        self._parsed = parsed
        return [*self.catalog_windows, *parsed.values()]

    def within(self, conn: AsyncConnection, ledger: Ledger) -> Admissions:
        """The guard for the admissions of one store transaction, recorded in `ledger`."""
        return Admissions(self, conn, ledger)

    async def admit(
        self, conn: AsyncConnection, decision: Decision, inbox_id: int | None
    ) -> Admission:
        """Admit or refuse one decision, and write its record now."""
        ledger = Ledger(self.store, conn)
        admission = await self.within(conn, ledger).admit(decision, inbox_id)
        await ledger.flush()
        return admission


class Admissions:
    """The guard within one store transaction.

    It reads the pause switch once, and remembers which guard names it has seen held or has
    taken, so that in a storm, where most decisions find their key held, a refusal costs no
    statement: its record waits in the ledger.

    What it remembers can be out of date either way. Towards "held" (a run that ended in
    another transaction during the batch): the decision is refused, as a read a moment
    earlier would have refused it. Towards "free" (a name another transaction took; only
    another engine loop takes names): admission goes through `leases.acquire`, where the
    store decides, and a shadow or dry-run decision reads its free-looking names again.
    """

    def __init__(self, guard: Guard, conn: AsyncConnection, ledger: Ledger) -> None:
        self._guard = guard
        self._store = guard.store
        self._conn = conn
        self._ledger = ledger
        self._pause: Pause | None = None
        self._pause_read = False  # the switch is read once per transaction
        self._windows: list[MaintenanceWindow] = []  # and the maintenance windows with it
        self._held: dict[str, LeaseHolder | None] = {}  # None: free
        self._lookups = 0
        self._complete = False  # every held name is in `_held`

    async def admit(self, decision: Decision, inbox_id: int | None) -> Admission:
        """Take the decision's names or refuse; record the decision either way."""
        now = self._guard.clock()
        names = [key_name(decision.key), *(mutex_name(m) for m in decision.mutex)]
        if not self._pause_read:
            self._pause, self._pause_read = await self._guard.pause(self._conn), True
            self._windows = await self._guard.windows(self._conn)
        refusal = await self._check(decision, now, self._pause)
        if decision.shadow or self._guard.dry_run:
            if refusal is None:
                holder = await self._holder(names)
                if holder is None:  # it takes nothing, so no insert would tell: look again
                    await self._read_holders(names)
                    holder = await self._holder(names)
                refusal = _held(holder, now) if holder else await self._cooling(decision, now)
            verdict = Verdict.SHADOW if decision.shadow else Verdict.DRY_RUN
            reason = f"would refuse: {refusal.reason}" if refusal else "would admit"
            entry = self._record(decision, inbox_id, now, verdict, refusal, reason)
            return _answer(verdict, refusal, reason, entry)
        if refusal is None:
            # Look before taking, so that a refusal costs no statement. A holder that gives
            # way is left to leases.acquire, which ends it.
            holder = await self._holder(names)
            if holder is not None and not holder.gives_way(now):
                refusal = _held(holder, now)
        if refusal is not None:
            entry = self._record(decision, inbox_id, now, Verdict.REFUSED, refusal, refusal.reason)
            return _answer(Verdict.REFUSED, refusal, refusal.reason, entry)
        verdict, reason = Verdict.ADMITTED, "every check passed; names taken"
        entry = self._record(decision, inbox_id, now, verdict, None, reason)
        await self._ledger.flush()  # the leases need the decision's id
        holder = await leases.acquire(
            self._store, self._conn, names, entry.id, self._guard.lease_seconds, now
        )
        if holder is not None:
            # leases.acquire may have ended expired holders, or met a concurrent admission.
            await self._read_holders(names)
            refusal = _held(holder, now)
        else:
            held = LeaseHolder("", entry.id, None, now + self._guard.lease_seconds)
            self._held.update((name, replace(held, name=name)) for name in names)
            # Checked once the key is ours: a run that ended meanwhile has committed
            # its cooldown together with freeing the key, so it is visible now.
            refusal = await self._cooling(decision, now)
            if refusal is not None:
                await self._store.leases.release(self._conn, entry.id)
                self._held.update((name, None) for name in names)
        if refusal is not None:
            verdict, reason = Verdict.REFUSED, refusal.reason
            await self._store.decisions.set_verdict(
                self._conn, entry.id, verdict, refusal.code, reason
            )
        return _answer(verdict, refusal, reason, entry)

    async def _holder(self, names: list[str]) -> LeaseHolder | None:
        """A holder of any of `names` (the key's before a mutex's), each read once.

        The first decision of a transaction reads its own names. A second one reads every
        held name, unless more than `PREFETCH_LEASES` are held: then each name is read when
        first wanted. A transaction with one decision never reads the whole table.
        """
        self._lookups += 1
        if self._lookups == 2:
            every = await self._store.leases.holders(self._conn, None, limit=PREFETCH_LEASES + 1)
            if len(every) <= PREFETCH_LEASES:
                self._held = {name: holder for name, holder in every.items()}
                self._complete = True
        unknown = [] if self._complete else [name for name in names if name not in self._held]
        if unknown:
            await self._read_holders(unknown)
        held = [holder for name in sorted(names) if (holder := self._held.get(name)) is not None]
        return held[0] if held else None

    async def _read_holders(self, names: list[str]) -> None:
        found = await self._store.leases.holders(self._conn, names)
        self._held.update((name, found.get(name)) for name in names)

    async def _cooling(self, decision: Decision, now: float) -> _Refusal | None:
        until = await self._store.leases.cooldown_until(self._conn, decision.key, now)
        if until is None:
            return None
        return _Refusal(
            "cooldown", f"key {decision.key!r} cools down until {_when(until)}", until=until
        )

    async def _check(self, decision: Decision, now: float, pause: Pause | None) -> _Refusal | None:
        """The checks that need no lock, in order; the first refusal wins."""
        conn = self._conn
        policy = decision.policy
        stopped = _stopped(pause, self._windows, decision, now)
        if stopped is not None:
            return stopped
        if policy.max_attempts is not None:
            done = await self._store.decisions.attempts(
                conn, decision.rule, decision.alert.incident
            )
            if done >= policy.max_attempts:
                return _Refusal(
                    "max_attempts",
                    f"{done} attempts for this incident reached max_attempts "
                    f"{policy.max_attempts}; escalate instead",
                )
        # Counting checks lock every scope they count, in a fixed order.
        scopes = set()
        if policy.budget is not None:
            scopes.add("*" if policy.budget.scope == "global" else decision.flow)
        per_service = policy.max_active_per == "service"
        cap = decision.active_cap
        if cap is not None:
            if per_service and decision.service is None:
                return _Refusal(
                    "max_active", "max_active per service, but the alert has no service label"
                )
            scopes.add(f"service:{decision.service}" if per_service else decision.flow)
        for scope in sorted(scopes):
            await self._store.switches.serialize(conn, f"admit:{scope}")
        if policy.budget is not None:
            budget = policy.budget
            flow = decision.flow if budget.scope == "flow" else None
            started = await self._store.decisions.admitted_since(conn, now - budget.per, flow)
            if started >= budget.max_starts:
                scope = f"flow {decision.flow}" if flow else "all flows"
                oldest = await self._store.decisions.first_admitted_since(
                    conn, now - budget.per, flow
                )
                return _Refusal(
                    "budget",
                    f"budget spent: {started} starts of {scope} in the last {budget.per:.0f}s "
                    f"(max {budget.max_starts})",
                    until=(oldest if oldest is not None else now) + budget.per,
                )
        if cap is not None:
            if per_service and decision.service is not None:
                active = await self._store.decisions.active_of_service(conn, decision.service, now)
                scope = f"runs on service {decision.service}"
            else:
                active = await self._store.decisions.active_of_flow(conn, decision.flow, now)
                scope = f"runs of {decision.flow}"
            if active >= cap:
                basis = f" = {decision.max_active_basis}" if decision.max_active_basis else ""
                return _Refusal(
                    "max_active", f"blast radius: {active} {scope} active (max_active {cap}{basis})"
                )
        return None

    def _record(
        self,
        decision: Decision,
        inbox_id: int | None,
        now: float,
        verdict: Verdict,
        refusal: _Refusal | None,
        reason: str,
    ) -> DecisionRecord:
        return self._ledger.add(
            created_at=now,
            inbox_id=inbox_id,
            incident=decision.alert.incident,
            alertname=decision.alert.alertname,
            alert_status=decision.alert.status,
            labels=dict(decision.alert.labels),
            rule=decision.rule,
            flow=decision.flow,
            service=decision.service,
            parameters=decision.parameters,
            guard_key=decision.key,
            verdict=verdict.value,
            refusal=refusal.code if refusal else None,
            reason=reason,
            policy=RunPolicy.of(decision).to_json(),
        )


def _answer(
    verdict: Verdict, refusal: _Refusal | None, reason: str, entry: DecisionRecord
) -> Admission:
    if refusal is None:
        return Admission(verdict, None, reason, entry)
    return Admission(
        verdict,
        refusal.code,
        reason,
        entry,
        refusal.flow_run_id,
        refusal.block,
        refusal.holder,
        refusal.until,
    )


def _stopped(
    pause: Pause | None, windows: list[MaintenanceWindow], decision: Decision, now: float
) -> _Refusal | None:
    """The pause, or a maintenance window in effect covering the decision's alert (unless
    its rule ignores maintenance): the incident waits for the window's end (the last to
    end, if several cover it)."""
    if pause:
        return _Refusal("paused", f"remediation is paused: {pause.reason or '-'}")
    if decision.policy.maintenance == "ignore" or not windows:
        return None
    found = covering(windows, dict(decision.alert.labels), decision.host, now)
    if found is None:
        return None
    window, until = found
    return _Refusal(
        "maintenance",
        f"maintenance window {window.name!r} until {_when(until)}: {window.reason}",
        block=f"maintenance:{window.name}",
        until=until,
    )


def _held(holder: LeaseHolder, now: float) -> _Refusal:
    kind, _, name = holder.name.partition(":")
    code = "key_active" if kind == "key" else "mutex_held"
    what = f"key {name!r} is active" if kind == "key" else f"mutex {name!r} is held"
    if holder.decision_id == 0:
        return _Refusal(code, f"{what}: taken by a concurrent admission", block=holder.name)
    run = f" (flow run {holder.flow_run_id})" if holder.flow_run_id else ""
    if holder.expires_at <= now:
        # An expired lease with a flow run: the dispatcher has not yet confirmed its end.
        reason = f"{what}: decision {holder.decision_id}{run} not confirmed ended"
    else:
        until = _when(holder.expires_at)
        reason = f"{what}: held by decision {holder.decision_id}{run} until {until}"
    return _Refusal(code, reason, holder.flow_run_id, holder.name, holder.decision_id)
