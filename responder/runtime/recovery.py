"""Nothing missed stays missed: the leader's resyncs with Alertmanager.

While a replica leads it resyncs on taking the lead (retried for a minute while Alertmanager
is unreachable), then every `resync_interval` seconds: a webhook Alertmanager gave up on, or
one lost on the way, is recovered within an interval. A webhook whose group held more alerts
than the receiver's `max_alerts` (`truncatedAlerts > 0`) has its group fetched at once.

All of it runs in the leader's background tasks, never on an HTTP request; what is recovered
goes into the inbox, so the engine decides it like any webhook (see `runtime/resync.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from responder import metrics
from responder.events.webhook import AlertmanagerWebhook
from responder.runtime.resync import recover_group, resync
from responder.storage.store import Store

if TYPE_CHECKING:
    from responder.orchestration.alertmanager import Alertmanager
from responder.tasks import cancel

log = logging.getLogger(__name__)

# Truncated groups fetched at once; a flood of distinct groups beyond it waits for the next
# periodic resync rather than opening a connection each.
MAX_GROUP_FETCHES = 64

GroupId = tuple[str, str]  # (receiver, groupKey)


class Recovery:
    """The leader's resyncs: `start` on taking the lead, `stop` on stepping down.

    One resync runs at a time (one task does them all, in turn); a failure is logged and
    counted (`responder_resync_failures_total`) and tried again at the next interval.
    """

    def __init__(
        self,
        store: Store,
        url: str | None,
        receiver: str,
        *,
        interval: float,
        wake: Callable[[], None],
        takeover_attempts: int = 6,
        retry_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._url = url
        self._receiver = receiver
        self._interval = interval
        self._wake = wake
        self._takeover_attempts = takeover_attempts
        self._retry_seconds = retry_seconds
        self._alertmanager: Alertmanager | None = None
        self._task: asyncio.Task[None] | None = None
        # Truncated groups being fetched; True: fetch once more when done (another came).
        self._groups: dict[GroupId, bool] = {}
        self._fetches: set[asyncio.Task[None]] = set()
        self.resyncs = 0  # completed resyncs, this term

    def start(self) -> None:
        """Resync now and every interval (nothing without `alertmanager_url`)."""
        if self._url is None or self._task is not None:
            return
        # Imported here: its HTTP client (httpx) is for a Responder that has an Alertmanager.
        from responder.orchestration.alertmanager import Alertmanager

        self._alertmanager = Alertmanager(self._url)
        self.resyncs = 0
        self._task = asyncio.create_task(self._run(), name="resync")

    async def stop(self) -> None:
        """Cancel the resyncs and fetches under way; what they committed stays committed."""
        await cancel(self._task, *self._fetches)
        self._task = None
        self._fetches.clear()
        self._groups.clear()
        if self._alertmanager is not None:
            await self._alertmanager.close()
            self._alertmanager = None

    async def _run(self) -> None:
        for attempt in range(1, self._takeover_attempts + 1):
            if await self._resync("takeover"):
                break
            if attempt < self._takeover_attempts:
                await asyncio.sleep(self._retry_seconds)
        if self._interval <= 0:
            return
        while True:
            await asyncio.sleep(self._interval)
            await self._resync("periodic")

    async def _resync(self, kind: str) -> bool:
        """One resync; False if it failed (logged and counted)."""
        assert self._alertmanager is not None
        began = time.monotonic()
        try:
            firing, resolved = await resync(self._alertmanager, self._receiver, self._store)
        except Exception as exc:  # Alertmanager or the store: the next attempt may do
            metrics.RESYNC_FAILURES.labels(kind=kind).inc()
            log.warning("resync from Alertmanager (%s) failed: %s", kind, exc)
            return False
        metrics.RESYNC_SECONDS.observe(time.monotonic() - began)
        self.resyncs += 1
        if firing or resolved or kind == "takeover":
            log.info(
                "resynced from Alertmanager (%s): %d firing, %d resolved", kind, firing, resolved
            )
            self._wake()
        return True

    def truncated(self, webhook: AlertmanagerWebhook) -> None:
        """A processed webhook left `truncatedAlerts` out: fetch its group in the background
        (one fetch per group at a time; another truncation while it runs fetches once more)."""
        metrics.TRUNCATED_ALERTS.labels(fetched=str(self._url is not None).lower()).inc(
            webhook.truncated_alerts
        )
        if self._alertmanager is None:
            log.warning(
                "Alertmanager left %d alerts of group %s out of a webhook (max_alerts); "
                "without alertmanager_url they wait for Alertmanager to send them again",
                webhook.truncated_alerts,
                webhook.group_key,
            )
            return
        group = (webhook.receiver, webhook.group_key)
        if group in self._groups:
            self._groups[group] = True
            return
        if len(self._groups) >= MAX_GROUP_FETCHES:
            metrics.RESYNC_FAILURES.labels(kind="truncated").inc()
            log.warning("too many truncated groups to fetch at once; %s waits", webhook.group_key)
            return
        self._groups[group] = False
        task = asyncio.create_task(self._fetch(group, dict(webhook.group_labels)))
        self._fetches.add(task)
        task.add_done_callback(self._fetches.discard)

    async def _fetch(self, group: GroupId, labels: dict[str, str]) -> None:
        receiver, key = group
        try:
            while True:
                self._groups[group] = False
                assert self._alertmanager is not None
                try:
                    firing = await recover_group(self._alertmanager, receiver, labels, self._store)
                except Exception as exc:
                    metrics.RESYNC_FAILURES.labels(kind="truncated").inc()
                    log.warning("fetching truncated group %s failed: %s", key, exc)
                else:
                    log.info("fetched truncated group %s: %d firing alerts recovered", key, firing)
                    if firing:
                        self._wake()
                if not self._groups[group]:
                    return
        finally:
            self._groups.pop(group, None)
