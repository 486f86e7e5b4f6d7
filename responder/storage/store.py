"""The store: inbox, alert identities, decisions (the audit), guard leases and cooldowns.

SQLAlchemy 2 async Core. SQLite in WAL mode is the embedded default; PostgreSQL serves
several replicas. Uniqueness in the schema, not application checks, makes admission atomic.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
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
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

from responder.events.facts import Fact
from responder.events.webhook import Alert
from responder.exceptions import StoreDamaged, StoreUnavailable

log = logging.getLogger(__name__)

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

# Items (alerts, events) of an unprocessed inbox row already handled by committed engine
# transactions: a big webhook is decided over several short transactions, and a crash
# resumes after them. A table of its own: updating the inbox row would rewrite its body.
inbox_progress = Table(
    "inbox_progress",
    metadata,
    Column("inbox_id", Integer, primary_key=True, autoincrement=False),
    Column("handled", Integer, nullable=False),
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

# The partial indexes' condition; queries say it literally (a bound parameter would not
# let the planners use them).
ADMITTED = text("verdict = 'admitted'")
ADMITTED_ONLY: dict[str, Any] = {"sqlite_where": ADMITTED, "postgresql_where": ADMITTED}

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
    Column("parameters", JSON(none_as_null=True), nullable=True),
    Column("guard_key", Text, nullable=True),
    Column("verdict", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("flow_run_id", String(36), nullable=True),
    Column("flow_run_state", String(24), nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("detail", Text, nullable=True),
    # Which guard check refused (key_active, mutex_held, cooldown, budget, ...).
    Column("refusal", String(24), nullable=True),
    # The guard policy the decision was admitted under (cooldowns apply when it ends).
    Column("policy", JSON(none_as_null=True), nullable=True),
    # The Alertmanager silence set while the remediation runs, and whether it was lifted.
    Column("silence_id", String(64), nullable=True),
    Column("silence_lifted", Boolean, nullable=False, default=False),
    # The alert's `service` label, for the per-service blast radius.
    Column("service", String(256), nullable=True),
    # A run that asks a person: `APPROVAL_STATES`; `approval` says who answered, how and when.
    Column("approval_state", String(16), nullable=True),
    Column("approval", JSON(none_as_null=True), nullable=True),
    Index("ix_decisions_flow_run", "flow_run_id"),
    Index("ix_decisions_approval_state", "approval_state"),
    Index("ix_decisions_service", "service"),
    Index("ix_decisions_rule", "rule", "id"),
    Index("ix_decisions_flow_created", "flow", "created_at"),
    Index("ix_decisions_incident", "incident"),
    # The guard counts admitted decisions (attempts, budgets) once per decision: partial
    # indexes of the admitted ones keep that from scanning every decision ever recorded.
    Index("ix_decisions_admitted_incident", "incident", "rule", **ADMITTED_ONLY),
    Index("ix_decisions_admitted_flow", "flow", "created_at", **ADMITTED_ONLY),
    Index("ix_decisions_admitted_created", "created_at", **ADMITTED_ONLY),
)

# Names held by active remediations: `key:<guard key>` and `mutex:<lock name>`.
leases = Table(
    "leases",
    metadata,
    # Names are rendered from hostile labels and may be long: index their digest.
    Column("key_digest", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("decision_id", Integer, nullable=False, index=True),
    Column("flow_run_id", String(36), nullable=True),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

cooldowns = Table(
    "cooldowns",
    metadata,
    Column("key_digest", String(64), primary_key=True),
    Column("guard_key", Text, nullable=False),
    Column("until", Float, nullable=False),
    Column("decision_id", Integer, nullable=False),
)

# Facts asserted by rules, configuration or events, so the engine can rebuild them.
facts = Table(
    "facts",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("fields", JSON, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("source", String(128), nullable=False),
)

# Operator switches that every replica obeys, such as the global pause.
control = Table(
    "control",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)


# pg_advisory_xact_lock key serializing migrations ("responder" + 1; leadership uses + 0).
MIGRATION_KEY = 0x726573706F6E6401


@dataclass(frozen=True)
class PendingMessage:
    """An inbox row the engine has not processed yet."""

    id: int
    source: str
    body: bytes
    progress: int = 0  # items already handled (see `inbox_progress`)


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a guard name (a key or a mutex)."""

    name: str
    decision_id: int
    flow_run_id: str | None
    expires_at: float

    def gives_way(self, now: float) -> bool:
        """An expired lease whose decision has no flow run: `acquire_leases` ends it and
        takes its names (with a flow run, only the dispatcher, asking Prefect, may)."""
        return self.expires_at <= now and self.flow_run_id is None


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
    silence: bool = False
    # Machine batching: the list parameter merged with other runs', and the wait for them.
    batch_over: str | None = None
    batch_window: float = 0.0


