"""The inbox: every received body, committed before its sender is acknowledged.

The engine loop reads it in order; a big webhook is decided over several short transactions,
and `inbox_progress` lets a crash resume after the items already handled.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from responder.storage.database import Database, placeholders
from responder.storage.schema import inbox


class InboxSource(StrEnum):
    """What wrote an inbox row, and so how its body is read."""

    ALERTMANAGER = "alertmanager"  # an Alertmanager webhook
    CLOUDEVENTS = "cloudevents"  # CloudEvents, one or a batch
    OUTCOME = "outcome"  # a remediation's final state (`events.cloudevents.Outcome`)
    RUN_REQUEST = "run-request"  # a manual run (`events.manual_runs.RunRequest`)


@dataclass(frozen=True)
class PendingMessage:
    """An inbox row the engine has not processed yet."""

    id: int
    source: InboxSource
    body: bytes
    progress: int = 0  # items already handled (see `inbox_progress`)
    parsed: object | None = None  # the body as the intake parsed it, if it still had it


# How many bytes of bodies the intake's parses are kept for (`Inbox.add`): a storm's
# backlog of webhooks, or one webhook at the default body limit.
PARSED_BYTES = 2 * 1024 * 1024
_NO_LIMIT = 2**62  # `pending` without `max_bytes`


class Inbox:
    """The inbox table and its progress marks."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Group commit: bodies waiting for the next commit, and its task.
        self._intake: list[tuple[InboxSource, bytes, object | None, asyncio.Future[int]]] = []
        self._committer: asyncio.Task[None] | None = None
        # The intake's parses of committed bodies (parse, body), by inbox id, oldest first,
        # until `pending` hands them out; `_parsed_bytes` counts their bodies' bytes.
        self._parsed: OrderedDict[int, tuple[object, bytes]] = OrderedDict()
        self._parsed_bytes = 0

    async def add(self, source: InboxSource, body: bytes, parsed: object | None = None) -> int:
        """Commit a received body durably; only then may the sender be acknowledged.

        `parsed`: the body as the intake validated it, kept in memory (up to `PARSED_BYTES`
        of bodies) and handed out with the row by `pending`, so that the engine does not
        parse it again; a row whose parse is gone (evicted, another process's, before a
        restart) is parsed from its body, and a parse is handed out only with the very body
        it was made of.

        Group commit: bodies that arrive while a commit is under way are committed together
        by the next one, so concurrent webhooks share a transaction (and its fsync) instead
        of queueing for the write lock one by one. A lone body is committed at once.
        """
        running = asyncio.get_running_loop()
        future: asyncio.Future[int] = running.create_future()
        committer = self._committer
        if committer is not None and committer.get_loop() is not running:
            self._intake, committer = [], None  # left over from another event loop
        self._intake.append((InboxSource(source), body, parsed, future))
        if committer is None or committer.done():
            self._committer = asyncio.create_task(self._commit_intake())
        return await future

    def _keep_parsed(self, inbox_id: int, parsed: object, body: bytes) -> None:
        self._take_parsed(inbox_id, body)  # an id SQLite gave again: its old parse goes
        self._parsed[inbox_id] = (parsed, body)
        self._parsed_bytes += len(body)
        while self._parsed_bytes > PARSED_BYTES and self._parsed:
            _, (_, evicted) = self._parsed.popitem(last=False)
            self._parsed_bytes -= len(evicted)

    def _take_parsed(self, inbox_id: int, body: bytes) -> object | None:
        """The intake's parse of row `inbox_id`, if kept and made of this `body`."""
        kept = self._parsed.pop(inbox_id, None)
        if kept is None:
            return None
        parsed, parsed_body = kept
        self._parsed_bytes -= len(parsed_body)
        return parsed if parsed_body == body else None

    @staticmethod
    async def add_in(conn: AsyncConnection, source: InboxSource, body: bytes, now: float) -> None:
        """Add a row in the caller's transaction (an outcome, with the state it reports)."""
        await conn.execute(inbox.insert().values(received_at=now, source=source, body=body))

    async def _commit_intake(self) -> None:
        while self._intake:
            batch, self._intake = self._intake, []
            now = time.time()
            rows = [
                {"received_at": now, "source": source.value, "body": body, "processed": False}
                for source, body, _, _ in batch
            ]
            try:
                async with self._db.transaction(turn=True) as conn:
                    ids = await self._db.insert_rows(conn, inbox, rows)
            except Exception as exc:  # every waiting sender gets the error, and a 503
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, body, parsed, future), inbox_id in zip(batch, ids, strict=True):
                if parsed is not None:
                    self._keep_parsed(inbox_id, parsed, body)
                if not future.done():  # a sender that went away is committed all the same
                    future.set_result(inbox_id)

    async def pending(self, limit: int, max_bytes: int | None = None) -> list[PendingMessage]:
        """The oldest unprocessed rows: at most `limit`, and, beyond the first, no more than
        `max_bytes` of bodies in all (the bodies are read only once the sizes fit)."""
        # Through the driver (`Database.fetch`): read at every step of the engine loop, in
        # one query (a running sum of the oldest rows' body sizes picks those that fit).
        async with self._db.transaction() as conn:
            rows = await self._db.fetch(
                conn,
                "SELECT inbox.id, inbox.source, inbox.body, inbox_progress.handled FROM ("
                " SELECT id, size, SUM(size) OVER (ORDER BY id) AS upto FROM ("
                "  SELECT id, length(body) AS size FROM inbox WHERE processed = ?"
                "  ORDER BY id LIMIT ?) AS oldest) AS fitting"
                " JOIN inbox ON inbox.id = fitting.id"
                " LEFT OUTER JOIN inbox_progress ON inbox_progress.inbox_id = inbox.id"
                " WHERE fitting.upto = fitting.size OR fitting.upto <= ?"
                " ORDER BY inbox.id",
                [False, limit, _NO_LIMIT if max_bytes is None else max_bytes],
            )
            pending = []
            for inbox_id, source, body, handled in rows:
                body = bytes(body)
                parsed = self._take_parsed(inbox_id, body)
                pending.append(
                    PendingMessage(inbox_id, InboxSource(source), body, handled or 0, parsed)
                )
            return pending

    async def received(
        self,
        sources: tuple[InboxSource, ...],
        start: float | None,
        end: float | None,
        *,
        processed_only: bool = False,
    ) -> list[tuple[float, InboxSource, bytes]]:
        """Every row of these sources received in [start, end] (arrival time, source, body),
        in arrival order, processed or not (the history `responder replay` reads), or only
        those the engine has processed."""
        query = (
            select(inbox.c.received_at, inbox.c.source, inbox.c.body)
            .where(inbox.c.source.in_([s.value for s in sources]))
            .order_by(inbox.c.id)
        )
        if processed_only:
            query = query.where(inbox.c.processed.is_(True))
        if start is not None:
            query = query.where(inbox.c.received_at >= start)
        if end is not None:
            query = query.where(inbox.c.received_at <= end)
        async with self._db.transaction() as conn:
            rows = await conn.execute(query)
            return [(float(r.received_at), InboxSource(r.source), bytes(r.body)) for r in rows]

    async def backlog(self) -> int:
        async with self._db.transaction() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(inbox).where(inbox.c.processed.is_(False))
            )
            return int(count or 0)

    async def mark_processed(self, conn: AsyncConnection, inbox_ids: list[int]) -> None:
        if inbox_ids:  # through the driver (`Database.write_many`): once per transaction
            marks = placeholders(len(inbox_ids))
            await self._db.write_many(
                conn, f"UPDATE inbox SET processed = ? WHERE id IN ({marks})", [[True, *inbox_ids]]
            )
            await self._db.write_many(
                conn, f"DELETE FROM inbox_progress WHERE inbox_id IN ({marks})", [inbox_ids]
            )

    async def set_progress(self, conn: AsyncConnection, inbox_id: int, items: int) -> None:
        """Record that the first `items` items of a row are handled (in the same transaction
        as what handling them wrote)."""
        await self._db.write_many(  # through the driver: in most transactions of a storm
            conn,
            "INSERT INTO inbox_progress (inbox_id, handled) VALUES (?, ?)"
            " ON CONFLICT (inbox_id) DO UPDATE SET handled = excluded.handled",
            [(inbox_id, items)],
        )
