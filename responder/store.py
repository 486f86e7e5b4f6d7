"""The store: inbox, alert identities, decisions (the audit) and guard leases.

SQLAlchemy 2 async Core. SQLite in WAL mode is the embedded default; PostgreSQL serves
several replicas. Uniqueness in the schema, not application checks, makes admission atomic.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from responder.exceptions import StoreUnavailable
from responder.models import Alert

metadata = MetaData()

inbox = Table(
    "inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", Float, nullable=False),
    Column("source", String(32), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("processed", Boolean, nullable=False, default=False),
    Index("ix_inbox_pending", "processed", "id"),
)

# One row per (fingerprint, startsAt, status) ever handled: the alert-identity ledger.
alert_events = Table(
    "alert_events",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("starts_at", String(40), primary_key=True),
    Column("status", String(10), primary_key=True),
    Column("inbox_id", Integer, nullable=False),
    Column("seen_at", Float, nullable=False),
)

# Alerts currently firing, so the engine can rebuild its facts after a restart.
firing_alerts = Table(
    "firing_alerts",
    metadata,
    Column("incident", String(120), primary_key=True),
    Column("alert", Text, nullable=False),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("inbox_id", Integer, nullable=True),
    Column("incident", String(120), nullable=False),
    Column("alertname", Text, nullable=False),
    Column("alert_status", String(10), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("rule", String(64), nullable=True),
    Column("flow", String(128), nullable=True),
    Column("parameters", JSON, nullable=True),
    Column("guard_key", Text, nullable=True),
    Column("verdict", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("flow_run_id", String(36), nullable=True),
    Column("flow_run_state", String(24), nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("detail", Text, nullable=True),
    Index("ix_decisions_flow_run", "flow_run_id"),
    Index("ix_decisions_rule", "rule", "id"),
)

leases = Table(
    "leases",
    metadata,
    # Keys are rendered from hostile labels and may be long: index their digest.
    Column("key_digest", String(64), primary_key=True),
    Column("guard_key", Text, nullable=False),
    Column("decision_id", Integer, nullable=False),
    Column("flow_run_id", String(36), nullable=True),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


@dataclass(frozen=True)
class PendingMessage:
    """An inbox row the engine has not processed yet."""

    id: int
    source: str
    body: bytes


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a guard key."""

    decision_id: int
    flow_run_id: str | None
    expires_at: float


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


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class Store:
    """Async access to Responder's tables. One instance per process."""

    def __init__(self, url: str, *, timeout_seconds: float = 5.0) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {}
        if self.dialect == "postgresql":
            kwargs = {
                "pool_size": 10,
                "max_overflow": 10,
                "pool_pre_ping": True,
                "pool_timeout": timeout_seconds,
                "connect_args": {"timeout": timeout_seconds},
            }
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            busy_ms = int(timeout_seconds * 1000)
            event.listen(
                self.engine.sync_engine,
                "connect",
                lambda dbapi_connection, _record: _sqlite_pragmas(dbapi_connection, busy_ms),
            )

    async def migrate(self) -> None:
        """Bring the schema to the newest alembic revision."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade_to_head)

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One atomic unit of work; any database failure becomes `StoreUnavailable`."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"store error: {exc.__class__.__name__}: {exc}") from exc

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(1))
            return True
        except (SQLAlchemyError, OSError):
            return False

    # --- inbox -------------------------------------------------------------------------

    async def add_to_inbox(self, source: str, body: bytes) -> int:
        """Commit a received body durably; only then may the sender be acknowledged."""
        async with self.transaction() as conn:
            result = await conn.execute(
                inbox.insert().values(received_at=time.time(), source=source, body=body)
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def pending(self, limit: int) -> list[PendingMessage]:
        async with self.transaction() as conn:
            rows = await conn.execute(
                select(inbox.c.id, inbox.c.source, inbox.c.body)
                .where(inbox.c.processed.is_(False))
                .order_by(inbox.c.id)
                .limit(limit)
            )
            return [PendingMessage(r.id, r.source, bytes(r.body)) for r in rows]

    async def backlog(self) -> int:
        async with self.transaction() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(inbox).where(inbox.c.processed.is_(False))
            )
            return int(count or 0)

    @staticmethod
    async def mark_processed(conn: AsyncConnection, inbox_id: int) -> None:
        await conn.execute(update(inbox).where(inbox.c.id == inbox_id).values(processed=True))

    # --- alert identity and facts ------------------------------------------------------

    async def note_alert(self, conn: AsyncConnection, alert: Alert, inbox_id: int) -> bool:
        """Record `(fingerprint, startsAt, status)`; False if it was already handled."""
        return await self._insert_ignore(
            conn,
            alert_events,
            fingerprint=alert.fingerprint,
            starts_at=alert.starts_at.isoformat(),
            status=alert.status,
            inbox_id=inbox_id,
            seen_at=time.time(),
        )

    async def first_seen_in(self, conn: AsyncConnection, alert: Alert) -> int | None:
        return await conn.scalar(
            select(alert_events.c.inbox_id).where(
                alert_events.c.fingerprint == alert.fingerprint,
                alert_events.c.starts_at == alert.starts_at.isoformat(),
                alert_events.c.status == alert.status,
            )
        )

    async def was_resolved(self, conn: AsyncConnection, alert: Alert) -> bool:
        found = await conn.scalar(
            select(alert_events.c.inbox_id).where(
                alert_events.c.fingerprint == alert.fingerprint,
                alert_events.c.starts_at == alert.starts_at.isoformat(),
                alert_events.c.status == "resolved",
            )
        )
        return found is not None

    @staticmethod
    async def set_firing(conn: AsyncConnection, alert: Alert, firing: bool) -> None:
        await conn.execute(delete(firing_alerts).where(firing_alerts.c.incident == alert.incident))
        if firing:
            await conn.execute(
                firing_alerts.insert().values(
                    incident=alert.incident, alert=alert.model_dump_json(by_alias=True)
                )
            )

    async def firing(self) -> list[Alert]:
        async with self.transaction() as conn:
            rows = await conn.execute(select(firing_alerts.c.alert))
            return [Alert.model_validate_json(r.alert) for r in rows]

    # --- decisions ---------------------------------------------------------------------

    @staticmethod
    async def record_decision(conn: AsyncConnection, **values: Any) -> int:
        values.setdefault("created_at", time.time())
        result = await conn.execute(decisions.insert().values(**values))
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def decisions(
        self,
        *,
        limit: int = 100,
        rule: str | None = None,
        verdict: str | None = None,
        alertname: str | None = None,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        query = select(decisions).order_by(decisions.c.id.desc()).limit(limit)
        if rule is not None:
            query = query.where(decisions.c.rule == rule)
        if verdict is not None:
            query = query.where(decisions.c.verdict == verdict)
        if alertname is not None:
            query = query.where(decisions.c.alertname == alertname)
        if before_id is not None:
            query = query.where(decisions.c.id < before_id)
        async with self.transaction() as conn:
            rows = await conn.execute(query)
            return [dict(r._mapping) for r in rows]

    # --- guard leases ------------------------------------------------------------------

    async def acquire_lease(
        self, conn: AsyncConnection, key: str, ttl: float, now: float
    ) -> LeaseHolder | None:
        """Take `key` unless a live lease holds it; return the holder when refused."""
        digest = key_digest(key)
        await conn.execute(
            delete(leases).where(leases.c.key_digest == digest, leases.c.expires_at <= now)
        )
        taken = await self._insert_ignore(
            conn,
            leases,
            key_digest=digest,
            guard_key=key,
            decision_id=0,
            acquired_at=now,
            expires_at=now + ttl,
        )
        if taken:
            return None
        row = (
            await conn.execute(
                select(leases.c.decision_id, leases.c.flow_run_id, leases.c.expires_at).where(
                    leases.c.key_digest == digest
                )
            )
        ).one()
        return LeaseHolder(row.decision_id, row.flow_run_id, row.expires_at)

    @staticmethod
    async def bind_lease(conn: AsyncConnection, key: str, decision_id: int) -> None:
        await conn.execute(
            update(leases)
            .where(leases.c.key_digest == key_digest(key))
            .values(decision_id=decision_id)
        )

    async def set_flow_run(self, decision_id: int, flow_run_id: str) -> None:
        async with self.transaction() as conn:
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

    async def finish(self, decision_id: int, state: str, detail: str | None = None) -> bool:
        """Record a final state and free the decision's lease; False if already final."""
        async with self.transaction() as conn:
            result = await conn.execute(
                update(decisions)
                .where(decisions.c.id == decision_id, decisions.c.finished_at.is_(None))
                .values(flow_run_state=state, finished_at=time.time(), detail=detail)
            )
            await conn.execute(delete(leases).where(leases.c.decision_id == decision_id))
            return bool(result.rowcount)

    async def active_runs(self) -> list[ActiveRun]:
        """Admitted decisions that still hold their lease."""
        query = (
            select(
                decisions.c.id,
                decisions.c.flow_run_id,
                decisions.c.flow,
                decisions.c.rule,
                decisions.c.guard_key,
                decisions.c.incident,
                decisions.c.alertname,
                decisions.c.parameters,
            )
            .join(leases, leases.c.decision_id == decisions.c.id)
            .order_by(decisions.c.id)
        )
        async with self.transaction() as conn:
            rows = await conn.execute(query)
            return [
                ActiveRun(
                    r.id,
                    r.flow_run_id,
                    r.flow,
                    r.rule,
                    r.guard_key,
                    r.incident,
                    r.alertname,
                    r.parameters or {},
                )
                for r in rows
            ]

    async def lease_count(self) -> int:
        async with self.transaction() as conn:
            return int(await conn.scalar(select(func.count()).select_from(leases)) or 0)

    # --- helpers -----------------------------------------------------------------------

    async def _insert_ignore(self, conn: AsyncConnection, table: Table, **values: Any) -> bool:
        """Insert unless the primary key exists; True if this call inserted the row."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        statement = dialect.insert(table).values(**values).on_conflict_do_nothing()
        result = await conn.execute(statement)
        return bool(result.rowcount == 1)


def alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def _upgrade_to_head(connection: Any) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: Any, busy_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit acknowledged to Alertmanager survives power loss, not only a crash.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.close()
