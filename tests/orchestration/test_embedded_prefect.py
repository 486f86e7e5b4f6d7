"""The embedded Prefect server's transactions on SQLite take the write lock when they begin
(orchestration/embedded_prefect.py): Prefect's own database configuration, run for real on
a SQLite file, in a process of its own (the seam is a process-wide setting of Prefect's)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Opens a transaction with Prefect's configuration, reads inside it, then asks whether
# another connection can still take the write lock (without waiting for it).
PROBE = textwrap.dedent(
    """
    import asyncio, sqlite3, sys
    from sqlalchemy import text
    from responder.orchestration.embedded_prefect import immediate_transactions

    installed = immediate_transactions() if sys.argv[1] == "installed" else False
    from prefect.server.database.dependencies import provide_database_interface

    async def probe(path):
        config = provide_database_interface().database_config
        engine = await config.engine()
        session = await config.session(engine)
        async with config.begin_transaction(session):
            await session.execute(text("SELECT count(*) FROM sqlite_master"))
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                locked = False
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc)
            other.close()
        await session.close()
        await engine.dispose()
        print(installed, locked)

    asyncio.run(probe(sys.argv[2]))
    """
)


def _last_line(code: str, args: list[str], database_url: str, home: Path) -> str:
    """The last line `code` prints, run in a fresh interpreter with Prefect's database there."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
    }
    result = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _probe(tmp_path: Path, mode: str) -> str:
    path = tmp_path / "prefect.db"
    return _last_line(PROBE, [mode, str(path)], f"sqlite+aiosqlite:///{path}", tmp_path / "home")


def test_a_transaction_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    assert _probe(tmp_path, "installed") == "True True"


def test_prefect_as_shipped_begins_deferred(tmp_path: Path) -> None:
    """What the launcher changes: without it, a reading transaction leaves the write lock
    free, and its first write can find its snapshot stale (Prefect's 503)."""
    assert _probe(tmp_path, "shipped") == "False False"


@pytest.mark.postgres
def test_prefect_on_postgresql_is_left_as_shipped(tmp_path: Path) -> None:
    from tests.helpers import POSTGRES_URL

    code = (
        "from responder.orchestration.embedded_prefect import immediate_transactions;"
        "print(immediate_transactions())"
    )
    assert _last_line(code, [], POSTGRES_URL, tmp_path / "home") == "False"
