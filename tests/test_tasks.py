"""Background tasks end when they are cancelled, even when the cancellation and their
wake-up arrive in the same turn of the event loop (`responder.tasks`).

Before: the engine loop waited with `asyncio.wait_for`, which in Python 3.11 drops such a
cancellation; `Service.stop()` then waited forever for the loop's end (seen as a hang of the
file watcher's test, when a reload woke the loop just as the test stopped the service).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from responder import tasks
from responder.tasks import cancel, wake_or_timeout


async def test_a_cancellation_in_the_same_turn_as_the_wake_up_ends_the_waiting_loop() -> None:
    event = asyncio.Event()
    wake_ups = 0

    async def idle_loop() -> None:  # the shape of the engine loop's idle wait
        nonlocal wake_ups
        while True:
            event.clear()
            if await wake_or_timeout(event, 30):
                wake_ups += 1

    task = asyncio.create_task(idle_loop())
    await asyncio.sleep(0.05)  # waiting on the event
    event.set()
    task.cancel()  # same turn: the wake-up is scheduled before the cancellation is seen
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done, "the loop outlived its cancellation"
    assert task.cancelled()
    assert wake_ups == 0


async def test_wake_or_timeout_tells_a_wake_up_from_a_timeout() -> None:
    event = asyncio.Event()
    assert await wake_or_timeout(event, 0.05) is False
    asyncio.get_running_loop().call_later(0.05, event.set)
    assert await wake_or_timeout(event, 5) is True


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "CANCEL_AGAIN_SECONDS", 0.1)
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed += 1  # as a library's `wait_for` might
        await asyncio.sleep(30)

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="responder.tasks"):
        await asyncio.wait_for(cancel(task, None), timeout=5)
    assert task.cancelled()
    assert swallowed == 1
    assert "task stubborn outlived its cancellation" in caplog.text