@dataclass(frozen=True)
class Silence:
    """A silence Responder set in Alertmanager for a remediation that has since ended."""

    decision_id: int
    silence_id: str


# A run's approval: waiting for a person; being answered through Responder's API; answered.
AWAITING, ANSWERING, APPROVED, REJECTED = "awaiting", "answering", "approved", "rejected"
UNANSWERED = "unanswered"  # the run ended while it waited (timed out, cancelled)
APPROVAL_STATES = frozenset({AWAITING, ANSWERING, APPROVED, REJECTED, UNANSWERED})

LEASE_EXPIRED = "lease expired before a final state was seen; the key is free again"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class Store:
    """Async access to Responder's tables. One instance per process."""

    def __init__(self, url: str, *, timeout_seconds: float = 5.0) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self._database = parsed.database  # the SQLite file, if any
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
        # Store health for /readyz: a damaged file stays damaged; after a failed transaction
        # the next readiness check commits for real before it says ready again.
        self.damage: str | None = None
        self._failed = False
        # Group commit of the inbox: bodies waiting for the next commit, and its task.
        self._intake: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._turn: asyncio.Lock | None = None  # see `turn`
        self._turn_loop: asyncio.AbstractEventLoop | None = None
        if self.dialect == "sqlite":
            busy_ms = int(timeout_seconds * 1000)
            event.listen(
                self.engine.sync_engine,
                "connect",
                lambda dbapi_connection, _record: _sqlite_pragmas(dbapi_connection, busy_ms),
            )

    async def migrate(self) -> None:
        """Bring the schema to the newest alembic revision.

        Replicas starting together migrate one at a time: the first upgrades, the others
        then find the schema at head. On PostgreSQL a transaction-level advisory lock
        serializes them; on SQLite (replicas share one machine) an exclusive `flock`.
        """
        if self.dialect == "postgresql":
            async with self.engine.begin() as conn:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_KEY})
                await conn.run_sync(_upgrade_to_head)
            return
        database = self._database
        lock = Path(f"{database}.migrate.lock") if database not in (None, "", ":memory:") else None
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600) if lock else None
        try:
            if fd is not None:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            async with self.engine.begin() as conn:
                await conn.run_sync(_upgrade_to_head)
        finally:
            if fd is not None:
                os.close(fd)  # closing the file drops the flock

    async def close(self) -> None:
        await self.engine.dispose()

    async def drop_schema(self) -> None:
        """Drop every Responder table (tests and benchmarks start from an empty store)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One atomic unit of work; any database failure becomes `StoreUnavailable`."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # OSError and TimeoutError: asyncpg failing to connect at all.
            self._failed = True
            if _is_damage(exc):
                self.damage = f"store {self._database} is damaged: {getattr(exc, 'orig', exc)}"
                raise StoreDamaged(self.damage) from exc
            raise StoreUnavailable(f"store error: {exc.__class__.__name__}: {exc}") from exc

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """This process's turn at SQLite's single write lock, taken in arrival order.

        The inbox's commits and the engine's transactions take turns here, so a webhook
        waits for at most one (short) engine transaction, in this event loop, instead of
        polling SQLite's busy handler while the engine takes the lock again and again.
        PostgreSQL has no database-wide write lock: nothing to wait for.
        """
        if self.dialect != "sqlite":
            yield
            return
        running = asyncio.get_running_loop()
        if self._turn is None or self._turn_loop is not running:
            self._turn, self._turn_loop = asyncio.Lock(), running
        async with self._turn:
            yield

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(1))
            return True
        except (SQLAlchemyError, OSError):
            return False

    def check_file(self) -> None:
        """SQLite's `quick_check` of an existing database file, before anything else reads it.

        Raises `StoreDamaged`, naming the file, when it cannot be read whole.
        """
        path = self._database
        if self.dialect != "sqlite" or path in (None, "", ":memory:") or not Path(path).exists():
            return
        try:
            with closing(sqlite3.connect(path)) as db:
                problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            self.damage = (
                f"store {path} is damaged ({'; '.join(problems)[:300]}); "
                "restore it from a backup, or move it away to start empty"
            )
            raise StoreDamaged(self.damage)

    async def problem(self) -> str | None:
        """Why the store cannot take webhooks now (for /readyz), or None when it can.

        After a failed transaction (a full disk, say) this commits a webhook-sized row, so
        that readiness comes back once the store commits again, and not before.
        """
        if self.damage is not None:
            return self.damage
        if not await self.ping():
            return "the store does not answer"
        if self._failed:
            self._failed = False
            try:
                async with self.transaction() as conn:
                    await conn.execute(delete(control).where(control.c.name == "store-probe"))
                    probe = {"name": "store-probe", "value": {"pad": "x" * 65536}}
                    await conn.execute(control.insert().values(**probe, updated_at=time.time()))
            except StoreUnavailable as exc:
                # /readyz answers anyone: the driver's words (SQL, user, host) go to the log.
                log.warning("readiness probe: the store cannot commit: %s", exc)
                return "the store cannot commit (see Responder's log)"
        return None

    # --- inbox -------------------------------------------------------------------------

    async def add_to_inbox(self, source: str, body: bytes) -> int:
        """Commit a received body durably; only then may the sender be acknowledged.

        Group commit: bodies that arrive while a commit is under way are committed together
        by the next one, so concurrent webhooks share a transaction (and its fsync) instead
        of queueing for the write lock one by one. A lone body is committed at once.
        """
        running = asyncio.get_running_loop()
        future: asyncio.Future[int] = running.create_future()
        committer = self._committer
        if committer is not None and committer.get_loop() is not running:
            self._intake, committer = [], None  # left over from another event loop
        self._intake.append((source, body, future))
        if committer is None or committer.done():
            self._committer = asyncio.create_task(self._commit_intake())
        return await future

    async def _commit_intake(self) -> None:
        while self._intake:
            batch, self._intake = self._intake, []
            now = time.time()
            rows = [
                {"received_at": now, "source": source, "body": body} for source, body, _ in batch
            ]
            try:
                async with self.turn(), self.transaction() as conn:
                    result = await conn.execute(
                        inbox.insert().returning(inbox.c.id, sort_by_parameter_order=True), rows
                    )
                    ids = [int(row[0]) for row in result]
            except Exception as exc:  # every waiting sender gets the error, and a 503
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), inbox_id in zip(batch, ids, strict=True):
                if not future.done():  # a sender that went away is committed all the same
                    future.set_result(inbox_id)

    async def pending(self, limit: int, max_bytes: int | None = None) -> list[PendingMessage]:
        """The oldest unprocessed rows: at most `limit`, and, beyond the first, no more than
        `max_bytes` of bodies in all (the bodies are read only once the sizes fit)."""
        async with self.transaction() as conn:
            wanted: list[int] | None = None
            if max_bytes is not None:
                sizes = await conn.execute(
                    select(inbox.c.id, func.length(inbox.c.body).label("size"))
                    .where(inbox.c.processed.is_(False))
                    .order_by(inbox.c.id)
                    .limit(limit)
                )
                wanted, total = [], 0
                for r in sizes:
                    total += int(r.size or 0)
                    if wanted and total > max_bytes:
                        break
                    wanted.append(int(r.id))
                if not wanted:
                    return []
            query = (
                select(inbox.c.id, inbox.c.source, inbox.c.body, inbox_progress.c.handled)
                .outerjoin(inbox_progress, inbox_progress.c.inbox_id == inbox.c.id)
                .where(inbox.c.processed.is_(False))
                .order_by(inbox.c.id)
                .limit(limit)
            )
            if wanted is not None:
                query = query.where(inbox.c.id.in_(wanted))
            rows = await conn.execute(query)
            return [PendingMessage(r.id, r.source, bytes(r.body), r.handled or 0) for r in rows]

    async def backlog(self) -> int:
        async with self.transaction() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(inbox).where(inbox.c.processed.is_(False))
            )
            return int(count or 0)

    @staticmethod
    async def mark_processed(conn: AsyncConnection, inbox_ids: list[int]) -> None:
        if inbox_ids:
            await conn.execute(
                update(inbox).where(inbox.c.id.in_(inbox_ids)).values(processed=True)
            )
            await conn.execute(
                delete(inbox_progress).where(inbox_progress.c.inbox_id.in_(inbox_ids))
            )

    async def set_progress(self, conn: AsyncConnection, inbox_id: int, items: int) -> None:
        """Record that the first `items` items of a row are handled (in the same transaction
        as what handling them wrote)."""
        upsert = self._insert(inbox_progress).values(inbox_id=inbox_id, handled=items)
        await conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[inbox_progress.c.inbox_id], set_={"handled": items}
            )
        )

    # --- alert identity and facts ------------------------------------------------------

    @staticmethod
    async def known_identities(
        conn: AsyncConnection, alerts: list[Alert]
    ) -> dict[tuple[str, str, str], int]:
        """Every handled `(fingerprint, startsAt, status)` of these alerts' incidents."""
        # Two single-column INs (the key's columns) and the pairs compared here: an IN over
        # pairs costs SQLAlchemy far more to render. Filtering on the start too keeps a
        # flapping alert's long history out of the read.
        starts: dict[str, set[str]] = {}
        for alert in alerts:
            starts.setdefault(alert.fingerprint, set()).add(alert.starts_at.isoformat())
        fingerprints = sorted(starts)
        found: dict[tuple[str, str, str], int] = {}
        for start in range(0, len(fingerprints), 500):
            chunk = fingerprints[start : start + 500]
            rows = await conn.execute(
                select(
                    alert_events.c.fingerprint,
                    alert_events.c.starts_at,
                    alert_events.c.status,
                    alert_events.c.inbox_id,
                ).where(
                    alert_events.c.fingerprint.in_(chunk),
                    alert_events.c.starts_at.in_(sorted(set().union(*(starts[f] for f in chunk)))),
                )
            )
            for r in rows:
                if r.starts_at in starts[r.fingerprint]:
                    found[(r.fingerprint, r.starts_at, r.status)] = r.inbox_id
        return found

    async def add_identities(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """Record handled identities; one already there (another replica's) is kept."""
        await conn.execute(self._insert(alert_events).on_conflict_do_nothing(), rows)

    async def replace_firing(self, conn: AsyncConnection, changes: dict[str, Alert | None]) -> None:
        """Apply a batch's changes to the firing alerts: an Alert holds it, None drops it."""
        gone = [incident for incident, alert in changes.items() if alert is None]
        for start in range(0, len(gone), 500):
            await conn.execute(
                delete(firing_alerts).where(firing_alerts.c.incident.in_(gone[start : start + 500]))
            )
        rows = [
            {"incident": incident, "alert": alert.model_dump_json(by_alias=True)}
            for incident, alert in changes.items()
            if alert is not None
        ]
        if rows:
            upsert = self._insert(firing_alerts)
            await conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[firing_alerts.c.incident],
                    set_={"alert": upsert.excluded.alert},
                ),
                rows,
            )

    async def firing_alert(self, incident: str) -> Alert | None:
        """The firing alert of this incident, as last received; None once it resolved."""
        async with self.transaction() as conn:
            row = (
                await conn.execute(
                    select(firing_alerts.c.alert).where(firing_alerts.c.incident == incident)
                )
            ).first()
        return None if row is None else Alert.model_validate_json(row.alert)

    async def firing(self) -> list[Alert]:
        async with self.transaction() as conn:
            rows = await conn.execute(select(firing_alerts.c.alert))
            return [Alert.model_validate_json(r.alert) for r in rows]

    @staticmethod
    async def save_fact(conn: AsyncConnection, fact: Fact) -> None:
        await conn.execute(delete(facts).where(facts.c.id == fact.id))
        await conn.execute(
            facts.insert().values(
                id=fact.id,
                name=fact.name,
                fields=dict(fact.fields),
                expires_at=fact.expires_at,
                source=fact.source,
            )
        )

    @staticmethod
    async def delete_facts(conn: AsyncConnection, ids: list[str]) -> None:
        if ids:
            await conn.execute(delete(facts).where(facts.c.id.in_(ids)))

    async def live_facts(self, now: float) -> list[Fact]:
        async with self.transaction() as conn:
            rows = await conn.execute(select(facts).where(facts.c.expires_at > now))
            return [Fact(r.name, r.fields, r.expires_at, r.source) for r in rows]

    @staticmethod
    async def decided(conn: AsyncConnection, rule: str, incident: str) -> bool:
        """Whether `rule` already decided something for this incident."""
        found = await conn.scalar(
            select(decisions.c.id)
            .where(decisions.c.incident == incident, decisions.c.rule == rule)
            .limit(1)
        )
        return found is not None

    # --- decisions ---------------------------------------------------------------------

    async def record_decisions(
        self, conn: AsyncConnection, rows: list[dict[str, Any]]
    ) -> list[int]:
        """Insert decisions in bulk (every row with the same keys); their ids, in row order."""
        if self.dialect == "sqlite":
            await conn.execute(decisions.insert(), rows)
            driver = (await conn.get_raw_connection()).driver_connection
            if driver is not None and driver.in_transaction:
                # The transaction holds SQLite's write lock from its first write to the
                # commit, and a new row's id is one more than the largest: the ids are
                # consecutive, ending at the last one. RETURNING would double a row's cost.
                last = int(await conn.scalar(text("SELECT last_insert_rowid()")) or 0)
                return list(range(last - len(rows) + 1, last + 1))
            raise RuntimeError("decisions must be recorded inside a transaction")
        result = await conn.execute(
            decisions.insert().returning(decisions.c.id, sort_by_parameter_order=True), rows
        )
        return [int(i) for i in result.scalars()]

    async def decisions(
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
        async with self.transaction() as conn:
            rows = await conn.execute(query)
            return [dict(r._mapping) for r in rows]

    # --- approvals ---------------------------------------------------------------------

    async def set_approval(
        self,
        flow_run_id: str,
        state: str,
        expected: tuple[str | None, ...],
        approval: dict[str, Any] | None = None,
    ) -> bool:
        """Move the approval of this flow run's decision to `state` if it is in `expected`;
        False when it is not (someone else answered first)."""
        if state not in APPROVAL_STATES:
            raise ValueError(f"not an approval state: {state!r}")
        current: ColumnElement[bool] = decisions.c.approval_state.in_(
            [s for s in expected if s is not None]
        )
        if None in expected:
            current = or_(current, decisions.c.approval_state.is_(None))
        values: dict[str, Any] = {"approval_state": state}
        if approval is not None:
            values["approval"] = approval
        async with self.transaction() as conn:
            result = await conn.execute(
                update(decisions)
                .where(decisions.c.flow_run_id == flow_run_id, current)
                .values(**values)
            )
            return bool(result.rowcount)

    async def awaiting_approval(self) -> list[dict[str, Any]]:
        """Decisions whose run waits for a person's answer, oldest first."""
        query = (
            select(decisions)
            .where(
                decisions.c.approval_state.in_([AWAITING, ANSWERING]),
                decisions.c.finished_at.is_(None),
            )
            .order_by(decisions.c.id)
        )
        async with self.transaction() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    # --- guard leases ------------------------------------------------------------------

    async def acquire_leases(
        self, conn: AsyncConnection, names: list[str], decision_id: int, ttl: float, now: float
    ) -> LeaseHolder | None:
        """Take every name or none; return a live holder of one of them when refused.

        Names are taken in digest order, so two admissions that want overlapping names
        cannot deadlock on PostgreSQL.
        """
        rows = [
            {
                "key_digest": digest,
                "name": name,
                "decision_id": decision_id,
                "acquired_at": now,
                "expires_at": now + ttl,
            }
            for digest, name in sorted((key_digest(name), name) for name in set(names))
        ]
        digests = [row["key_digest"] for row in rows]
        for _ in range(2):
            statement = self._insert(leases).on_conflict_do_nothing().returning(leases.c.key_digest)
            taken = list((await conn.execute(statement, rows)).scalars())
            if len(taken) == len(rows):
                return None
            if taken:
                await conn.execute(delete(leases).where(leases.c.key_digest.in_(taken)))
            # A holder whose lease expired gives way, once: its decision ends as EXPIRED
            # (outcome and cooldown included), as the dispatcher's poll would end it.
            # Not if its flow run exists: only the dispatcher, which can ask Prefect whether
            # that run ended, may end such a decision.
            expired = list(
                await conn.scalars(
                    select(leases.c.decision_id)
                    .where(
                        leases.c.key_digest.in_(digests),
                        leases.c.expires_at <= now,
                        leases.c.flow_run_id.is_(None),
                    )
                    .distinct()
                )
            )
            if not expired:
                break
            for holder in expired:
                # A holder already final (a lost release) still frees its names; one whose
                # run was created meanwhile keeps them.
                await self._finish_in(conn, holder, "EXPIRED", LEASE_EXPIRED, now, runless=True)
        holder = await self.lease_holder(conn, names)
        # Not all names were taken, even if their holder let go meanwhile: refuse.
        return holder or LeaseHolder(str(rows[0]["name"]), 0, None, now)

    async def lease_holder(self, conn: AsyncConnection, names: list[str]) -> LeaseHolder | None:
        """A holder of any of `names`, if there is one (an expired lease still holds until
        its decision is ended); the key's holder before a mutex's."""
        held = await self.lease_holders(conn, names)
        return held[min(held)] if held else None  # `key:...` sorts before `mutex:...`

    @staticmethod
    async def lease_holders(
        conn: AsyncConnection, names: list[str] | None, *, limit: int | None = None
    ) -> dict[str, LeaseHolder]:
        """The holders of those of `names` that are held (of every held name if None, at
        most `limit` of them), by name."""
        query = select(
            leases.c.name, leases.c.decision_id, leases.c.flow_run_id, leases.c.expires_at
        ).limit(limit)
        if names is not None:
            query = query.where(leases.c.key_digest.in_([key_digest(n) for n in names]))
        return {
            r.name: LeaseHolder(r.name, r.decision_id, r.flow_run_id, r.expires_at)
            for r in await conn.execute(query)
        }

    @staticmethod
    async def cooldown_until(conn: AsyncConnection, key: str, now: float) -> float | None:
        until = await conn.scalar(
            select(cooldowns.c.until).where(
                cooldowns.c.key_digest == key_digest(key), cooldowns.c.until > now
            )
        )
        return float(until) if until is not None else None

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
        holders = select(leases.c.decision_id).where(leases.c.expires_at > now)
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(decisions)
                .where(decisions.c.flow == flow, decisions.c.id.in_(holders))
            )
            or 0
        )

    @staticmethod
    async def active_of_service(conn: AsyncConnection, service: str, now: float) -> int:
        """Decisions about `service` (any flow) that hold a live lease."""
        holders = select(leases.c.decision_id).where(leases.c.expires_at > now)
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(decisions)
                .where(decisions.c.service == service, decisions.c.id.in_(holders))
            )
            or 0
        )

    @staticmethod
    async def release(conn: AsyncConnection, decision_id: int) -> None:
        """Free every name a decision holds (in the caller's transaction)."""
        await conn.execute(delete(leases).where(leases.c.decision_id == decision_id))

    @staticmethod
    async def set_verdict(
        conn: AsyncConnection, decision_id: int, verdict: str, refusal: str | None, reason: str
    ) -> None:
        await conn.execute(
            update(decisions)
            .where(decisions.c.id == decision_id)
            .values(verdict=verdict, refusal=refusal, reason=reason)
        )

    # --- control -----------------------------------------------------------------------

    async def control_value(self, conn: AsyncConnection, name: str) -> Any:
        return await conn.scalar(select(control.c.value).where(control.c.name == name))

    async def guard_state(self) -> dict[str, Any]:
        """Held names and live cooldowns, for operators."""
        now = time.time()
        async with self.transaction() as conn:
            held = await conn.execute(
                select(
                    leases.c.name, leases.c.decision_id, leases.c.flow_run_id, leases.c.expires_at
                )
                .where(leases.c.expires_at > now)
                .order_by(leases.c.acquired_at)
            )
            cooling = await conn.execute(
                select(cooldowns.c.guard_key, cooldowns.c.until, cooldowns.c.decision_id)
                .where(cooldowns.c.until > now)
                .order_by(cooldowns.c.until)
            )
            return {
                "leases": [dict(r._mapping) for r in held],
                "cooldowns": [dict(r._mapping) for r in cooling],
                "pause": await self.control_value(conn, "pause"),
            }

    async def serialize(self, conn: AsyncConnection, name: str) -> None:
        """Hold a row lock on `name` until the transaction ends.

        Checks that count (budgets, blast radius) are otherwise racy: two transactions could
        both count N-1. Writing first also makes SQLite take its write lock before reading.
        One upsert: the conflict path locks the existing row.
        """
        now = time.time()
        await conn.execute(
            self._insert(control)
            .values(name=name, value={}, updated_at=now)
            .on_conflict_do_update(index_elements=[control.c.name], set_={"updated_at": now})
        )

    async def set_control(self, name: str, value: Any) -> None:
        async with self.transaction() as conn:
            await conn.execute(delete(control).where(control.c.name == name))
            if value is not None:
                await conn.execute(
                    control.insert().values(name=name, value=value, updated_at=time.time())
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

    async def finish(
        self,
        decision_id: int,
        state: str,
        detail: str | None = None,
        now: float | None = None,
        *,
        runless: bool = False,
    ) -> bool:
        """Record a final state, free the decision's names and start its key's cooldown.

        The outcome is also committed to the inbox, in the same transaction, so the engine
        loop hears it in order and rules can react to it (the closed loop). False if the
        decision was already final: the first final state wins. With `runless`, only a
        decision that has no flow run is ended: one whose run was created meanwhile is not.
        """
        async with self.transaction() as conn:
            return await self._finish_in(
                conn,
                decision_id,
                state,
                detail,
                time.time() if now is None else now,
                runless=runless,
            )

    async def _finish_in(
        self,
        conn: AsyncConnection,
        decision_id: int,
        state: str,
        detail: str | None,
        now: float,
        *,
        runless: bool = False,
    ) -> bool:
        unfinished = [decisions.c.id == decision_id, decisions.c.finished_at.is_(None)]
        if runless:
            unfinished.append(decisions.c.flow_run_id.is_(None))
        result = await conn.execute(
            update(decisions)
            .where(*unfinished)
            .values(flow_run_state=state, finished_at=now, detail=detail)
        )
        if runless and not result.rowcount:
            run = await conn.scalar(
                select(decisions.c.flow_run_id).where(decisions.c.id == decision_id)
            )
            if run is not None:
                return False  # its run exists after all: only Prefect's state may end it
        await conn.execute(delete(leases).where(leases.c.decision_id == decision_id))
        if not result.rowcount:
            return False
        row = (
            await conn.execute(
                select(
                    decisions.c.guard_key,
                    decisions.c.policy,
                    decisions.c.rule,
                    decisions.c.flow,
                    decisions.c.incident,
                    decisions.c.labels,
                ).where(decisions.c.id == decision_id)
            )
        ).one()
        outcome = {
            "decision_id": decision_id,
            "state": state,
            "rule": row.rule,
            "flow": row.flow,
            "key": row.guard_key,
            "incident": row.incident,
            "labels": row.labels,
        }
        await conn.execute(
            inbox.insert().values(
                received_at=now, source="outcome", body=json.dumps(outcome).encode()
            )
        )
        policy = row.policy or {}
        seconds = policy.get("cooldown", 0.0)
        if state != "COMPLETED" and policy.get("cooldown_failed") is not None:
            seconds = policy["cooldown_failed"]
        if seconds and row.guard_key is not None:
            digest = key_digest(row.guard_key)
            await conn.execute(delete(cooldowns).where(cooldowns.c.key_digest == digest))
            await conn.execute(
                cooldowns.insert().values(
                    key_digest=digest,
                    guard_key=row.guard_key,
                    until=now + seconds,
                    decision_id=decision_id,
                )
            )
        return True

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
                decisions.c.labels,
                decisions.c.policy,
            )
            .where(decisions.c.id.in_(select(leases.c.decision_id)))
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
                    r.labels or {},
                    bool((r.policy or {}).get("silence")),
                    ((r.policy or {}).get("batch") or {}).get("over"),
                    float(((r.policy or {}).get("batch") or {}).get("window") or 0.0),
                )
                for r in rows
            ]

    async def set_silence(self, decision_id: int, silence_id: str) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                update(decisions).where(decisions.c.id == decision_id).values(silence_id=silence_id)
            )

    async def silences_to_lift(self) -> list[Silence]:
        """Silences of remediations that ended, not yet lifted."""
        async with self.transaction() as conn:
            rows = await conn.execute(
                select(decisions.c.id, decisions.c.silence_id).where(
                    decisions.c.silence_id.is_not(None),
                    decisions.c.finished_at.is_not(None),
                    decisions.c.silence_lifted.is_(False),
                )
            )
            return [Silence(r.id, r.silence_id) for r in rows]

    async def silence_lifted(self, decision_id: int) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                update(decisions).where(decisions.c.id == decision_id).values(silence_lifted=True)
            )

    async def still_wanted(self, decision_id: int) -> str | None:
        """Whether an admitted decision should still get its flow run.

        None when it ended (expired, finished) or holds no name any more; "paused" while the
        global pause is on; "yes" otherwise.
        """
        async with self.transaction() as conn:
            open_decision = await conn.scalar(
                select(decisions.c.id).where(
                    decisions.c.id == decision_id,
                    decisions.c.finished_at.is_(None),
                    decisions.c.flow_run_id.is_(None),
                    decisions.c.id.in_(select(leases.c.decision_id)),
                )
            )
            if open_decision is None:
                return None
            return "paused" if await self.control_value(conn, "pause") else "yes"

    async def expired_decisions(self, now: float) -> list[tuple[int, str | None]]:
        """Decisions whose leases all expired before a final state was seen, with their run."""
        async with self.transaction() as conn:
            live = select(leases.c.decision_id).where(leases.c.expires_at > now)
            rows = await conn.execute(
                select(leases.c.decision_id, leases.c.flow_run_id)
                .where(leases.c.expires_at <= now, leases.c.decision_id.not_in(live))
                .distinct()
            )
            return [(r.decision_id, r.flow_run_id) for r in rows]

    async def renew(self, decision_ids: list[int], until: float) -> None:
        """Extend the leases of decisions whose runs are still going."""
        if decision_ids:
            async with self.transaction() as conn:
                await conn.execute(
                    update(leases)
                    .where(leases.c.decision_id.in_(decision_ids))
                    .values(expires_at=until)
                )

    async def lease_count(self) -> int:
        async with self.transaction() as conn:
            return int(await conn.scalar(select(func.count()).select_from(leases)) or 0)

    # --- helpers -----------------------------------------------------------------------

    def _insert(self, table: Table) -> Any:
        """This dialect's INSERT, which knows ON CONFLICT."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)


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


def _is_damage(exc: BaseException) -> bool:
    """SQLite says the file is corrupt, or not a database at all."""
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _sqlite_pragmas(dbapi_connection: Any, busy_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit acknowledged to Alertmanager survives power loss, not only a crash.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.close()


def run_status(row: dict[str, Any]) -> str | None:
    """What a decision's run is doing, as operators read it: its final state (as Prefect
    names it, e.g. COMPLETED), `awaiting approval`, `running`, or None without a run."""
    if row.get("flow_run_state"):
        return str(row["flow_run_state"])
    if row.get("approval_state") in (AWAITING, ANSWERING):
        return "awaiting approval"
    return "running" if row.get("flow_run_id") else None
