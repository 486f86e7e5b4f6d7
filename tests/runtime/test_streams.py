"""The Redis Streams source against a real Redis: each entry's CloudEvent committed to the
inbox before XACK, a consumer group shared by replicas, and a consumer's death on either
side of the commit costing neither an event nor a duplicate event."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from responder.events.facts import Fact
from responder.runtime.service import Service
from responder.runtime.streams import RedisStream
from responder.storage.schema import inbox
from tests.helpers import make_settings, wait_for


class Died(Exception):
    """The consumer's process dies here (as kill -9 would: nothing after it runs)."""


@pytest.fixture
def stream(redis_url: str) -> Iterator[str]:
    name = f"responder-test-{uuid.uuid4().hex}"
    yield name
    with redis.Redis.from_url(redis_url) as client:
        client.delete(name)


# A rule on the stream's events (dry run: decisions are recorded, no flow runs).
RERUN = """
rules:
  - name: rerun-backup
    event: ['type="backup.failed"', 'source="backup-scheduler"']
    run:
      flow: http-call
      parameters: {url: "http://127.0.0.1:9/backup/{{ event.subject }}"}
    guard: {key: "backup/{{ event.subject }}"}
"""


@pytest.fixture
async def service(tmp_path: Path, rules_dir: Path) -> AsyncIterator[Service]:
    """A leader whose loop decides what the tests' consumers commit to its inbox."""
    (rules_dir / "backups.yaml").write_text(RERUN)
    service = Service(make_settings(tmp_path, rules_dir, dry_run=True))
    await service.start()
    yield service
    await service.stop()


def consumer(
    service: Service,
    redis_url: str,
    stream: str,
    name: str,
    claim_idle: float = 60.0,
    accept: Any = None,
) -> RedisStream:
    settings = make_settings(
        service.settings.data_dir.parent,
        service.settings.rules_dir,
        redis_url=redis_url,
        redis_stream=stream,
        redis_group="replicas",
        redis_consumer=name,
        redis_claim_idle_seconds=claim_idle,
    )
    return RedisStream(settings, accept or service.accept)


def event(n: int, **data: Any) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"backup-{n}",
            "source": "backup-scheduler",
            "type": "backup.failed",
            "subject": f"db-{n}",
            "data": {"attempt": 1, **data},
        }
    ).encode()


def add(redis_url: str, stream: str, *bodies: bytes) -> None:
    with redis.Redis.from_url(redis_url) as client:
        for body in bodies:
            client.xadd(stream, {"event": body})


def pending(redis_url: str, stream: str) -> int:
    """Entries delivered and not acknowledged; -1 before the group exists."""
    with redis.Redis.from_url(redis_url) as client:
        try:
            return int(client.xpending(stream, "replicas")["pending"])
        except redis.ResponseError:
            return -1


async def rows(service: Service) -> int:
    async with service.store.transaction() as conn:
        return int(await conn.scalar(select(func.count()).select_from(inbox)) or 0)


def events_held(service: Service, event_id: str) -> list[Fact]:
    return [
        f for f in service.loop.engine.facts() if f.name == "event" and f.fields["id"] == event_id
    ]


async def decided(service: Service) -> None:
    async def empty() -> bool:
        return await service.backlog() == 0

    await wait_for(empty, timeout=20)


async def test_entries_become_events_and_are_acknowledged(
    tmp_path: Path, rules_dir: Path, redis_url: str, stream: str
) -> None:
    """End to end: the service's own consumer (settings only) → inbox → the event fact."""
    settings = make_settings(
        tmp_path, rules_dir, redis_url=redis_url, redis_stream=stream, redis_consumer="r1"
    )
    service = Service(settings)
    await service.start()
    try:
        add(redis_url, stream, event(1, database="orders"))

        async def held() -> list[Fact]:
            return events_held(service, "backup-1")

        (fact,) = await wait_for(held, timeout=20)
        assert fact.fields["type"] == "backup.failed"
        assert fact.fields["subject"] == "db-1"
        assert fact.fields["database"] == "orders"
        assert fact.source == "event:backup-scheduler"
        with redis.Redis.from_url(redis_url) as client:
            assert client.xpending(stream, "responder")["pending"] == 0
    finally:
        await service.stop()


