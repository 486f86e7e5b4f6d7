"""Background tasks: the one way every part waits for a wake-up and ends the tasks it started.

Python 3.11's `asyncio.wait_for` loses a cancellation that arrives in the same turn of the
event loop as the result it waits for (it returns the result instead; CPython gh-86296, fixed
in 3.12). A loop waiting on an event with it can then outlive its own cancellation, and
whoever waits for its end waits forever: a stop or a step-down that never finishes. Hence
`wake_or_timeout` (on `asyncio.timeout`, which keeps the cancellation), and a `cancel` that
asks again, loudly, when a task survives its cancellation all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

# How long `cancel` waits for a cancelled task before it cancels it again.
CANCEL_AGAIN_SECONDS = 5.0


async def wake_or_timeout(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set. A cancellation of
    the caller is never lost, even when the event is set in the same turn."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel these tasks (`None` is skipped) and wait until each has ended.

    A task that is still running `CANCEL_AGAIN_SECONDS` after its cancellation swallowed it
    (some library code does): it is cancelled again, with a warning, until it ends.
    """
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CANCEL_AGAIN_SECONDS)
            if done:
                break
            log.warning("task %s outlived its cancellation; cancelling it again", task.get_name())
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
