"""Types shared by operations and flows: what a parameter from an alert may look like.

Alert labels are hostile data. These types refuse anything that is not plainly a host or a
service name before an operation acts, so shell, path or option syntax never reaches a target.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

# A DNS name (RFC 1123 labels) or an IPv4 address; never starts with "-" (no option syntax).
Hostname = Annotated[
    str,
    StringConstraints(
        max_length=253,
        pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
    ),
]
# A host as Prometheus labels name it: a hostname with an optional port, or an IPv6 literal.
Host = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.\-:\[\]]{0,252})$")]
ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}$")]