async def test_replicas_share_the_group(service: Service, redis_url: str, stream: str) -> None:
    """Two consumers of one group: each entry is committed once, by one of them."""
    replicas = [consumer(service, redis_url, stream, name) for name in ("r1", "r2")]
    for replica in replicas:
        replica.start()
    try:
        add(redis_url, stream, *(event(n) for n in range(300)))

        async def all_committed() -> bool:
            return await rows(service) >= 300 and pending(redis_url, stream) == 0

        await wait_for(all_committed, timeout=30)
        await asyncio.sleep(0.5)
        assert await rows(service) == 300
        await decided(service)
        held = [f for f in service.loop.engine.facts() if f.name == "event"]
        assert len(held) == 300
        ledger = await service.decisions(limit=1000)
        assert len([d for d in ledger if d["rule"] == "rerun-backup"]) == 300
        with redis.Redis.from_url(redis_url) as client:
            names = {c["name"] for c in client.xinfo_consumers(stream, "replicas")}
        assert names == {b"r1", b"r2"} or names == {"r1", "r2"}
    finally:
        for replica in replicas:
            await replica.stop()


async def test_death_after_commit_before_ack_is_no_duplicate(
    service: Service, redis_url: str, stream: str
) -> None:
    async def commit_then_die(source: str, body: bytes) -> int:
        await service.accept(source, body)
        raise Died

    dying = consumer(service, redis_url, stream, "r1", accept=commit_then_die)
    add(redis_url, stream, event(7))
    with pytest.raises(Died):
        await dying.run()
    assert await rows(service) == 1
    assert pending(redis_url, stream) == 1  # committed, never acknowledged
    # Another replica claims the entry once it has been idle long enough, and commits it
    # again: the engine holds the event once.
    other = consumer(service, redis_url, stream, "r2", claim_idle=0.3)
    other.start()
    try:

        async def claimed() -> bool:
            return pending(redis_url, stream) == 0

        await wait_for(claimed, timeout=20)
    finally:
        await other.stop()
    assert await rows(service) == 2
    await decided(service)
    assert len(events_held(service, "backup-7")) == 1
    ledger = list(reversed(await service.decisions(limit=100)))
    assert [(d["rule"], d["verdict"]) for d in ledger] == [
        ("rerun-backup", "dry_run"),
        (None, "duplicate"),
    ]


async def test_death_before_commit_is_reclaimed(
    service: Service, redis_url: str, stream: str
) -> None:
    async def die(source: str, body: bytes) -> int:
        raise Died

    dying = consumer(service, redis_url, stream, "r1", accept=die)
    add(redis_url, stream, event(8))
    with pytest.raises(Died):
        await dying.run()
    assert await rows(service) == 0
    assert pending(redis_url, stream) == 1
    other = consumer(service, redis_url, stream, "r2", claim_idle=0.3)
    other.start()
    try:

        async def claimed() -> bool:
            return pending(redis_url, stream) == 0 and await rows(service) == 1

        await wait_for(claimed, timeout=20)
    finally:
        await other.stop()
    await decided(service)
    assert len(events_held(service, "backup-8")) == 1
    ledger = await service.decisions(limit=100)
    assert [(d["rule"], d["verdict"]) for d in ledger] == [("rerun-backup", "dry_run")]


async def test_restarted_consumer_reads_its_own_pending_entries_first(
    service: Service, redis_url: str, stream: str
) -> None:
    async def die(source: str, body: bytes) -> int:
        raise Died

    add(redis_url, stream, event(9))
    with pytest.raises(Died):
        await consumer(service, redis_url, stream, "r1", accept=die).run()
    # Same name, and a claim wait far longer than the test: it reads its own entry again.
    again = consumer(service, redis_url, stream, "r1", claim_idle=3600)
    again.start()
    try:

        async def committed() -> bool:
            return pending(redis_url, stream) == 0 and await rows(service) == 1

        await wait_for(committed, timeout=20)
    finally:
        await again.stop()


async def test_an_entry_without_a_valid_event_is_acknowledged_and_skipped(
    service: Service, redis_url: str, stream: str
) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.xadd(stream, {"event": b"{not json"})
        client.xadd(stream, {"other": b"field"})
        client.xadd(stream, {"event": json.dumps({"specversion": "1.0", "id": "x"})})
    add(redis_url, stream, event(10))
    reader = consumer(service, redis_url, stream, "r1")
    reader.start()
    try:

        async def done() -> bool:
            return pending(redis_url, stream) == 0 and await rows(service) == 1

        await wait_for(done, timeout=20)
    finally:
        await reader.stop()
    await decided(service)
    assert len(events_held(service, "backup-10")) == 1


async def test_redis_away_commits_nothing_and_recovers(
    service: Service, redis_url: str, stream: str, tmp_path: Path
) -> None:
    """A consumer pointed at a port nothing listens on keeps trying; nothing is lost."""
    from tests.helpers import free_port

    away = consumer(service, f"redis://127.0.0.1:{free_port()}/0", stream, "r1")
    away.start()
    await asyncio.sleep(0.5)
    assert away._task is not None and not away._task.done()  # retrying, not dead
    await away.stop()
