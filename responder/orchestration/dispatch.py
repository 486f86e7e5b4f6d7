"""Dispatch: the only module that talks to the Prefect API for remediations.

Admitted decisions wait in a bounded queue so that the engine never blocks on Prefect. A
worker creates each flow run from its deployment with tags and an idempotency key that carries
the incident. Final states arrive on Prefect's event stream; a slow poll covers gaps in it.
Either way the lease is released once, by `control.leases.finish`.

A run that asks for approval pauses (Prefect's Paused state): `orchestration.approvals`
follows it until someone answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any
from uuid import UUID

import httpx

from responder import metrics
from responder.control import leases, pause
from responder.control.leases import FINAL_STATES, NO_SUCH_RUN
from responder.control.runs import ActiveRun, active_runs, batch_group, merge_batch, runs_of
from responder.orchestration import story
from responder.orchestration.alertmanager import Alertmanager
from responder.orchestration.approvals import Approvals
from responder.orchestration.decision_events import DecisionEvents, RefusedDecision
from responder.orchestration.lost_runs import LostRun, LostRuns
from responder.orchestration.silencing import Silencer
from responder.storage.store import Store
from responder.tasks import cancel, wake_or_timeout

log = logging.getLogger(__name__)


# Flow runs being created at once.
CREATORS = 4
READ_LIMIT = 200  # Prefect's server answers at most this many runs per read by default
FORGOTTEN = "Prefect no longer knows this flow run (its database lost?); the key is free again"


def deployment_name(flow: str) -> str:
    """Every remediation flow is served as the deployment `<flow>/<flow>`."""
    return f"{flow}/{flow}"


def idempotency_key(run: ActiveRun) -> str:
    """One flow run per decision, whatever retries happen. Prefect keeps keys per flow,
    forever: the digest of the incident and key keeps two stores' decision ids apart."""
    what = hashlib.sha256(f"{run.rule}|{run.incident}|{run.guard_key}".encode()).hexdigest()
    return f"responder:decision:{run.decision_id}:{what[:24]}"


def ui_url_for(api_url: str) -> str:
    """The Prefect UI next to an API URL (`http://h:4200/api` → `http://h:4200`)."""
    return api_url.rstrip("/").removesuffix("/api")


