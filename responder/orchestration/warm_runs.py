"""What a flow run forked by `responder up`'s runner finds ready: imported by the fork server
before it forks any run (`deployments.start_flow_runs_warm`), never by another process.

Importing it is what it does, once, in the fork server:

- the modules Prefect's engine imports only when a run starts (the task engine, the run
  graph's visualization, anyio's asyncio backend, the run observers) are imported, and every
  pydantic model Prefect defers is built (`defer_build`): each run did both anew, about a
  tenth of a run process's CPU;
- a run's Prefect clients share one TLS context, and its `http.request` calls one client,
  both built here (`_one_tls_context`): each client built its own, loading the CA bundle,
  about a third of a run process's CPU;
- a run does not watch Prefect's event stream for being *suspended* from outside
  (`_without_suspension_watch`).

A run on a remote Prefect worker does none of this: it starts as Prefect starts it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from typing import Any

# Imported by Prefect's engine inside each run (seen in a profile of a burst of runs).
LAZY_MODULES = (
    "anyio._backends._asyncio",
    "prefect.task_engine",
    "prefect.utilities.visualization",
    "prefect._internal.observers",
    "rich._emoji_codes",
    "encodings.idna",
)


def _import_lazy_modules() -> None:
    for name in LAZY_MODULES:
        with contextlib.suppress(ImportError):  # a later Prefect may have moved one
            importlib.import_module(name)


def _build_models() -> None:
    """Build every pydantic model not built yet: the forks inherit them built."""
    from pydantic import BaseModel

    def descendants(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
        for sub in model.__subclasses__():
            yield sub
            yield from descendants(sub)

    for model in set(descendants(BaseModel)):
        if not model.__pydantic_complete__ or "Mock" in type(model.__pydantic_validator__).__name__:
            with contextlib.suppress(Exception):  # one it cannot build yet is built on use
                model.model_rebuild()


def _one_tls_context() -> None:
    """Prefect's clients take a TLS context given to them (`httpx_settings["verify"]`) as it
    is: give every client of a run the one built here, as Prefect would have built it."""
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient

    from responder.orchestration.flow_catalog import share_clients
    from responder.orchestration.prefect_api import prefect_tls_context

    context = prefect_tls_context()

    def sharing(init: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(init)
        def build(self: Any, *args: Any, **kwargs: Any) -> None:
            settings = dict(kwargs.get("httpx_settings") or {})
            settings.setdefault("verify", context)
            init(self, *args, **{**kwargs, "httpx_settings": settings})

        return build

    PrefectClient.__init__ = sharing(PrefectClient.__init__)  # type: ignore[method-assign]
    SyncPrefectClient.__init__ = sharing(SyncPrefectClient.__init__)  # type: ignore[method-assign]
    share_clients()


@contextlib.contextmanager
def _no_watch(*args: Any, **kwargs: Any) -> Iterator[None]:
    yield


def _without_suspension_watch() -> None:
    """Prefect's engine opens, for each run of a deployment, a subscription to the event
    stream (a thread, a client, a websocket, and the server's backfill query) to notice a
    *suspension* requested from outside the run: a fifth of a run process's CPU, and a
    subscriber per running run on the server. Responder never suspends a run from outside:
    an approval pauses the run from within (`pause_flow_run`, which needs no watch), and a
    cancellation is the runner's to notice. A run suspended through Prefect's API anyway is
    marked so in Prefect; its process is not told."""
    import prefect.flow_engine

    prefect.flow_engine.observe_flow_run_suspension = _no_watch  # type: ignore[attr-defined]


_import_lazy_modules()
_build_models()
_one_tls_context()
_without_suspension_watch()
