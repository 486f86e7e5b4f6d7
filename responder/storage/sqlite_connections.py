"""How a SQLite connection is set up when opened, and reset when it returns to the pool."""

from __future__ import annotations

from typing import Any


def sqlite_pragmas(dbapi_connection: Any, busy_ms: int, durable: bool = True) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit acknowledged to Alertmanager survives power loss, not only a crash.
    # OFF only for a throwaway store, where nothing needs to survive.
    cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.close()


def reset_sqlite(dbapi_connection: Any, record: Any, state: Any) -> None:
    """A SQLite connection back in the pool is rolled back only if a transaction is open.

    The pool's own reset rolls back every connection it gets back, each time a hand-off to
    aiosqlite's thread, though a transaction that committed leaves nothing to roll back (the
    sqlite3 module opens one only before a write). A connection the pool discards instead
    (`terminate_only`, or garbage-collected outside the event loop) is closed, which rolls
    back whatever was open.
    """
    if state.terminate_only or not state.asyncio_safe or state.transaction_was_reset:
        return
    driver = record.driver_connection
    if driver is None or driver.in_transaction:
        dbapi_connection.rollback()
