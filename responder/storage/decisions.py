"""The decision records: the audit of every alert, and the state of admitted runs.

The guard counts admitted decisions here (attempts, budgets, blast radius); the dispatcher
records flow runs and final states. What a final state releases is `control.leases`'s.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, cast

from sqlalchemy import ColumnElement, Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.storage.approvals import ANSWERING, AWAITING
from responder.storage.database import Database
from responder.storage.schema import ADMITTED, decisions, leases

# The columns an active run is read from.
_RUN_COLUMNS = (
    decisions.c.id,
    decisions.c.flow_run_id,
    decisions.c.flow,
    decisions.c.rule,
    decisions.c.guard_key,
    decisions.c.incident,
    decisions.c.alertname,
    decisions.c.parameters,
    decisions.c.labels,
    decisions.c.policy,
)


class Ending(Enum):
    """What recording a final state found."""

    ENDED = "ended"  # the decision is final now
    ALREADY_FINAL = "already final"  # the first final state won; its names are freed again
    HAS_RUN = "has a run"  # a runless end met a decision whose run exists: nothing changed


class Decisions:
    """The `decisions` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert decisions in bulk (every row with the same keys); their ids, in row order."""
        return await self._db.insert_rows(conn, decisions, rows)

    async def recent(
        self,
        *,
        limit: int = 100,
        rule: str | None = None,
        verdict: str | None = None,
        alertname: str | None = None,
        before_id: int | None = None,
        fingerprint: str | None = None,
        inbox_id: int | None = None,
    ) -> list[dict[str, Any]]:
        query = select(decisions).order_by(decisions.c.id.desc()).limit(limit)
        if inbox_id is not None:
            query = query.where(decisions.c.inbox_id == inbox_id)
        if rule is not None:
            query = query.where(decisions.c.rule == rule)
        if verdict is not None:
            query = query.where(decisions.c.verdict == verdict)
        if alertname is not None:
            query = query.where(decisions.c.alertname == alertname)
        if before_id is not None:
            query = query.where(decisions.c.id < before_id)
        if fingerprint is not None:
            query = query.where(decisions.c.incident.startswith(f"{fingerprint}@", autoescape=True))
        async with self._db.transaction() as conn:
            rows = await conn.execute(query)
            return [dict(r._mapping) for r in rows]

    @staticmethod
    async def decided(conn: AsyncConnection, rule: str, incident: str) -> bool:
        """Whether `rule` already decided something for this incident."""
        found = await conn.scalar(
            select(decisions.c.id)
            .where(decisions.c.incident == incident, decisions.c.rule == rule)
            .limit(1)
        )
        return found is not None

    @staticmethod
    async def admitted_since(conn: AsyncConnection, since: float, flow: str | None) -> int:
        """Admitted decisions since `since`, for one flow or all of them."""
        query = (
            select(func.count())
            .select_from(decisions)
            .where(decisions.c.created_at >= since, ADMITTED)
        )
        if flow is not None:
            query = query.where(decisions.c.flow == flow)
        return int(await conn.scalar(query) or 0)

    @staticmethod
    async def first_admitted_since(
        conn: AsyncConnection, since: float, flow: str | None
    ) -> float | None:
        """When the oldest decision admitted since `since` was (a budget window's first start)."""
        query = select(func.min(decisions.c.created_at)).where(
            decisions.c.created_at >= since, ADMITTED
        )
        if flow is not None:
            query = query.where(decisions.c.flow == flow)
        found = await conn.scalar(query)
        return None if found is None else float(found)

    @staticmethod
    async def last_verdicts(
        conn: AsyncConnection, incident: str
    ) -> dict[str, tuple[str, str | None]]:
        """Each rule's last verdict (and refusal) for one incident."""
        rows = await conn.execute(
            select(decisions.c.rule, decisions.c.verdict, decisions.c.refusal)
            .where(decisions.c.incident == incident, decisions.c.rule.is_not(None))
            .order_by(decisions.c.id)
        )
        return {r.rule: (r.verdict, r.refusal) for r in rows}

    @staticmethod
    async def attempts(conn: AsyncConnection, rule: str, incident: str) -> int:
        """Admitted decisions of `rule` for one incident."""
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(decisions)
                .where(decisions.c.incident == incident, decisions.c.rule == rule, ADMITTED)
            )
            or 0
        )

    @staticmethod
    async def active_of_flow(conn: AsyncConnection, flow: str, now: float) -> int:
        """Decisions of `flow` that hold a live lease."""
        return await _holding(conn, decisions.c.flow == flow, now)

    @staticmethod
    async def active_of_service(conn: AsyncConnection, service: str, now: float) -> int:
        """Decisions about `service` (any flow) that hold a live lease."""
        return await _holding(conn, decisions.c.service == service, now)

    @staticmethod
    async def set_verdict(
        conn: AsyncConnection, decision_id: int, verdict: str, refusal: str | None, reason: str
    ) -> None:
        await conn.execute(
            update(decisions)
            .where(decisions.c.id == decision_id)
            .values(verdict=verdict, refusal=refusal, reason=reason)
        )

    async def set_flow_run(self, decision_id: int, flow_run_id: str) -> None:
        """The decision's flow run exists: the decision and the names it holds point at it."""
        async with self._db.transaction() as conn:
            await conn.execute(
                update(decisions)
                .where(decisions.c.id == decision_id)
                .values(flow_run_id=flow_run_id)
            )
            await conn.execute(
                update(leases)
                .where(leases.c.decision_id == decision_id)
                .values(flow_run_id=flow_run_id)
            )

    @staticmethod
    async def end(
        conn: AsyncConnection,
        decision_id: int,
        state: str,
        detail: str | None,
        now: float,
        *,
        runless: bool = False,
    ) -> Ending:
        """Record a final state unless the decision has one; with `runless`, only if it has
        no flow run either."""
        unfinished = [decisions.c.id == decision_id, decisions.c.finished_at.is_(None)]
        if runless:
            unfinished.append(decisions.c.flow_run_id.is_(None))
        result = await conn.execute(
            update(decisions)
            .where(*unfinished)
            .values(flow_run_state=state, finished_at=now, detail=detail)
        )
        if result.rowcount:
            return Ending.ENDED
        if runless:
            run = await conn.scalar(
                select(decisions.c.flow_run_id).where(decisions.c.id == decision_id)
            )
            if run is not None:
                return Ending.HAS_RUN
        return Ending.ALREADY_FINAL

    @staticmethod
    async def ended(conn: AsyncConnection, decision_id: int) -> Row[Any]:
        """The run of a decision that has just ended, as it was admitted (a run row), and
        its approval's state."""
        query = select(*_RUN_COLUMNS, decisions.c.approval_state).where(
            decisions.c.id == decision_id
        )
        return cast("Row[Any]", (await conn.execute(query)).one())

    async def active(self) -> list[Row[Any]]:
        """Admitted decisions that still hold their lease (run rows)."""
        query = (
            select(*_RUN_COLUMNS)
            .where(decisions.c.id.in_(select(leases.c.decision_id)))
            .order_by(decisions.c.id)
        )
        async with self._db.transaction() as conn:
            return list(await conn.execute(query))

    async def of_flow_run(self, flow_run_id: str) -> list[Row[Any]]:
        """The unfinished decisions a flow run serves, several for a batched run (run rows);
        one whose key was taken from it (fencing: lease lost) among them, so that the run's
        end still ends it."""
        query = (
            select(*_RUN_COLUMNS)
            .where(decisions.c.flow_run_id == flow_run_id, decisions.c.finished_at.is_(None))
            .order_by(decisions.c.id)
        )
        async with self._db.transaction() as conn:
            return list(await conn.execute(query))

    async def awaits_run(self, conn: AsyncConnection, decision_id: int) -> bool:
        """Whether an admitted decision is open, holds its names and has no flow run yet."""
        found = await conn.scalar(
            select(decisions.c.id).where(
                decisions.c.id == decision_id,
                decisions.c.finished_at.is_(None),
                decisions.c.flow_run_id.is_(None),
                decisions.c.id.in_(select(leases.c.decision_id)),
            )
        )
        return found is not None


async def _holding(conn: AsyncConnection, which: ColumnElement[bool], now: float) -> int:
    """How many decisions `which` selects hold a live lease."""
    holders = select(leases.c.decision_id).where(leases.c.expires_at > now)
    query = select(func.count()).select_from(decisions).where(which, decisions.c.id.in_(holders))
    return int(await conn.scalar(query) or 0)


def run_status(row: dict[str, Any]) -> str | None:
    """What a decision's run is doing, as operators read it: its final state (as Prefect
    names it, e.g. COMPLETED), `awaiting approval`, `running`, or None without a run."""
    if row.get("flow_run_state"):
        return str(row["flow_run_state"])
    if row.get("approval_state") in (AWAITING, ANSWERING):
        return "awaiting approval"
    return "running" if row.get("flow_run_id") else None