def _is_refusal(exc: Exception) -> bool:
    """A 4xx from Prefect (bad parameters, say) will not succeed on retry; 404, 408, 429 may."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (404, 408, 429)


def _refusal_detail(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    try:
        return str(response.json()["detail"])[:2000]  # type: ignore[union-attr]
    except Exception:
        return str(exc)[:2000]


def _merged(members: list[tuple[ActiveRun, float]]) -> tuple[ActiveRun, str]:
    """The batch's run (`merge_batch`), and the members' decision ids."""
    ids = ",".join(str(run.decision_id) for run, _ in members)
    return merge_batch([run for run, _ in members]), ids


class Dispatcher:
    """Creates flow runs for admitted decisions and releases their leases when they end."""

    def __init__(
        self,
        store: Store,
        api_url: str,
        *,
        poll_seconds: float = 2.0,
        queue_size: int = 10_000,
        retry_seconds: float = 1.0,
        alertmanager_url: str | None = None,
        lease_seconds: float = 3600.0,
        lost_run_seconds: float = 90.0,
    ) -> None:
        self._store = store
        self.api_url = api_url
        self.ui_url = ui_url_for(api_url)
        self._poll_seconds = poll_seconds
        self._retry_seconds = retry_seconds
        self._alertmanager_url = alertmanager_url
        self._silences = Silencer(store, lease_seconds)
        self._lease_seconds = lease_seconds
        self._queue: asyncio.Queue[tuple[ActiveRun, float]] = asyncio.Queue(queue_size)
        self._deployments: dict[str, UUID] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.Task[None]] = set()  # background work, cancelled on stop
        self._attempts: dict[int, int] = {}
        self._batches: dict[tuple[str, str, str], list[tuple[ActiveRun, float]]] = {}
        # Admitted decisions whose run is still to be created (queued, retrying, batching,
        # or being created): their leases are renewed, never expired from under them.
        self._pending: set[int] = set()
        self._client: Any = None
        self._tls: Any = True  # Prefect's TLS context once started (`_healthy`)
        self._events = DecisionEvents(api_url)
        self.events_connected = False
        self._prefect_reachable = False
        self._back = asyncio.Event()  # set when Prefect is reachable again
        self._approvals = Approvals(store, self._prefect)
        self._lost = LostRuns(lost_run_seconds)

    @property
    def prefect_reachable(self) -> bool:
        """Whether the last call to Prefect's API succeeded (also a gauge in /metrics)."""
        return self._prefect_reachable

    @prefect_reachable.setter
    def prefect_reachable(self, reachable: bool) -> None:
        if reachable and not self._prefect_reachable:
            self._back.set()  # wake the creations waiting out their backoff
            self._back = asyncio.Event()
        self._prefect_reachable = reachable
        metrics.PREFECT_REACHABLE.set(1 if reachable else 0)

    def flow_run_url(self, flow_run_id: str) -> str:
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}"

    async def start(self) -> None:
        """Start workers; re-queue admitted decisions that never got a flow run."""
        if self._tasks:
            return  # already started
        from responder.orchestration.prefect_api import (
            import_prefect_client,
            prefect_client,
            prefect_tls_context,
        )

        # One to two seconds of imports: in a thread, so that intake and the engine loop,
        # which may run already, go on meanwhile.
        await asyncio.to_thread(import_prefect_client)

        self._client = prefect_client(self.api_url)
        self._tls = prefect_tls_context()  # built once: the health check runs every poll
        await self._client.__aenter__()
        if self._alertmanager_url:
            self._silences.open(Alertmanager(self._alertmanager_url))
        await self._events.open()
        for run in await active_runs(self._store):
            if run.flow_run_id is None:
                await self.submit(run)  # unless the engine loop queued it already
        await self._approvals.resume_watch()
        # Several creations in flight: one flow-run creation takes tens of milliseconds, so a
        # single worker would queue decisions behind each other in a storm.
        self._tasks = [
            *(
                asyncio.create_task(self._create_runs(), name=f"dispatch-create-{n}")
                for n in range(CREATORS)
            ),
            asyncio.create_task(self._follow_events(), name="dispatch-events"),
            asyncio.create_task(self._poll_states(), name="dispatch-poll"),
        ]

    async def stop(self) -> None:
        await cancel(*self._tasks, *self._retries)
        self._tasks = []
        self._pending.clear()
        # Their decisions have no flow run: start() queues them again, from the store.
        self._batches.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
        await self._events.close()
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None
        await self._silences.close()

    async def submit(self, run: ActiveRun) -> None:
        """Queue an admitted decision, once; waits only when the queue is full (backpressure).

        The engine loop may run before the dispatcher starts, which queues again every
        admitted decision without a flow run: one of them the loop queued is not queued twice.
        """
        if run.decision_id in self._pending:
            return
        self._pending.add(run.decision_id)
        await self._queue.put((run, time.monotonic()))

    async def _create_runs(self) -> None:
        """One of `CREATORS` workers taking queued decisions; a failed attempt is retried
        later, so one decision that cannot be created never holds up the others."""
        while True:
            run, admitted_at = await self._queue.get()
            if run.batch_over is not None:
                self._join_batch(run, admitted_at)
                continue
            attempt = self._attempts.pop(run.decision_id, 0)
            try:
                outcome = await self._attempt(run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcome = "retry"
                log.warning("dispatch of decision %s failed: %s", run.decision_id, exc)
            if outcome in ("retry", "paused"):
                if outcome == "retry":
                    self.prefect_reachable = False
                delay = min(self._retry_seconds * 2**attempt, 30.0)
                self._retry_later(run, admitted_at, attempt + 1, delay)
                continue
            self._pending.discard(run.decision_id)
            if outcome == "created":
                self.prefect_reachable = True
                metrics.DISPATCH_SECONDS.observe(time.monotonic() - admitted_at)

    async def _attempt(self, run: ActiveRun) -> str:
        """One try: "created", "retry", "paused" (to retry, Prefect not asked), or "done"
        (refused, or no longer wanted)."""
        wanted = await pause.wanted(self._store, run.decision_id)
        if wanted is pause.Wanted.NO:
            log.info("decision %s ended before its flow run was created", run.decision_id)
            return "done"
        if wanted is pause.Wanted.PAUSED:
            return "paused"  # a paused system starts nothing, not even what it admitted
        try:
            flow_run_id = await self._create(run)
        except Exception as exc:
            metrics.DISPATCH_FAILURES.inc()
            self._deployments.pop(run.flow, None)  # it may have been recreated
            if _is_refusal(exc):
                await self._refused(run, exc)
                return "done"
            log.warning("creating a flow run for decision %s failed: %s", run.decision_id, exc)
            return "retry"
        await self._store.decisions.set_flow_run(run.decision_id, flow_run_id)
        self._background(self._tell_story(run, flow_run_id))
        await self._emit_decision(run, flow_run_id)
        if run.silence:
            await self._silences.silence(run, self.flow_run_url(flow_run_id))
        log.info(
            "decision %s: flow run %s (%s)",
            run.decision_id,
            flow_run_id,
            self.flow_run_url(flow_run_id),
        )
        return "created"

    def _join_batch(self, run: ActiveRun, admitted_at: float) -> None:
        """Machine batching: hold a batched decision until its window closes, together with
        the decisions of the same rule and flow whose other parameters are equal."""
        key = batch_group(run)
        assert key is not None  # only batched runs join
        group = self._batches.setdefault(key, [])
        group.append((run, admitted_at))
        if len(group) == 1:

            async def close() -> None:
                await asyncio.sleep(run.batch_window)
                await self._dispatch_batch(self._batches.pop(key, []), attempt=0)

            self._background(close())

    async def _dispatch_batch(self, members: list[tuple[ActiveRun, float]], attempt: int) -> None:
        """One flow run for every member still wanted, over the union of their lists.

        Each member keeps its own decision, key and mutexes; all of them point at the run,
        and its final state ends them all. A failed try retries the same members together;
        so does a pause, which is no failure: Prefect is not asked while it lasts.
        """
        wanted = [(m, await pause.wanted(self._store, m[0].decision_id)) for m in members]
        live = [m for m, state in wanted if state is not pause.Wanted.NO]
        for (run, _), state in wanted:
            if state is pause.Wanted.NO:
                self._pending.discard(run.decision_id)
        if not live:
            return
        if any(state is pause.Wanted.PAUSED for _, state in wanted):
            self._retry_batch(live, attempt)  # a paused system starts nothing
            return
        merged, ids = _merged(live)
        try:
            flow_run_id = await self._create(
                merged, key=f"responder:batch:{hashlib.sha256(ids.encode()).hexdigest()[:32]}"
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _is_refusal(exc):
                for run, _ in live:
                    self._pending.discard(run.decision_id)
                    await self._refused(run, exc)
                return
            metrics.DISPATCH_FAILURES.inc()
            self.prefect_reachable = False
            log.warning("batched flow run for decisions %s failed: %s", ids, exc)
            self._retry_batch(live, attempt)
            return
        self.prefect_reachable = True
        for run, admitted_at in live:
            await self._store.decisions.set_flow_run(run.decision_id, flow_run_id)
            self._pending.discard(run.decision_id)
            await self._emit_decision(run, flow_run_id)
            if run.silence:
                await self._silences.silence(run, self.flow_run_url(flow_run_id))
            metrics.DISPATCH_SECONDS.observe(time.monotonic() - admitted_at)
        items = merged.parameters[merged.batch_over or ""]
        log.info("decisions %s: one batched flow run %s over %d", ids, flow_run_id, len(items))

    def _retry_batch(self, members: list[tuple[ActiveRun, float]], attempt: int) -> None:
        delay = min(self._retry_seconds * 2**attempt, 30.0)

        async def retry() -> None:
            await self._backoff(delay)
            await self._dispatch_batch(members, attempt + 1)

        self._background(retry())

    async def _tell_story(self, run: ActiveRun, flow_run_id: str) -> None:
        """The run's artifact in the Prefect UI: the alert, the rule and why, the guard's
        checks and the incident's earlier decisions. Best effort: the run goes on without."""
        fingerprint = run.incident.partition("@")[0]
        try:
            history = await self._store.decisions.recent(limit=50, fingerprint=fingerprint)
            alert = await self._store.alerts.firing_alert(run.incident)
        except Exception as exc:
            log.warning("no artifact for decision %s: %s", run.decision_id, exc)
            return
        decision = next((row for row in history if row["id"] == run.decision_id), {})
        markdown = story.dispatch_story(run, decision, alert, history, self._alertmanager_url)
        await self._artifact(flow_run_id, story.DISPATCH_ARTIFACT, markdown, "why this run")

    async def _artifact(self, flow_run_id: str, key: str, markdown: str, description: str) -> None:
        from prefect.client.schemas.actions import ArtifactCreate

        from responder.orchestration.prefect_api import using_api

        if self._client is None:
            return
        try:
            # Prefect's client announces the artifact as an event through its global events
            # worker, which finds its server in the settings: without this, it would start
            # an ephemeral server, blocking this loop, when PREFECT_API_URL is not set.
            with using_api(self.api_url):
                await self._client.create_artifact(
                    ArtifactCreate(
                        key=key,
                        type="markdown",
                        data=markdown,
                        description=description,
                        flow_run_id=UUID(flow_run_id),
                    )
                )
        except Exception as exc:
            log.warning("artifact %s of flow run %s not written: %s", key, flow_run_id, exc)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _backoff(self, delay: float) -> None:
        """Wait `delay` before a retry, or less if Prefect is seen reachable again (the poll
        checks its health): after an outage, waiting runs are created at once."""
        await wake_or_timeout(self._back, delay)

    def _retry_later(self, run: ActiveRun, admitted_at: float, attempt: int, delay: float) -> None:
        async def requeue() -> None:
            await self._backoff(delay)
            self._attempts[run.decision_id] = attempt
            await self._queue.put((run, admitted_at))

        self._background(requeue())

    async def _emit_decision(self, run: ActiveRun, flow_run_id: str) -> None:
        await self._events.admitted(run, flow_run_id)

    def announce_refused(self, refused: list[RefusedDecision]) -> None:
        """Mirror refused decisions as Prefect events, in the background."""
        self._events.refused(refused, self._background)

    async def _refused(self, run: ActiveRun, exc: Exception) -> None:
        detail = _refusal_detail(exc)
        log.error("Prefect refused the flow run of decision %s: %s", run.decision_id, detail)
        await leases.finish(self._store, run.decision_id, "REJECTED", detail=detail)
        metrics.FLOW_RUNS_FINISHED.labels(state="REJECTED").inc()

    async def _create(self, run: ActiveRun, key: str | None = None) -> str:
        deployment_id = self._deployments.get(run.flow)
        if deployment_id is None:
            deployment = await self._client.read_deployment_by_name(deployment_name(run.flow))
            deployment_id = self._deployments[run.flow] = deployment.id
        flow_run = await self._client.create_flow_run_from_deployment(
            deployment_id,
            parameters=run.parameters,
            name=story.run_name(run),
            tags=story.run_tags(run),
            idempotency_key=key or idempotency_key(run),
        )
        return str(flow_run.id)

    @contextlib.asynccontextmanager
    async def _prefect(self) -> AsyncIterator[Any]:
        """The running client; a short-lived one on a replica that does not lead."""
        if self._client is not None:
            yield self._client
            return
        from responder.orchestration.prefect_api import prefect_client

        async with prefect_client(self.api_url) as client:
            yield client

    async def answer_approval(
        self, flow_run_id: str, approved: bool, by: str, comment: str
    ) -> dict[str, Any]:
        """Approve or reject a run that waits, as operator `by` (see `Approvals.answer`)."""
        return await self._approvals.answer(flow_run_id, approved, by, comment)

    async def _finish(self, flow_run_id: str, state_type: str, detail: str | None = None) -> None:
        """A flow run reached a final state: end the decisions it served (one, or a batch's)."""
        for run in await runs_of(self._store, flow_run_id):
            if await leases.finish(self._store, run.decision_id, state_type, detail=detail):
                metrics.FLOW_RUNS_FINISHED.labels(state=state_type).inc()
                outcome = story.outcome_story(run.decision_id, state_type, detail)
                self._background(
                    self._artifact(flow_run_id, story.OUTCOME_ARTIFACT, outcome, state_type)
                )
                log.info("decision %s: flow run %s is %s", run.decision_id, flow_run_id, state_type)
                if run.silence:
                    self._background(self._silences.lift())  # now, not at the next poll

    async def _read_runs(self, ids: list[UUID]) -> list[Any]:
        """Prefect's flow runs of these ids (it answers at most `READ_LIMIT` at a time)."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        found: list[Any] = []
        for start in range(0, len(ids), READ_LIMIT):
            chunk = FlowRunFilterId(any_=ids[start : start + READ_LIMIT])
            found += await self._client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=chunk), limit=READ_LIMIT
            )
        return found

    async def _crash(self, lost: LostRun) -> str:
        """A lost run (`lost_runs`): CRASHED in Prefect, so that no runner starts it later
        and the UI says so, and its decisions ended with that state (keys freed)."""
        from prefect.states import Crashed

        log.warning("flow run %s is %s", lost.flow_run_id, lost.message)
        await self._client.set_flow_run_state(
            UUID(lost.flow_run_id), Crashed(message=lost.message), force=True
        )
        await self._finish(lost.flow_run_id, "CRASHED", lost.message)
        self._lost.forget(lost.flow_run_id)
        return lost.flow_run_id

    async def _run_state(self, flow_run_id: str) -> str | None:
        """What Prefect says of a run whose lease expired (see `leases.expire_lost`)."""
        from prefect.exceptions import ObjectNotFound

        try:
            flow_run = await self._client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return NO_SUCH_RUN
        return flow_run.state.type.value if flow_run.state else None

    async def _follow_events(self) -> None:
        from prefect.events.clients import PrefectEventSubscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        event_filter = EventFilter(event=EventNameFilter(prefix=["prefect.flow-run."]))
        while True:
            try:
                async with PrefectEventSubscriber(
                    api_url=self.api_url, filter=event_filter, reconnection_attempts=0
                ) as subscriber:
                    self.events_connected = True
                    self._lost.listening()
                    async for event in subscriber:
                        state_type = event.resource.get("prefect.state-type")
                        flow_run_id = event.resource.id.removeprefix("prefect.flow-run.")
                        self._lost.heard(flow_run_id)  # a heartbeat, a state change: alive
                        if state_type:
                            await self._approvals.seen(flow_run_id, state_type)
                        if state_type in FINAL_STATES:
                            message = (event.payload.get("validated_state") or {}).get("message")
                            await self._finish(flow_run_id, state_type, message or None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("event stream lost (%s); polling covers it", exc)
            self.events_connected = False
            self._lost.deaf()
            await asyncio.sleep(self._poll_seconds)

    async def _healthy(self) -> bool:
        """One quick look at Prefect's health. The Prefect client retries a refused
        connection for up to a minute, which would hide Prefect's return that long."""
        # The client's own headers carry its credentials (PREFECT_API_KEY, auth string).
        headers = getattr(getattr(self._client, "_client", None), "headers", None)
        try:
            async with httpx.AsyncClient(timeout=2.0, headers=headers, verify=self._tls) as http:
                response = await http.get(f"{self.api_url.rstrip('/')}/health")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _poll_states(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                self.prefect_reachable = await self._healthy()
                if not self.prefect_reachable:
                    continue  # every step below needs Prefect's answers
                await leases.expire_lost(
                    self._store, self._pending, self._run_state, self._lease_seconds
                )
                await self._silences.lift()
                runs = [r for r in await active_runs(self._store) if r.flow_run_id]
                metrics.ACTIVE_LEASES.set(await self._store.leases.count())
                if not runs:
                    continue
                ids = [UUID(r.flow_run_id) for r in runs if r.flow_run_id]
                flow_runs = await self._read_runs(ids)
                going = []
                crashed = [await self._crash(lost) for lost in self._lost.lost(flow_runs)]
                for gone in self._lost.forgotten(map(str, ids), {str(f.id) for f in flow_runs}):
                    await self._finish(gone, "EXPIRED", FORGOTTEN)
                for flow_run in flow_runs:
                    if str(flow_run.id) in crashed:
                        continue
                    if flow_run.state is not None:
                        await self._approvals.seen(str(flow_run.id), flow_run.state.type.value)
                    if flow_run.state is not None and flow_run.state.type.value in FINAL_STATES:
                        await self._finish(
                            str(flow_run.id),
                            flow_run.state.type.value,
                            flow_run.state.message or None,
                        )
                    else:
                        going.append(str(flow_run.id))
                # Runs Prefect reports as going keep their keys, and their silences.
                renewed = [r.decision_id for r in runs if r.flow_run_id in going]
                await leases.renew(self._store, renewed, self._lease_seconds)
                await self._silences.extend(renewed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.prefect_reachable = False
                log.warning("polling flow-run states failed: %s", exc)
