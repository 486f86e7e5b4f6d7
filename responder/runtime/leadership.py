"""Leadership: exactly one replica runs the engine loop and dispatch.

Every replica accepts webhooks into the shared inbox. On PostgreSQL the leader is the
holder of a session advisory lock on its own connection: when the leader dies, or its
connection does, the server frees the lock and another replica takes it. On SQLite, where
replicas can only share one machine, the lock is an exclusive `flock` on a file beside the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from responder.storage.store import Store

log = logging.getLogger(__name__)

# pg_advisory_lock takes a 64-bit key; this one spells "responder" in the top bytes.
ADVISORY_KEY = 0x726573706F6E6400


class Leadership:
    """Try to become the leader; tell whether this replica still is."""

    def __init__(self, store: Store, lock_file: Path) -> None:
        self._store = store
        self._lock_file = lock_file
        self._conn: Any = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    async def acquire(self) -> bool:
        """Take the lock if it is free; True if this replica leads (now or already)."""
        if self.held:
            return await self.still_held()
        if self._store.dialect == "postgresql":
            return await self._acquire_advisory()
        return self._acquire_flock()

    async def still_held(self) -> bool:
        """False once the lock is lost (the leader's connection to PostgreSQL died)."""
        if self._conn is None:
            return self._fd is not None
        try:
            async with asyncio.timeout(5):
                await self._conn.execute(text("SELECT 1"))
                await self._conn.commit()  # never sit "idle in transaction"
            return True
        except (SQLAlchemyError, OSError, TimeoutError):
            log.error("lost the leader's connection to PostgreSQL; no longer leading")
            await self.release()
            return False

    async def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self._conn.close()
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    async def _acquire_advisory(self) -> bool:
        try:
            conn = await self._store.engine.connect()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("cannot reach PostgreSQL to take the leader lock: %s", exc)
            return False
        try:
            taken = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY})
            await conn.commit()  # the lock is the session's; end the implicit transaction
        except (SQLAlchemyError, OSError):
            await conn.close()
            return False
        if not taken:
            await conn.close()
            return False
        self._conn = conn
        return True

    def _acquire_flock(self) -> bool:
        self._lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True
