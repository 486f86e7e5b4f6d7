"""The cluster an operation talks to: which one, how names are checked, which errors pass.

Without a kubeconfig the client is configured the way lightkube's `KubeConfig.from_env` does
it: the pod's service account when running in a cluster, else `$KUBECONFIG`, else
`~/.kube/config`. `kube_client` is the one place a client is built.

Names come from alert labels, so they are hostile data: resource, node and namespace names
must be DNS-1123 names, refused before any request is sent.
"""

from __future__ import annotations

from typing import Annotated

import httpx2
from lightkube import ApiError, Client, ConfigError, KubeConfig
from lightkube.config.models import User
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from flows.errors import FlowError, transient_when

# DNS-1123 subdomain (names of most objects, and of nodes) and label (namespaces). No upper
# case, no leading "-", nothing but [a-z0-9.-]: shell, path and option syntax never pass.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ResourceName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
]
NamespaceName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=DNS1123_LABEL)
]
ContextName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/\-]{0,252}$")]
KubeconfigPath = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f]{1,4096}$")]

FIELD_MANAGER = "responder"
# Statuses worth another try: the API server shedding load or briefly unavailable.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


class KubernetesOperationError(FlowError):
    """The operation found the target in a state it must not act on, or could not finish."""


class KubernetesTarget(BaseModel):
    """Which cluster to talk to; the fields every `kubernetes.*` operation shares."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kubeconfig: KubeconfigPath | None = Field(
        None,
        description="Path of a kubeconfig file. Default: the service account when running in "
        "a cluster, else $KUBECONFIG, else ~/.kube/config.",
    )
    context: ContextName | None = Field(
        None, description="Kubeconfig context; default: its current-context."
    )
    request_timeout_seconds: float = Field(10.0, gt=0, le=120)


def kube_client(target: KubernetesTarget) -> Client:
    """A lightkube client for `target`'s cluster; the only place one is built.

    Tests point it at a local server by writing a kubeconfig file, the same way a user would.
    """
    if target.kubeconfig is not None:
        config = KubeConfig.from_file(target.kubeconfig)
    else:
        config = KubeConfig.from_env()
    chosen = config.get(target.context)
    if chosen is None:  # only with a default, which is not given: get() raises instead
        raise ConfigError("no kubeconfig context")
    if chosen.user is None:  # a context without a user (e.g. behind `kubectl proxy`)
        chosen = chosen._replace(user=User())  # lightkube 1.0 would fail "Missing user"
    return Client(
        chosen,
        timeout=httpx2.Timeout(target.request_timeout_seconds),
        field_manager=FIELD_MANAGER,
    )


def status(error: ApiError) -> int | None:
    """The HTTP status of the API server's answer, as its Status object gives it."""
    return error.status.code


def _transient(error: httpx2.HTTPError) -> bool:
    """A connection failure, or an answer saying the API server is overloaded or down."""
    if isinstance(error, ApiError) and error.status.code is not None:
        return error.status.code in TRANSIENT_STATUS
    if isinstance(error, httpx2.HTTPStatusError):
        return error.response.status_code in TRANSIENT_STATUS
    return isinstance(error, httpx2.TransportError)


# The operations let the client's errors through as they are (an ApiError names the object).
transient_when(httpx2.HTTPError, _transient)
