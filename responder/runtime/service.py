"""The running service: store, engine loop, guard and dispatch, wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from responder import metrics
from responder.control import fencing, leases
from responder.control import pause as remediation
from responder.control.guard import Guard
from responder.decision.maintenance import MaintenanceWindow
from responder.decision.rules import Rule, RuleBook, load_rules
from responder.decision.services import ServiceCatalog, load_services
from responder.events.webhook import Alert, AlertmanagerWebhook
from responder.exceptions import CheckFailed, DispatchError, DocumentError, StoreUnavailable
from responder.orchestration.flow_catalog import parameter_errors, use_flow_dirs
from responder.orchestration.prefect_events import Accept, PrefectEvents
from responder.runtime.leadership import Leadership
from responder.runtime.loop import EngineLoop
from responder.runtime.recovery import Recovery
from responder.runtime.streams import RedisStream
from responder.settings import Settings
from responder.storage.inbox import InboxSource
from responder.storage.store import Store
from responder.tasks import cancel

if TYPE_CHECKING:
    from responder.orchestration.dispatch import Dispatcher

log = logging.getLogger(__name__)

# After a failed start of the dispatcher (its store or Prefect's client), the next try.
DISPATCHER_RETRY_SECONDS = 5.0


def known_flows() -> list[str]:
    from responder.orchestration.flow_catalog import flow_names

    return flow_names()


def _warm_parameter_checks() -> None:
    from responder.orchestration.flow_catalog import flow_names

    for flow in flow_names():
        with contextlib.suppress(Exception):  # a broken flow is reported when it is used
            parameter_errors(flow, {})


def _dispatcher(store: Store, settings: Settings, api_url: str) -> Dispatcher:
    """The dispatcher of remediation runs to this Prefect server, as the settings say.

    Imported here: without a Prefect server, serve needs neither it nor its HTTP client."""
    from responder.orchestration.dispatch import Dispatcher

    return Dispatcher(
        store,
        api_url,
        poll_seconds=settings.poll_seconds,
        alertmanager_url=settings.alertmanager_url,
        lease_seconds=settings.lease_seconds,
        lost_run_seconds=settings.lost_run_seconds,
    )


def _prefect_events(
    settings: Settings, api_url: str | None, accept: Accept
) -> PrefectEvents | None:
    """Prefect's event feed as a source, when there is a Prefect and events to read."""
    if not (api_url and settings.prefect_event_types):
        return None
    return PrefectEvents(
        api_url, settings.prefect_event_types, settings.prefect_events_lookback_seconds, accept
    )


# What a reload reads again besides the rules (`Service.also_reload`): read, then use.
Rereading = tuple[Callable[[], Any], Callable[[Any], None]]


