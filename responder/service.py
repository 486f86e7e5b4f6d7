"""The running service: store, engine loop, guard and dispatch, wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from responder.dispatch import Dispatcher
from responder.engine import Engine
from responder.guard import Guard
from responder.loop import EngineLoop
from responder.rules import RuleBook, load_rules
from responder.settings import Settings
from responder.store import Store

log = logging.getLogger(__name__)


def known_flows() -> list[str]:
    from flows import REMEDIATIONS

    return sorted(REMEDIATIONS)


class Service:
    """Everything behind the HTTP app; `start` and `stop` bracket its life."""

    def __init__(self, settings: Settings, *, prefect_api_url: str | None = None) -> None:
        self.settings = settings
        self.book: RuleBook = load_rules([settings.rules_dir], known_flows())
        self.store = Store(settings.store_url, timeout_seconds=settings.store_timeout_seconds)
        api_url = prefect_api_url or settings.prefect_api_url
        self.dispatcher = (
            Dispatcher(self.store, api_url, poll_seconds=settings.poll_seconds) if api_url else None
        )
        self.loop = EngineLoop(
            self.store,
            lambda: Engine(self.book),
            Guard(self.store, settings.lease_seconds, dry_run=settings.dry_run),
            self.dispatcher,
            rule_vars=settings.rule_vars,
            batch=settings.engine_batch,
            idle_seconds=settings.engine_idle_seconds,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.migrate()
        if self.dispatcher is not None:
            await self.dispatcher.start()
        await self.loop.rebuild()
        self._task = asyncio.create_task(self.loop.run(), name="engine-loop")
        log.info("loaded %d rules; engine loop started", len(self.book.rules))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        await self.store.close()

    @property
    def engine_alive(self) -> bool:
        return self._task is not None and not self._task.done() and self.loop.running
