"""Decision events: every decision mirrored on Prefect's event feed (best effort).

An admitted decision's event is related to its flow run, so the run's feed says why it
exists; a refusal for a held key or mutex is related to the run holding it. The decision is
recorded in the store either way: the event only mirrors it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from responder import metrics
from responder.control.runs import ActiveRun

log = logging.getLogger(__name__)

# After a failed decision event, skip events this long rather than retry each one.
EVENTS_BACKOFF_SECONDS = 10.0


@dataclass(frozen=True)
class RefusedDecision:
    """A decision the guard refused, to be mirrored as a Prefect event."""

    decision_id: int
    rule: str
    flow: str
    key: str
    refusal: str
    reason: str
    held_by: str | None  # the flow run holding the key or mutex, if any


class DecisionEvents:
    """Emits `responder.decision.*` events to Prefect."""

    def __init__(self, api_url: str) -> None:
        self._api_url = api_url
        self._client: Any = None
        self._resume_at = 0.0  # after a failed emit, events are skipped until then

    async def open(self) -> None:
        from prefect.events.clients import PrefectEventsClient

        self._client = PrefectEventsClient(self._api_url, reconnection_attempts=2)
        try:
            await self._client.__aenter__()
        except Exception as exc:
            log.warning(
                "Prefect's event stream is unavailable (%s); decisions are not mirrored", exc
            )

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.__aexit__(None, None, None)
            self._client = None

    async def admitted(self, run: ActiveRun, flow_run_id: str) -> None:
        """Tell Prefect why the run exists: its event feed then shows the decision."""
        payload = {
            "rule": run.rule,
            "flow": run.flow,
            "key": run.guard_key,
            "incident": run.incident,
            "alertname": run.alertname,
        }
        await self._emit("admitted", run.decision_id, run.rule, run.flow, flow_run_id, payload)

    def refused(
        self,
        refused: list[RefusedDecision],
        background: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        """Mirror refused decisions as `responder.decision.refused` events, in the background.

        A refusal for a held key or mutex is related to the flow run holding it, so that
        run's event feed shows the duplicates it absorbed.
        """
        if not refused or self._client is None:
            return

        async def emit_all() -> None:
            for item in refused:
                payload = {
                    "rule": item.rule,
                    "flow": item.flow,
                    "key": item.key,
                    "refusal": item.refusal,
                    "reason": item.reason,
                }
                await self._emit(
                    "refused", item.decision_id, item.rule, item.flow, item.held_by, payload
                )

        background(emit_all())

    async def _emit(
        self,
        verdict: str,
        decision_id: int,
        rule: str,
        flow: str,
        flow_run_id: str | None,
        payload: dict[str, Any],
    ) -> None:
        from prefect.events import Event, RelatedResource, Resource

        related = []
        if flow_run_id:
            related.append(
                RelatedResource(
                    {
                        "prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                        "prefect.resource.role": "flow-run",
                    }
                )
            )
        event = Event(
            event=f"responder.decision.{verdict}",
            resource=Resource(
                {
                    "prefect.resource.id": f"responder.decision.{decision_id}",
                    "prefect.resource.name": f"{rule} → {flow}",
                    "responder.rule": rule,
                }
            ),
            related=related,
            payload=payload,
        )
        if time.monotonic() < self._resume_at:
            metrics.EVENTS_SKIPPED.inc()
            return
        try:
            await self._client.emit(event)
        except Exception as exc:
            # The decision is recorded in the store; the event only mirrors it. While
            # Prefect is away, trying each event again would pile up connection attempts
            # (a storm refuses thousands of decisions a second): skip them for a while.
            self._resume_at = time.monotonic() + EVENTS_BACKOFF_SECONDS
            metrics.EVENTS_SKIPPED.inc()
            log.warning(
                "could not emit the event of decision %s; skipping decision events for %.0f s: %s",
                decision_id,
                EVENTS_BACKOFF_SECONDS,
                exc,
            )
