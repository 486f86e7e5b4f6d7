"""The `responder` command: thin; flags become settings, settings become a service.

Its commands by audience: `server` (up, serve), `operator` (calls to a running Responder's
API) and `authoring` (rules and flows, offline); `commands` registers them all.
"""

from __future__ import annotations

from responder.cli.commands import app, main

__all__ = ["app", "main"]
