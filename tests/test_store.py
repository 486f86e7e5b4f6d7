"""The store's schema comes from alembic migrations, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from responder.store import Store, alembic_config, metadata


def _diff(connection: Any) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


def _downgrade_to_base(connection: Any) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


async def test_migrations_build_exactly_the_models_schema(store: Store) -> None:
    async with store.engine.begin() as conn:
        assert await conn.run_sync(_diff) == []


async def test_migrations_go_down_and_up_again(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.run_sync(_downgrade_to_base)
    await store.migrate()
    await store.migrate()  # idempotent at head
    async with store.engine.begin() as conn:
        assert await conn.run_sync(_diff) == []
