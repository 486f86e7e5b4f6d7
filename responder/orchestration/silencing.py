"""Alertmanager silences while remediations run: set when the run exists, extended with its
lease, lifted once its decision has ended (however it ended)."""

from __future__ import annotations

import logging
import time

import httpx

from responder.control.runs import ActiveRun
from responder.orchestration.alertmanager import Alertmanager
from responder.storage.store import Store

log = logging.getLogger(__name__)


class Silencer:
    """The silences of the dispatcher's runs (a rule's `guard.silence`)."""

    def __init__(self, store: Store, lease_seconds: float) -> None:
        self._store = store
        self._lease_seconds = lease_seconds
        self._alertmanager: Alertmanager | None = None
        # When each running decision's silence ends, as last set (its lease's length,
        # extended with the lease when less than half of it is left).
        self._until: dict[int, float] = {}

    def open(self, alertmanager: Alertmanager) -> None:
        self._alertmanager = alertmanager

    async def close(self) -> None:
        if self._alertmanager is not None:
            await self._alertmanager.close()
            self._alertmanager = None

    async def silence(self, run: ActiveRun, flow_run_url: str) -> None:
        """Silence the alert while its remediation runs, for `lease_seconds` at first."""
        if self._alertmanager is None:
            log.warning("rule %s asks for a silence, but alertmanager_url is not set", run.rule)
            return
        comment = f"Responder is remediating ({run.rule}): {flow_run_url}"
        try:
            silence_id = await self._alertmanager.silence(run.labels, self._lease_seconds, comment)
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: no exact silence possible
            log.warning("could not silence the alert of decision %s: %s", run.decision_id, exc)
            return
        await self._store.silences.set(run.decision_id, silence_id)
        self._until[run.decision_id] = time.time() + self._lease_seconds

    async def extend(self, decision_ids: list[int]) -> None:
        """The silences of runs still going follow their leases: extended to another
        `lease_seconds` once less than half of that is left. One lifted by someone else
        stays lifted."""
        if self._alertmanager is None:
            return
        now = time.time()
        for silence in await self._store.silences.of_running(decision_ids):
            if self._until.get(silence.decision_id, 0.0) - now > self._lease_seconds / 2:
                continue
            try:
                found = await self._alertmanager.extend(silence.silence_id, self._lease_seconds)
            except httpx.HTTPError as exc:
                log.warning("could not extend silence %s: %s", silence.silence_id, exc)
                continue
            if found is None:
                await self._store.silences.lifted(silence.decision_id)
                self._until.pop(silence.decision_id, None)
                continue
            if found != silence.silence_id:
                await self._store.silences.set(silence.decision_id, found)
            self._until[silence.decision_id] = now + self._lease_seconds

    async def lift(self) -> None:
        """Lift the silences of every decision that has ended."""
        if self._alertmanager is None:
            return
        for silence in await self._store.silences.to_lift():
            try:
                await self._alertmanager.lift(silence.silence_id)
            except httpx.HTTPError as exc:
                log.warning("could not lift silence %s: %s", silence.silence_id, exc)
                continue
            await self._store.silences.lifted(silence.decision_id)
            self._until.pop(silence.decision_id, None)
