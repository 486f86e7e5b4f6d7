"""What every handler gets from the app it serves: the service behind it.

The app factory puts the service on `app.state`; handlers ask for it as a dependency, so a
test can build a router around any service (or a stand-in) without the factory.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from responder.runtime.service import Service


async def service_of(request: Request) -> Service:
    """The service of the app this request reached."""
    service: Service = request.app.state.service
    return service


TheService = Annotated[Service, Depends(service_of)]
