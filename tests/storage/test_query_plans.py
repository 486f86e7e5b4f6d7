"""The decisions table's partial indexes: built as the schema says, and chosen by each
store's planner for the lookups that rely on them (the planner must prove that the query's
condition implies the index's `IS NOT NULL`, or it scans every decision ever recorded)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from responder.storage.store import Store

# (index, a condition of the queries that look decisions up through it, and where they are)
LOOKUPS = [
    ("ix_decisions_flow_run", "flow_run_id = 'r'", "Decisions.of_flow_run, Approvals.set"),
    ("ix_decisions_approval_state", "approval_state IN ('a', 'b')", "Approvals.awaiting"),
    ("ix_decisions_service", "service = 's'", "Decisions.active_of_service"),
    ("ix_decisions_rule", "rule = 'r' ORDER BY id DESC LIMIT 5", "Decisions.recent(rule=)"),
    ("ix_decisions_flow_created", "flow = 'f' AND created_at >= 0", "Decisions.active_of_flow"),
]


async def _definition(store: Store, index: str) -> str:
    if store.dialect == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    async with store.engine.connect() as conn:
        return str(await conn.scalar(text(query), {"name": index}))


async def _plan(store: Store, condition: str) -> str:
    query = f"SELECT id FROM decisions WHERE {condition}"
    async with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")
            return "\n".join(str(row[-1]) for row in rows)
        # On an empty table a sequential scan is cheapest; whether the index can be used
        # at all is the question.
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        rows = await conn.exec_driver_sql(f"EXPLAIN {query}")
        return "\n".join(str(row[0]) for row in rows)


@pytest.mark.parametrize(("index", "condition", "used_by"), LOOKUPS)
async def test_an_index_holds_only_the_decisions_that_have_its_value(
    store: Store, index: str, condition: str, used_by: str
) -> None:
    column = condition.split()[0]
    definition = await _definition(store, index)
    assert f"{column} IS NOT NULL" in definition.replace("(", "").replace(")", ""), definition


@pytest.mark.parametrize(("index", "condition", "used_by"), LOOKUPS)
async def test_the_planner_uses_the_partial_index_for_the_lookup(
    store: Store, index: str, condition: str, used_by: str
) -> None:
    plan = await _plan(store, condition)
    assert index in plan, f"{used_by}: {plan}"