class Service:
    """Everything behind the HTTP app; `start` and `stop` bracket its life."""

    def __init__(
        self,
        settings: Settings,
        *,
        prefect_api_url: str | None = None,
        check: Callable[[Settings], None] | None = None,
    ) -> None:
        self.settings = settings
        # What `responder check` calls errors (`authoring.check.refuse_errors`) fail a reload
        # before it loads anything; at the start, the rules that load run and they are
        # logged, by `start` in the background (the check renders every rule's templates).
        self._check = check
        use_flow_dirs(settings.flows_dir)
        book, catalog = self._load(checked=False)
        self.store = Store(settings.store_url, timeout_seconds=settings.store_timeout_seconds)
        self.store.check_file()  # a damaged file stops start-up here, named, not in a traceback
        api_url = prefect_api_url or settings.prefect_api_url
        self.dispatcher = _dispatcher(self.store, settings, api_url) if api_url else None
        self.loop = EngineLoop(
            self.store,
            Guard(self.store, settings.lease_seconds, dry_run=settings.dry_run),
            self.dispatcher,
            book,
            catalog,
            rule_vars=settings.rule_vars,
            batch=settings.engine_batch,
            idle_seconds=settings.engine_idle_seconds,
            partitions=settings.engine_partitions,
            event_ttl=settings.event_ttl,
            check_parameters=parameter_errors,
            on_truncated=self._truncated,
        )
        self.recovery = Recovery(
            self.store,
            settings.alertmanager_url,
            settings.alertmanager_receiver,
            interval=settings.resync_interval,
            wake=self.loop.wake.set,
        )
        self.leadership = Leadership(self.store, settings.data_dir / "leader.lock")
        # Event sources beyond HTTP: the stream on every replica, Prefect's feed on the leader.
        self.stream = RedisStream(settings, self.accept) if settings.redis_url else None
        self.prefect_events = _prefect_events(settings, api_url, self.accept)
        self._task: asyncio.Task[None] | None = None
        self._warmup: asyncio.Task[None] | None = None
        self._dispatching: asyncio.Task[None] | None = None  # the dispatcher's start
        self._checking: asyncio.Task[None] | None = None  # the start's check
        self._watcher: asyncio.Task[None] | None = None
        self._campaign: asyncio.Task[None] | None = None
        self._also: list[Rereading] = []  # what else a reload reads (`also_reload`)
        self._stamp = self._files_stamp()
        metrics.RULES_LOADED.set(len(book.rules))
        metrics.RELOAD_SUCCESS.set(1)

    @property
    def book(self) -> RuleBook:
        return self.loop.book

    def also_reload(self, read: Callable[[], Any], use: Callable[[Any], None]) -> None:
        """Have each reload `read` again (in a thread; a DocumentError fails the reload and
        leaves everything in force) and `use` what it read, with the new rules."""
        self._also.append((read, use))

    def _load(self, *, checked: bool = True) -> tuple[RuleBook, ServiceCatalog]:
        if checked and self._check is not None:
            self._check(self.settings)  # CheckFailed: nothing loaded
        return (
            load_rules([self.settings.rules_dir], known_flows()),
            load_services(self.settings.services_file),
        )

    def _log_check(self) -> None:
        """The start's check: its errors logged; the rules that loaded run all the same."""
        if self._check is None:
            return
        try:
            self._check(self.settings)
        except CheckFailed as exc:
            log.error(
                "responder check finds %d error(s); a reload will refuse them until they "
                "are fixed: %s",
                len(exc.errors),
                "; ".join(f"{e['file']}:{e['line']}: {e['message']}" for e in exc.errors),
            )
        except Exception:
            log.exception("responder check failed at the start")

    async def reload(self) -> RuleBook:
        """Load rules and catalog again; on any error keep the old ones and raise it."""
        if self._checking is not None:
            await asyncio.shield(self._checking)  # one check at a time, the start's first
        try:
            # Parsing and compiling thousands of rules takes seconds: not on the event loop.
            book, catalog = await asyncio.to_thread(self._load)
            also = [(use, await asyncio.to_thread(read)) for read, use in self._also]
            await self.loop.use(book, catalog)
            for use, value in also:
                use(value)
            # The flows as they passed the check are the ones in force: read them now, so
            # that a flow file broken later fails the next reload, not the decisions.
            await asyncio.to_thread(_warm_parameter_checks)
        except (DocumentError, StoreUnavailable) as exc:
            metrics.RELOADS.labels(result="failure").inc()
            metrics.RELOAD_SUCCESS.set(0)
            log.error("reload failed, the previous rules stay in force: %s", exc)
            raise
        metrics.RELOADS.labels(result="success").inc()
        metrics.RELOAD_SUCCESS.set(1)
        metrics.RULES_LOADED.set(len(book.rules))
        log.info("reloaded %d rules and %d services", len(book.rules), len(catalog.services))
        return book

    def _files_stamp(self) -> tuple[tuple[str, float, int], ...]:
        paths = [self.settings.services_file]
        directories = [self.settings.rules_dir, *self.settings.flows_dir]
        for directory in [*directories, self.settings.mappings_dir]:
            if directory.is_dir():
                paths.extend(sorted(directory.iterdir()))
            else:
                paths.append(directory)
        stamp = []
        for path in paths:
            with contextlib.suppress(OSError):
                info = path.stat()
                stamp.append((str(path), info.st_mtime, info.st_size))
        return tuple(stamp)

    async def _watch_files(self) -> None:
        """Reload when a rule file, a `flows_dir` flow file, a JSON webhook mapping or the
        catalog changes (checked every few seconds)."""
        while True:
            await asyncio.sleep(self.settings.reload_check_seconds)
            try:
                stamp = self._files_stamp()
                if stamp != self._stamp:
                    self._stamp = stamp
                    await self.reload()
            except (DocumentError, StoreUnavailable):
                pass  # logged and counted by reload(); the rules in force stay
            except Exception:
                log.exception("watching the rule files failed; trying again")

    async def start(self) -> None:
        """Migrate the store, lead if no other replica does, and watch the rule files."""
        await self.store.migrate()
        if await self.leadership.acquire():
            await self._lead()
        else:
            log.info("another replica leads; accepting webhooks into the shared inbox")
        if self.stream is not None:
            self.stream.start()
        self._campaign = asyncio.create_task(self._campaign_forever(), name="leadership")
        if self.settings.reload_check_seconds > 0:
            self._watcher = asyncio.create_task(self._watch_files(), name="rule-watcher")
        self._checking = asyncio.create_task(asyncio.to_thread(self._log_check), name="check")

    async def _lead(self) -> None:
        # The first parameter check of each flow imports it: do that now, in the background,
        # rather than on the first decision.
        self._warmup = asyncio.create_task(asyncio.to_thread(_warm_parameter_checks))
        await self.loop.rebuild()
        self._task = asyncio.create_task(self.loop.run(), name="engine-loop")
        if self.dispatcher is not None:
            self._dispatching = asyncio.create_task(
                self._start_dispatching(self.dispatcher), name="dispatcher-start"
            )
        self.recovery.start()
        if self.prefect_events is not None:
            self.prefect_events.start()
        metrics.LEADER.set(1)
        log.info("leading: %d rules loaded, engine loop started", len(self.book.rules))

    async def _start_dispatching(self, dispatcher: Dispatcher) -> None:
        """Start the dispatcher, until it starts. Importing Prefect's client and connecting
        take seconds that neither intake nor the engine loop wait for: what the loop admits
        meanwhile waits in the dispatcher's queue."""
        while True:
            try:
                await dispatcher.start()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "starting the dispatcher failed; trying again in %gs",
                    DISPATCHER_RETRY_SECONDS,
                )
                await dispatcher.stop()
                await asyncio.sleep(DISPATCHER_RETRY_SECONDS)

    def _truncated(self, webhook: AlertmanagerWebhook) -> None:
        self.recovery.truncated(webhook)

    async def _step_down(self) -> None:
        metrics.LEADER.set(0)
        if self.prefect_events is not None:
            await self.prefect_events.stop()
        await cancel(self._task, self._dispatching)
        self._task = self._dispatching = None
        await self.recovery.stop()  # after the loop, which hands it truncated webhooks
        if self.dispatcher is not None:
            await self.dispatcher.stop()

    async def _campaign_forever(self) -> None:
        """Followers try to take the lead; the leader checks that it still holds it."""
        while True:
            await asyncio.sleep(self.settings.leader_check_seconds)
            try:
                if self._task is None:
                    if await self.leadership.acquire():
                        log.warning("took the lead")
                        await self._lead()
                elif self._task.done() or not await self.leadership.still_held():
                    # A leader whose loop ended must let another replica lead.
                    await self._step_down()
                    await self.leadership.release()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leadership check failed; trying again")

    @property
    def leading(self) -> bool:
        return self._task is not None

    async def stop(self) -> None:
        await cancel(self._watcher, self._campaign)
        self._watcher = self._campaign = None
        if self._checking is not None:
            # Its thread cannot be stopped: let it end, so that nothing of this service
            # (the flow directories it sets) outlives it.
            await self._checking
            self._checking = None
        if self.stream is not None:
            await self.stream.stop()
        await self._step_down()
        await self.leadership.release()
        await self.store.close()

    @property
    def engine_alive(self) -> bool:
        """The leader's engine loop runs; a follower has none to run."""
        if self._task is None:
            return True
        return not self._task.done() and self.loop.running

    @property
    def flows_loaded(self) -> bool:
        """The flows' parameter checks are built (the leader's first decisions wait for it)."""
        return self._warmup is None or self._warmup.done()

    # What the HTTP app asks of the service (responder/intake/): these, never the engine loop,
    # store or dispatcher inside, so that the app does not change when they do.

    async def accept(self, source: str, body: bytes, parsed: object = None) -> int:
        """Commit a body to the inbox and wake the engine; its inbox id (or StoreUnavailable).
        `parsed`: the body as the engine reads it, if the caller validated it (`Inbox.add`)."""
        inbox_id = await self.store.inbox.add(InboxSource(source), body, parsed)
        self.loop.wake.set()
        return inbox_id

    async def decisions(self, **filters: Any) -> list[dict[str, Any]]:
        """Recorded decisions, newest first (`Decisions.recent` takes the filters)."""
        return await self.store.decisions.recent(**filters)

    def held_alerts(self, fingerprint: str) -> list[Alert]:
        """The firing alerts the engine holds with this fingerprint (one per incident)."""
        return self.loop.engine.held_alerts(fingerprint)

    def judge(self, alert: Alert) -> list[tuple[Rule, str | None]]:
        """For each rule, None if it holds for `alert` now, else the first condition that fails."""
        return self.loop.engine.explain(alert)

    async def pause(self, reason: str, by: str, declared_by: str) -> remediation.Pause:
        """Refuse every new remediation until `resume`: who (`by`, and `declared_by` if the
        request named another), when and why."""
        return await remediation.pause(self.store, reason, by, declared_by=declared_by)

    async def resume(self) -> None:
        """Lift the pause; if this replica leads, its waiting incidents are asked at once."""
        await remediation.resume(self.store)
        self.loop.recheck_now()

    async def add_window(self, window: MaintenanceWindow, by: str) -> str | None:
        """Keep a maintenance window (the guard reads it from the next transaction on);
        None, or why not (its name is taken, by a kept window or the catalog's)."""
        assert window.name is not None
        if window.name in {w.name for w in self.loop.catalog.windows}:
            return f"the catalog has a maintenance window named {window.name!r}"
        spec = window.model_dump(mode="json", exclude_defaults=True)
        return await self.store.maintenance.add(window.name, spec, by, time.time())

    async def remove_window(self, name: str) -> bool:
        """Forget a kept window; the incidents waiting on a window are decided again."""
        if not await self.store.maintenance.remove(name):
            return False
        async with self.store.transaction() as conn:
            await self.store.incidents.ask_again_waiting_on(conn, "maintenance")
        self.loop.recheck_now()
        return True

    async def windows(self) -> list[dict[str, Any]]:
        """Every maintenance window, the catalog's and the kept ones, as shown."""
        now = time.time()
        shown = [{**w.shown(now), "source": "catalog"} for w in self.loop.catalog.windows]
        for row in await self.store.maintenance.listed():
            window = MaintenanceWindow.model_validate(row["spec"])
            shown.append(
                {
                    **window.shown(now),
                    "source": "api",
                    "created_by": row["created_by"],
                    "created_at": row["created_at"],
                }
            )
        return shown

    async def guard_state(self) -> dict[str, Any]:
        """The pause switch, held keys and mutexes, and cooling keys."""
        return await leases.guard_state(self.store)

    async def incidents(self) -> dict[str, Any]:
        """Incidents by remediation state, and the waiting ones (longest first, bounded)."""
        counts = await self.store.incidents.counts()
        metrics.set_incidents(counts)
        return {"counts": counts, "waiting": await self.store.incidents.waiting()}

    async def incidents_of(self, fingerprint: str) -> list[dict[str, Any]]:
        """The remediation state of each incident of one alert, newest first, with the next
        attempt of its ladder if one is set (`next_attempt`: rule and time)."""
        records = await self.store.incidents.like(fingerprint)
        recorded = {r["incident"] for r in records}
        records += [  # firing, and no rule acted on it: no record of its own
            {"incident": a.incident, "alertname": a.alertname, "firing": True, "state": "unmatched"}
            for a in self.held_alerts(fingerprint)
            if a.incident not in recorded
        ]
        timers = await self.store.timers.of(f"{fingerprint}@%")
        for record in records:
            record["next_attempt"] = next(
                (
                    {"rule": t["rule"], "at": t["due_at"], "reason": t["reason"]}
                    for t in timers
                    if t["incident"] == record["incident"]
                ),
                None,
            )
        return records

    async def fencing_check(self, decision_id: int, flow_run_id: str) -> fencing.Answer:
        """May this flow run, carrying this decision's token, act now (`control.fencing`)?"""
        return await fencing.check(self.store, decision_id, flow_run_id)

    async def awaiting_approval(self) -> list[dict[str, Any]]:
        """The decisions whose flow run waits for an operator's answer."""
        return await self.store.approvals.awaiting()

    @property
    def answers_approvals(self) -> bool:
        """Whether a Prefect server is here to take an answer to a waiting run."""
        return self.dispatcher is not None

    async def answer_approval(
        self, flow_run_id: str, approved: bool, by: str, comment: str
    ) -> dict[str, Any]:
        """Approve or reject a waiting run as operator `by` (needs `answers_approvals`)."""
        if self.dispatcher is None:
            raise DispatchError("no Prefect server here to send the answer to")
        return await self.dispatcher.answer_approval(flow_run_id, approved, by, comment)

    def flow_run_url(self, flow_run_id: str | None) -> str | None:
        """A flow run's page in the Prefect UI; None without a run or a Prefect server."""
        if not flow_run_id or self.dispatcher is None:
            return None
        return self.dispatcher.flow_run_url(flow_run_id)

    @property
    def prefect_reachable(self) -> bool | None:
        """Whether this leader's last call to Prefect succeeded; None when it has no say."""
        if self.dispatcher is None or not self.leading:
            return None
        return self.dispatcher.prefect_reachable

    async def store_problem(self) -> str | None:
        """Why the store cannot take a webhook now; None when it can."""
        return await self.store.problem()

    async def backlog(self) -> int:
        """Inbox bodies not yet decided."""
        return await self.store.inbox.backlog()
