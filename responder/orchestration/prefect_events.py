"""Prefect's event feed as a source: chosen events of flow runs outside Responder, as
CloudEvents in the inbox, so that a rule can act on them (retry a failed backup run).

The leader subscribes to Prefect's events (`prefect_event_types`, e.g.
`prefect.flow-run.Failed`) from `prefect_events_lookback_seconds` ago, so what happened while
no replica led is read again; the event's Prefect id is its CloudEvent id, which makes a
re-read event the same event. Responder's own runs (tagged `responder`, `story.run_tags`) are
left out: their outcomes come back already, as `outcome` facts.

The CloudEvent: source `prefect`, type the Prefect event's name, subject the flow run's
resource id (`prefect.flow-run.<id>`), and data `flow_run_id`, `flow_run_name`, `state`,
`flow`, `deployment`, `deployment_id`, `work_pool` and `tags` (comma-separated) where the
event names them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from responder import metrics
from responder.tasks import cancel

log = logging.getLogger(__name__)

Accept = Callable[[str, bytes], Awaitable[int]]
OWN_TAG = "prefect.tag.responder"  # the tag every run Responder dispatches carries
RETRY_SECONDS = 2.0
RUN_PREFIX = "prefect.flow-run."


def cloudevent(event: Any) -> dict[str, Any] | None:
    """The CloudEvent for a Prefect event (`prefect.events.Event`); None for a run of
    Responder's own."""
    related = {r.id: r for r in event.related}
    if OWN_TAG in related:
        return None
    data: dict[str, Any] = {}
    resource = event.resource
    if resource.id.startswith(RUN_PREFIX):
        data["flow_run_id"] = resource.id.removeprefix(RUN_PREFIX)
        data["flow_run_name"] = resource.get("prefect.resource.name")
        data["state"] = resource.get("prefect.state-name")
    for role, key in (("flow", "flow"), ("deployment", "deployment"), ("work-pool", "work_pool")):
        for r in event.related:
            if r.role == role:
                data[key] = r.get("prefect.resource.name")
                if role == "deployment":
                    data["deployment_id"] = r.id.removeprefix("prefect.deployment.")
    tags = [r.id.removeprefix("prefect.tag.") for r in event.related if r.role == "tag"]
    if tags:
        data["tags"] = ",".join(tags)
    return {
        "specversion": "1.0",
        "id": str(event.id),
        "source": "prefect",
        "type": event.event,
        "subject": resource.id,
        "time": event.occurred.isoformat(),
        "data": {k: v for k, v in data.items() if v is not None},
    }


class PrefectEvents:
    """The leader's subscription to Prefect's events; `start` and `stop` bracket it."""

    def __init__(
        self, api_url: str, types: list[str], lookback_seconds: float, accept: Accept
    ) -> None:
        self._api_url = api_url
        self._types = types
        self._lookback = timedelta(seconds=lookback_seconds)
        self._accept = accept
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="prefect-events")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run_forever(self) -> None:
        since = datetime.now(UTC) - self._lookback
        while True:
            try:
                await self.run(since)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Prefect or the store away: read again from `since`
                log.warning(
                    "Prefect's event feed: %s; subscribing again in %gs", exc, RETRY_SECONDS
                )
                await asyncio.sleep(RETRY_SECONDS)

    async def run(self, since: datetime) -> None:
        """Commit each chosen event occurred after `since` to the inbox, until cancelled."""
        from prefect.events.clients import PrefectEventSubscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

        event_filter = EventFilter(
            occurred=EventOccurredFilter(since=since),
            event=EventNameFilter(name=self._types),
        )
        subscriber = PrefectEventSubscriber(
            self._api_url, filter=event_filter, reconnection_attempts=3
        )
        # The subscriber backfills from a minute ago, unless told otherwise by this attribute
        # (Prefect 3 has no argument for it); the server caps a backfill at
        # PREFECT_EVENTS_MAXIMUM_WEBSOCKET_BACKFILL (15 minutes by default).
        subscriber._backfill_since = since  # type: ignore[assignment]
        async with subscriber:
            async for event in subscriber:
                body = cloudevent(event)
                if body is None:
                    continue
                await self._accept("cloudevents", json.dumps(body).encode())
                metrics.SOURCE_EVENTS.labels(source="prefect", result="committed").inc()
