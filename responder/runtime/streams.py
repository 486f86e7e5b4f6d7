"""The Redis Streams source: CloudEvents read from a stream through a consumer group.

Each entry carries one CloudEvent (structured JSON) in its field `event`:

    XADD responder-events * event '{"specversion":"1.0","id":"b-41","source":"backup",...}'

Every replica reads as its own consumer of one group (`redis_group`), so the entries are
shared among them. An entry is acknowledged (XACK) only once its event is committed to the
inbox, through the service's `accept`, the one inbox commit. A consumer that dies in between
leaves its entries pending: on restart it reads its own pending entries first, and another
consumer claims entries idle longer than `redis_claim_idle_seconds` (XAUTOCLAIM). An event
committed twice that way is still one event: the engine holds an event by its identity.

An entry without a valid CloudEvent is logged, counted and acknowledged: it would fail again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from responder import metrics
from responder.events.cloudevents import CloudEvent
from responder.source_settings import SourceSettings
from responder.tasks import cancel

log = logging.getLogger(__name__)

Accept = Callable[[str, bytes], Awaitable[int]]
RETRY_SECONDS = 2.0
BLOCK_MS = 1000


class RedisStream:
    """One replica's consumer of the stream; `start` and `stop` bracket its life."""

    def __init__(self, settings: SourceSettings, accept: Accept) -> None:
        assert settings.redis_url is not None
        self.url = settings.redis_url
        self.stream = settings.redis_stream
        self.group = settings.redis_group
        self.consumer = settings.redis_consumer or socket.gethostname()
        self._claim_idle_ms = int(settings.redis_claim_idle_seconds * 1000)
        self._batch = settings.redis_batch
        self._accept = accept
        self._task: asyncio.Task[None] | None = None
        self._next_claim = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="redis-stream")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run_forever(self) -> None:
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or the store away: unacknowledged entries wait
                log.warning(
                    "Redis stream %s: %s; reading again in %gs", self.stream, exc, RETRY_SECONDS
                )
                await asyncio.sleep(RETRY_SECONDS)

    async def run(self) -> None:
        """Read until cancelled or an error: own pending entries, then claimed and new ones."""
        from redis.asyncio import Redis

        client: Any = Redis.from_url(self.url)
        try:
            await self._join(client)
            while await self._read(client, "0", block=None):
                pass  # this consumer's entries delivered before it stopped
            while True:
                await self._claim(client)
                await self._read(client, ">", block=BLOCK_MS)
        finally:
            await client.aclose()

    async def _join(self, client: Any) -> None:
        """Create the group (reading the stream from its start) unless it exists."""
        from redis.exceptions import ResponseError

        try:
            await client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, client: Any, after: str, block: int | None) -> int:
        """Commit and acknowledge one batch; how many entries it held."""
        answer = await client.xreadgroup(
            self.group, self.consumer, {self.stream: after}, count=self._batch, block=block
        )
        entries = [entry for _stream, batch in answer or [] for entry in batch]
        await self.commit(client, entries)
        return len(entries)

    async def _claim(self, client: Any) -> None:
        """Take over entries another consumer left pending too long (it died before XACK)."""
        now = time.monotonic()
        if now < self._next_claim:
            return
        self._next_claim = now + min(1.0, self._claim_idle_ms / 2000)
        start = "0-0"
        while True:
            answer = await client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                self._claim_idle_ms,
                start_id=start,
                count=self._batch,
            )
            start, entries = answer[0], answer[1]
            if entries:
                log.warning("claimed %d entries of %s left pending", len(entries), self.stream)
            await self.commit(client, entries)
            if start in (b"0-0", "0-0"):
                return

    async def commit(self, client: Any, entries: list[tuple[Any, Any]]) -> None:
        """Commit the entries' events to the inbox together, then acknowledge them."""
        good: list[tuple[Any, bytes]] = []
        done: list[Any] = []
        for entry_id, fields in entries:
            body = (fields or {}).get(b"event")
            if body is None or not _valid(body):
                metrics.SOURCE_EVENTS.labels(source="redis", result="invalid").inc()
                log.error(
                    "entry %s of %s holds no valid CloudEvent: acknowledged", entry_id, self.stream
                )
                done.append(entry_id)
                continue
            good.append((entry_id, body))
        # One group commit for the batch; an error leaves every entry of it unacknowledged.
        await asyncio.gather(*(self._accept("cloudevents", body) for _, body in good))
        metrics.SOURCE_EVENTS.labels(source="redis", result="committed").inc(len(good))
        done.extend(entry_id for entry_id, _ in good)
        if done:
            await client.xack(self.stream, self.group, *done)


def _valid(body: bytes) -> bool:
    try:
        CloudEvent.model_validate_json(body)
    except ValidationError:
        return False
    return True
