"""The dispatcher starts in the background of a new leader: the engine loop and /readyz do not
wait for Prefect's client to be imported and connected, and nothing admitted meanwhile is
dispatched twice or lost."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from responder.control.guard import Guard
from responder.control.runs import active_runs
from responder.orchestration.dispatch import Dispatcher
from responder.runtime.service import Service
from responder.storage.store import Store
from tests.control.test_guard import admit, decision
from tests.helpers import fixture_json, make_settings, wait_for

NOWHERE = "http://127.0.0.1:9/api"  # nothing listens: no flow run is created in these tests


async def test_a_decision_queued_before_the_start_is_queued_once(store: Store) -> None:
    assert (await admit(store, Guard(store, lease_seconds=60), decision())).admitted
    [run] = await active_runs(store)
    dispatcher = Dispatcher(store, NOWHERE, retry_seconds=60)
    try:
        await dispatcher.submit(run)  # the engine loop, before the dispatcher started
        # start() queues every admitted decision without a flow run, from the store; its
        # creators have not run yet when it returns.
        await dispatcher.start()
        assert dispatcher._queue.qsize() == 1
    finally:
        await dispatcher.stop()


async def test_a_stopped_dispatcher_queues_again_from_the_store(store: Store) -> None:
    assert (await admit(store, Guard(store, lease_seconds=60), decision())).admitted
    [run] = await active_runs(store)
    dispatcher = Dispatcher(store, NOWHERE, retry_seconds=60)
    await dispatcher.submit(run)
    await dispatcher.stop()  # a failed start, or a step-down: what was queued is dropped...
    assert dispatcher._queue.qsize() == 0
    try:
        await dispatcher.start()  # ... and queued again, once, by the next start
        assert dispatcher._queue.qsize() == 1
    finally:
        await dispatcher.stop()


async def test_the_engine_decides_while_the_dispatcher_is_still_starting(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prefect's client takes seconds to import and connect: held here until released.
    released = asyncio.Event()
    start = Dispatcher.start

    async def slow_start(self: Dispatcher) -> None:
        await released.wait()
        await start(self)

    monkeypatch.setattr(Dispatcher, "start", slow_start)
    service = Service(make_settings(tmp_path, rules_dir), prefect_api_url=NOWHERE)
    await asyncio.wait_for(service.start(), timeout=30)
    try:
        assert service.leading and service.engine_alive
        assert service.dispatcher is not None
        body = fixture_json("firing_single_servicedown")
        await service.store.inbox.add("alertmanager", json.dumps(body).encode())
        service.loop.wake.set()

        async def admitted() -> bool:
            return len(await active_runs(service.store)) == 1

        await wait_for(admitted, timeout=30)
        assert service.dispatcher._queue.qsize() == 1  # waiting for the dispatcher
        released.set()
        dispatcher = service.dispatcher

        async def started() -> bool:
            return bool(dispatcher._tasks)

        await wait_for(started, timeout=30)
        # Started, it queued the admitted decision again from the store: not a second time.
        assert dispatcher._pending == {(await active_runs(service.store))[0].decision_id}
    finally:
        released.set()
        await service.stop()
