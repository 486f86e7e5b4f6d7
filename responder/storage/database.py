"""The database: engine, transactions, SQLite's write turn, migrations and health.

SQLAlchemy 2 async Core. SQLite in WAL mode is the embedded default; PostgreSQL serves
several replicas.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any, cast

from pydantic_core import PydanticSerializationError, to_json
from sqlalchemy import JSON, Table, delete, event, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from responder.exceptions import StoreDamaged, StoreUnavailable
from responder.storage.schema import control, metadata
from responder.storage.sqlite_connections import reset_sqlite, sqlite_pragmas

log = logging.getLogger(__name__)

# A connection's `info` key: how its transaction takes the write turn, until it has.
TAKE_TURN = "responder.take_turn"
# The statements before which the sqlite3 module BEGINs, taking SQLite's write lock.
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

# pg_advisory_xact_lock key serializing migrations ("responder" + 1; leadership uses + 0).
MIGRATION_KEY = 0x726573706F6E6401
# The newest migration's revision (migrations/versions/): a store whose `alembic_version`
# says so is at head, and its start neither imports nor runs alembic (with mako and pygments,
# ~10 MB and ~0.2 s). A new migration changes it; tests/storage/test_store.py holds it to
# alembic's own head.
HEAD_REVISION = "0013"


class Database:
    """The engine and its lifecycle: connections, transactions, migrations, health.

    One instance per process; the table groups (`Store`) share it."""

    def __init__(self, url: str, *, timeout_seconds: float = 5.0, durable: bool = True) -> None:
        """`durable` False: SQLite commits without waiting for the disk (a throwaway store:
        the sandbox's), a crash may lose them."""
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
        elif self.dialect == "sqlite":
            kwargs = {"pool_reset_on_return": None}  # `reset_sqlite` does it
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        # Store health for /readyz: a damaged file stays damaged; after a failed transaction
        # the next readiness check commits for real before it says ready again.
        self.damage: str | None = None
        self._failed = False
        self._turn: asyncio.Lock | None = None  # see `_turn_lock`
        self._turn_loop: asyncio.AbstractEventLoop | None = None
        if self.dialect == "sqlite":
            busy_ms = int(timeout_seconds * 1000)
            event.listen(
                self.engine.sync_engine,
                "connect",
                lambda dbapi_connection, _record: sqlite_pragmas(
                    dbapi_connection, busy_ms, durable
                ),
            )
            event.listen(self.engine.sync_engine, "before_cursor_execute", _writing)
            event.listen(self.engine.sync_engine, "reset", reset_sqlite)

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
    async def transaction(self, *, turn: bool = False) -> AsyncIterator[AsyncConnection]:
        """One atomic unit of work; any database failure becomes `StoreUnavailable`.

        `turn`: on SQLite, the transaction takes this process's write turn at its first write
        and keeps it until it ends (see `_writing`). The inbox's commits and the engine's
        transactions take it, so that a webhook waits only while the engine holds SQLite's
        write lock, and never polls SQLite's busy handler for it.
        """
        lock = self._turn_lock() if turn and self.dialect == "sqlite" else None
        taken = False

        async def take() -> None:
            nonlocal taken
            assert lock is not None
            await lock.acquire()
            taken = True

        try:
            async with self.engine.begin() as conn:
                if lock is None:
                    yield conn
                else:
                    info = conn.info  # the pooled connection's, read while it is valid
                    info[TAKE_TURN] = take
                    try:
                        yield conn
                    finally:
                        info.pop(TAKE_TURN, None)
        except (SQLAlchemyError, sqlite3.Error, OSError, TimeoutError) as exc:
            # sqlite3.Error: a statement straight to the driver (`write_many`, `fetch`).
            # OSError and TimeoutError: asyncpg failing to connect at all.
            self._failed = True
            if _is_damage(exc):
                self.damage = f"store {self._database} is damaged: {getattr(exc, 'orig', exc)}"
                raise StoreDamaged(self.damage) from exc
            raise StoreUnavailable(f"store error: {exc.__class__.__name__}: {exc}") from exc
        finally:
            if taken:
                assert lock is not None
                lock.release()

    def _turn_lock(self) -> asyncio.Lock:
        """This process's turn at SQLite's single write lock, taken in arrival order.

        Transactions that take it hold SQLite's write lock only once they hold the turn, so a
        webhook waits in this event loop for at most one engine write section, instead of
        polling SQLite's busy handler (1, 2, 5, 10 ... ms sleeps) while the engine takes the
        lock again and again. The turn is taken at the first write, not at BEGIN: the engine
        reads and decides before it writes, and a webhook's commit need not wait for that.
        """
        running = asyncio.get_running_loop()
        if self._turn is None or self._turn_loop is not running:
            self._turn, self._turn_loop = asyncio.Lock(), running
        return self._turn

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

    async def _driver(self, conn: AsyncConnection, statement: str) -> Any:
        """`conn`'s aiosqlite connection, ready for `statement`: a write waits for the
        transaction's write turn first, as `_writing` makes statements through SQLAlchemy."""
        take = _turn_to_take(conn.info, statement)
        if take is not None:
            await take()
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        return driver

    async def write_many(
        self, conn: AsyncConnection, statement: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        """Run one SQL statement (`?` placeholders) once per row, through the driver.

        For the engine loop's bulk writes: SQLAlchemy Core processes every parameter of every
        row, and its SQLite adapter hands each statement to aiosqlite's thread three or four
        times (cursor, execute, close); this is one hand-off per statement. The rows are the
        driver's values already: JSON serialized, booleans as `bool`. It runs in `conn`'s
        transaction: SQLite's driver opens it before a write if it is not open yet, and on
        PostgreSQL SQLAlchemy's adapter does.
        """
        if not rows:
            return
        if self.dialect == "sqlite":
            driver = await self._driver(conn, statement)
            await driver.executemany(statement, rows)
        else:
            await conn.exec_driver_sql(_numbered(statement), [tuple(row) for row in rows])

    async def fetch(
        self, conn: AsyncConnection, statement: str, parameters: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of one SQL query (`?` placeholders), through the driver (see
        `write_many`): one hand-off to aiosqlite's thread, no result processing."""
        if self.dialect == "sqlite":
            driver = await self._driver(conn, statement)
            return [tuple(row) for row in await driver.execute_fetchall(statement, parameters)]
        result = await conn.exec_driver_sql(_numbered(statement), tuple(parameters))
        return [tuple(row) for row in result]

    def json_value(self, value: Any) -> Any:
        """A JSON column's value as `fetch` returned it, decoded: SQLite's driver gives its
        text, PostgreSQL's (with SQLAlchemy's codecs) the value itself."""
        if self.dialect == "sqlite" and isinstance(value, str | bytes):
            return json.loads(value)
        return value

    async def insert_rows(
        self, conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
    ) -> list[int]:
        """Insert rows in bulk (every row with the same keys, defaults not filled in) in
        `conn`'s transaction; their ids (`table`'s integer `id`), in row order.

        On SQLite through the driver (`write_many`), JSON columns serialized here (`json_text`);
        on PostgreSQL through Core, with RETURNING.
        """
        if not rows:
            return []
        if self.dialect != "sqlite":
            insert = table.insert().returning(table.c.id, sort_by_parameter_order=True)
            return [int(i) for i in (await conn.execute(insert, list(rows))).scalars()]
        columns = list(rows[0])
        json_at = [i for i, column in enumerate(columns) if isinstance(table.c[column].type, JSON)]
        values = []
        for row in rows:
            value = list(row.values())
            for i in json_at:
                if value[i] is not None:
                    value[i] = json_text(value[i])
            values.append(value)
        names, marks = ", ".join(columns), placeholders(len(columns))
        await self.write_many(conn, f"INSERT INTO {table.name} ({names}) VALUES ({marks})", values)
        driver = (await conn.get_raw_connection()).driver_connection
        if driver is None or not driver.in_transaction:
            raise RuntimeError(f"rows of {table.name} must be inserted inside a transaction")
        # The transaction holds SQLite's write lock from its first write to the commit, and a
        # new row's id is one more than the largest: the ids are consecutive, ending at the
        # last one. RETURNING would cost a hand-off per row (SQLAlchemy's, or fetching them).
        [(last,)] = await self.fetch(conn, "SELECT last_insert_rowid()", ())
        return list(range(int(last) - len(rows) + 1, int(last) + 1))

    def insert(self, table: Table) -> Any:
        """This dialect's INSERT, which knows ON CONFLICT."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)


def json_text(value: Any) -> str:
    """`value` as JSON text, read back as SQLAlchemy's JSON type reads `json.dumps`'s: UTF-8
    instead of `\\u` escapes, and about five times faster (a storm writes a decision's labels
    per alert). NaN stays `NaN`, as `json.dumps` writes it; text that UTF-8 cannot hold (a
    lone surrogate) is left to `json.dumps`, which escapes it."""
    try:
        return to_json(value, inf_nan_mode="constants").decode()
    except PydanticSerializationError:
        return json.dumps(value)


def placeholders(count: int) -> str:
    """`?, ?, ...`: `count` placeholders for `write_many` and `fetch`."""
    return ", ".join("?" * count)


def _numbered(statement: str) -> str:
    """`?` placeholders as PostgreSQL's driver wants them: `$1`, `$2`, ... (the statements
    given here have no `?` of their own)."""
    parts = statement.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]


def alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def _upgrade_to_head(connection: Any) -> None:
    if _revision(connection) == HEAD_REVISION:
        return
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _revision(connection: Any) -> str | None:
    """The revision alembic last recorded in this store; None if none (a new store)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return str(rows[0][0]) if len(rows) == 1 else None


def _is_damage(exc: BaseException) -> bool:
    """SQLite says the file is corrupt, or not a database at all."""
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _writing(
    conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any, _many: bool
) -> None:
    """Before a transaction's first write, wait for its turn (`Database.transaction(turn=True)`).

    SQLite's write lock is taken at the first INSERT, UPDATE, DELETE or REPLACE: the sqlite3
    module BEGINs a transaction only then, and reads before it hold no lock. This runs in
    SQLAlchemy's sync layer on the event loop's thread, where `await_only` may wait.
    """
    take = _turn_to_take(conn.info, statement)
    if take is not None:
        await_only(take())


def _turn_to_take(info: dict[Any, Any], statement: str) -> Callable[[], Awaitable[None]] | None:
    """The write turn a transaction must take before `statement`, handed out once: None when
    it does not take turns, already holds its turn, or `statement` only reads."""
    take = info.get(TAKE_TURN)
    if take is None or not statement.lstrip()[:7].upper().startswith(WRITES):
        return None
    del info[TAKE_TURN]
    return cast("Callable[[], Awaitable[None]]", take)
