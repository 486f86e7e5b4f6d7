"""Types shared by operations and flows: what a parameter from an alert may look like.

Alert labels are hostile data. These types refuse anything that is not plainly a host or a
service name before an operation acts, so shell, path or option syntax never reaches a target.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, AnyHttpUrl, StringConstraints, TypeAdapter, WithJsonSchema

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
# An HTTP header's name: letters, digits and "-", so nothing can end the header early.
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]


def _http_url(value: str) -> str:
    """Check an http(s) URL as pydantic does, and keep it as written.

    pydantic's `AnyHttpUrl` adds a `/` to a bare host, so `"{{ params.base }}/fix"` became
    `http://host//fix`; a flow gets back exactly the URL it was given.
    """
    _URL_CHECK.validate_python(value)
    return value


_URL_CHECK: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)
# An http(s) URL, validated but not rewritten.
HttpUrl = Annotated[
    str,
    AfterValidator(_http_url),
    WithJsonSchema({"type": "string", "format": "uri", "minLength": 1, "maxLength": 2083}),
]
