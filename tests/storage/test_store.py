"""The store's schema comes from alembic migrations, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text, update

from responder.control.guard import Guard
from responder.decision.decisions import Decision
from responder.events.webhook import Alert
from responder.storage.database import HEAD_REVISION, alembic_config
from responder.storage.schema import control, inbox, metadata
from responder.storage.store import Store


def _diff(connection: Any) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


def _downgrade_to(revision: str) -> Any:
    def run(connection: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    return run


async def test_migrations_build_exactly_the_models_schema(store: Store) -> None:
    async with store.engine.begin() as conn:
        assert await conn.run_sync(_diff) == []


async def test_migrations_go_down_and_up_again(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.run_sync(_downgrade_to("base"))
    await store.migrate()
    await store.migrate()  # idempotent at head
    async with store.engine.begin() as conn:
        assert await conn.run_sync(_diff) == []


def test_the_head_a_start_compares_with_is_alembics_head() -> None:
    # A new migration without HEAD_REVISION moved: starts would skip it.
    assert HEAD_REVISION == ScriptDirectory.from_config(alembic_config()).get_current_head()


MIGRATE = """\
import asyncio, sys
from responder.storage.store import Store

async def main():
    store = Store(sys.argv[1])
    await store.migrate()
    await store.close()

asyncio.run(main())
print(sorted({m.split(".")[0] for m in sys.modules} & {"alembic", "mako", "pygments"}))
"""


def test_a_store_at_head_starts_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"

    def migrate() -> str:
        done = subprocess.run(
            [sys.executable, "-c", MIGRATE, url], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert migrate() == "['alembic', 'mako', 'pygments']"  # a new store: migrated
    assert migrate() == "[]"  # at head: alembic is not imported


async def test_a_lease_held_under_the_first_schema_survives_the_upgrade(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.run_sync(_downgrade_to("0001"))
        await conn.execute(
            text(
                "INSERT INTO leases (key_digest, guard_key, decision_id, acquired_at, expires_at)"
                " VALUES (:digest, :key, 7, 0, 1e12)"
            ),
            {"digest": hashlib.sha256(b"restart/host-1").hexdigest(), "key": "restart/host-1"},
        )
    await store.migrate()
    alert = Alert(
        status="firing",
        labels={"alertname": "ServiceDown"},
        startsAt=datetime(2026, 11, 25, tzinfo=UTC),
        fingerprint="aa",
    )
    decision = Decision("r", "restart-service", {}, "restart/host-1", alert)
    async with store.transaction() as conn:
        admission = await Guard(store, 60).admit(conn, decision, inbox_id=1)
    assert admission.refusal == "key_active"
    assert "held by decision 7" in admission.reason


async def test_concurrent_intake_is_committed_in_groups_and_every_body_gets_its_id(
    store: Store,
) -> None:
    import asyncio

    bodies = [f'{{"n": {i}}}'.encode() for i in range(200)]
    ids = await asyncio.gather(*(store.inbox.add("alertmanager", body) for body in bodies))
    assert len(set(ids)) == 200
    pending = await store.inbox.pending(1000)
    by_id = {message.id: message.body for message in pending}
    assert [by_id[i] for i in ids] == bodies  # each sender got the id of its own body


@pytest.mark.parametrize("through", ["sqlalchemy", "driver"])
async def test_an_inbox_commit_waits_for_an_engine_transaction_only_once_it_writes(
    store: Store, through: str
) -> None:
    """The engine's transactions take SQLite's write turn at their first write, whether it
    goes through SQLAlchemy or straight to the driver (`Database.write_many`): a webhook
    committed while one only reads and decides is not held up; one committed after it wrote
    waits for its commit (on SQLite: one writer at a time), then goes through."""
    import asyncio

    def turn_held() -> bool:
        return store._turn is not None and store._turn.locked()

    async with store.transaction(turn=True) as conn:
        await conn.execute(select(control))  # reading, as the engine does first
        committed = await asyncio.wait_for(store.inbox.add("alertmanager", b"{}"), 5)
        assert not turn_held()
        if through == "sqlalchemy":
            await conn.execute(control.insert().values(name="engine", value={}, updated_at=1.0))
        else:
            await store.write_many(
                conn,
                "INSERT INTO control (name, value, updated_at) VALUES (?, ?, ?)",
                [("engine", "{}", 1.0)],
            )
        assert turn_held() is (store.dialect == "sqlite")
        waiting = asyncio.create_task(store.inbox.add("alertmanager", b"{}"))
        await asyncio.sleep(0.2)
        assert waiting.done() is (store.dialect != "sqlite")
    assert await asyncio.wait_for(waiting, 5) > committed
    assert [m.id for m in await store.inbox.pending(10)] == [committed, await waiting]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_replicas_starting_together_migrate_one_at_a_time(
    backend: str, tmp_path: Path
) -> None:
    import asyncio

    from tests.helpers import POSTGRES_URL, reset_postgres

    if backend == "postgresql":
        await reset_postgres()
        url = POSTGRES_URL
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    stores = [Store(url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))  # a race without the lock
        assert await stores[0].inbox.add("alertmanager", b"{}") > 0
    finally:
        for s in stores:
            await s.close()


async def test_pending_reads_at_most_max_bytes_of_bodies_beyond_the_first_row(
    store: Store,
) -> None:
    for _ in range(3):
        await store.inbox.add("alertmanager", b"x" * 3000)
    assert [len(m.body) for m in await store.inbox.pending(10, max_bytes=1000)] == [3000]
    assert len(await store.inbox.pending(10, max_bytes=6000)) == 2
    assert len(await store.inbox.pending(2)) == 2
    assert len(await store.inbox.pending(10)) == 3


def test_a_damaged_sqlite_file_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, rules_dir: Path
) -> None:
    import asyncio
    import os
    import subprocess
    import sys

    from tests.helpers import damage_tables, free_port, make_settings

    settings = make_settings(tmp_path, rules_dir)
    database = settings.data_dir / "responder.db"

    async def fill() -> None:
        store = Store(settings.store_url)
        await store.migrate()
        for n in range(50):
            await store.inbox.add("alertmanager", b'{"n": %d}' % n)
        await store.close()

    asyncio.run(fill())
    damage_tables(database, ["inbox", "decisions"])
    env = {
        **os.environ,
        "RESPONDER_DATA_DIR": str(settings.data_dir),
        "RESPONDER_RULES_DIR": str(rules_dir),
        "RESPONDER_RULE_VARS": '{"service_control_url": "http://127.0.0.1:9"}',
        "RESPONDER_PORT": str(free_port()),
    }
    # A real process: before the check, it would serve (and never exit by itself).
    result = subprocess.run(
        [sys.executable, "-m", "responder", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert f"store {database} is damaged" in errors[0]
    assert "restore it from a backup" in output


async def test_the_next_timer_and_the_next_end_of_a_timed_wait(store: Store) -> None:
    # What a rule test's clock stops at (authoring.sandbox.run_until), on both backends.
    async with store.transaction() as conn:
        assert await store.timers.next_due(conn) is None
        assert await store.incidents.next_until(conn) is None
        timer = {"kind": "retry", "rule": "r", "decision_id": None, "reason": "", "created_at": 0}
        await store.timers.set(
            conn,
            [
                {**timer, "incident": "a", "due_at": 50.0},
                {**timer, "incident": "b", "due_at": 20.5},
            ],
        )
        incident = {
            "alertname": "A",
            "firing": True,
            "state": "waiting",
            "due": False,
            "updated_at": 0,
        }
        await store.incidents.save(
            conn,
            [
                {**incident, "incident": "x", "waiting_on": "cooldown", "until": 90.0},
                {**incident, "incident": "y", "waiting_on": "budget", "until": 70.0},
                {**incident, "incident": "z", "waiting_on": "key_active", "until": 10.0},
                {
                    **incident,
                    "incident": "w",
                    "firing": False,
                    "waiting_on": "cooldown",
                    "until": 5.0,
                },
            ],
        )
    async with store.transaction() as conn:
        assert await store.timers.next_due(conn) == 20.5
        assert await store.incidents.next_until(conn) == 70.0


@pytest.mark.parametrize(("durable", "synchronous"), [(True, 2), (False, 0)])
async def test_only_a_throwaway_sqlite_store_commits_without_waiting_for_the_disk(
    tmp_path: Path, durable: bool, synchronous: int
) -> None:
    """FULL (2) for the service's store; OFF (0) only when asked (the sandbox's)."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", durable=durable)
    try:
        async with store.engine.connect() as conn:
            found = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
        assert found == synchronous
    finally:
        await store.close()


