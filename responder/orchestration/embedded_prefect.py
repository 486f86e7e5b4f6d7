"""The embedded default's Prefect server: Prefect's own `prefect server start`, whose write
transactions on SQLite take the write lock when they begin.

Prefect begins its transactions on SQLite DEFERRED (unless it reads `FOR UPDATE`): a
transaction that reads and then writes, such as creating a flow run from a deployment, takes
the write lock only at its first write. If any other writer committed after its read (a run's
state change, a task run, a log, another creation), its snapshot is stale and SQLite fails
the write at once, without waiting out the busy timeout. Prefect's API answers 503 and the
client asks again. In a burst of 50 remediations that was about 150 failed creations, each
a request the server had half done, and the bulk of the burst's wait
(docs/benchmarks.md, "Prefect's transactions on SQLite begin IMMEDIATE").

`BEGIN IMMEDIATE` takes the write lock at the start, so a writer that finds it taken waits
in SQLite's busy handler (Prefect sets 60 s) and then runs on a fresh snapshot: none fails.
Reads outside a transaction are unchanged and run beside the writer (WAL).

It is installed through Prefect's own seam for its database (`MODELS_DEPENDENCIES`, which
Prefect's `temporary_database_config` also sets), in the server's process only. A Prefect
server of the user's (`prefect_api_url`), and Prefect on PostgreSQL, are untouched. If a
Prefect release no longer has the seam, the server starts as Prefect ships it, and says so.

Run as `python -m responder.orchestration.embedded_prefect --host H --port P`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

log = logging.getLogger(__name__)


def immediate_transactions() -> bool:
    """Make Prefect's server begin its SQLite transactions IMMEDIATE; whether it could.

    Call before the server's app is created. Does nothing for PostgreSQL.
    """
    try:
        from prefect.server.database import configurations, dependencies
        from prefect.server.utilities.database import get_dialect
        from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
    except ImportError as exc:
        log.warning("Prefect's server as shipped: its database seam is gone (%s)", exc)
        return False
    mode: ContextVar[Any] | None = getattr(configurations, "SQLITE_BEGIN_MODE", None)
    base = getattr(configurations, "AioSqliteConfiguration", None)
    seam = getattr(dependencies, "MODELS_DEPENDENCIES", None)
    if mode is None or base is None or not isinstance(seam, dict):
        log.warning("Prefect's server as shipped: its SQLite configuration has changed")
        return False
    url = PREFECT_API_DATABASE_CONNECTION_URL.value()
    if get_dialect(url).name != "sqlite":
        return False
    seam["database_config"] = _immediate(base, mode)(connection_url=url)
    return True


def _immediate(base: type[Any], mode: ContextVar[Any]) -> type[Any]:
    """Prefect's SQLite configuration `base`, every transaction begun IMMEDIATE (`mode` is
    the context variable its `begin_sqlite_stmt` reads)."""

    class ImmediateSqliteConfiguration(base):  # type: ignore[misc]
        @asynccontextmanager
        async def begin_transaction(
            self, session: Any, with_for_update: bool = False
        ) -> AsyncGenerator[Any, None]:
            token = mode.set("IMMEDIATE")
            try:
                async with session.begin() as transaction:
                    yield transaction
            finally:
                mode.reset(token)

    return ImmediateSqliteConfiguration


def main(argv: list[str]) -> None:
    """`prefect server start` with `argv`, after `immediate_transactions`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if immediate_transactions():
        log.info("Prefect's SQLite transactions begin IMMEDIATE")
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", *argv]  # what Prefect's entry point reads
    app()


if __name__ == "__main__":
    main(sys.argv[1:])