async def test_the_engine_gets_the_intakes_parse_only_with_the_very_body_it_was_made_of(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from responder.storage import inbox as inbox_module

    parse = object()  # what the intake validated the body into
    first = await store.inbox.add("alertmanager", b'{"n": 1}', parse)
    second = await store.inbox.add("alertmanager", b'{"n": 2}')
    pending = await store.inbox.pending(10)
    assert [(m.id, m.parsed) for m in pending] == [(first, parse), (second, None)]
    # Handed out once: read again (its transaction failed), the row is parsed from its body.
    assert [m.parsed for m in await store.inbox.pending(10)] == [None, None]

    # A row whose body is not the one parsed (its id given again) is parsed from its body.
    third = await store.inbox.add("alertmanager", b'{"n": 3}', object())
    async with store.transaction() as conn:
        await conn.execute(update(inbox).where(inbox.c.id == third).values(body=b"{}"))
    assert [m.parsed for m in await store.inbox.pending(10) if m.id == third] == [None]

    # Parses are kept up to PARSED_BYTES of bodies, the oldest dropped first.
    monkeypatch.setattr(inbox_module, "PARSED_BYTES", 20)
    kept = {await store.inbox.add("alertmanager", b"x" * 8, n): n for n in range(4)}
    assert {m.id: m.parsed for m in await store.inbox.pending(10) if m.id in kept} == {
        i: (n if n >= 2 else None) for i, n in kept.items()
    }


async def test_a_connection_back_in_the_pool_with_a_transaction_open_is_rolled_back(
    store: Store,
) -> None:
    """On SQLite the pool rolls back only a connection whose transaction is still open
    (`reset_sqlite`); a write left uncommitted must not survive into the next use."""
    insert = "INSERT INTO control (name, value, updated_at) VALUES (?, ?, ?)"
    async with store.engine.connect() as conn:  # a driver write, outside SQLAlchemy's own
        await store.write_many(conn, insert, [("left-open", "{}", 1.0)])
    async with store.transaction() as conn:
        await conn.execute(control.insert().values(name="next", value={}, updated_at=2.0))
    async with store.transaction() as conn:
        names = set((await conn.execute(select(control.c.name))).scalars())
    assert "next" in names
    assert "left-open" not in names
