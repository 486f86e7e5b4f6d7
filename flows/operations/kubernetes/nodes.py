"""`kubernetes.cordon`, `kubernetes.uncordon`, `kubernetes.drain`: take a node out and back.

Each does what the matching `kubectl` command does (the same patch, the Eviction API for
drains), so what it changed reads the same in the audit log as a person's `kubectl` would.
"""

from __future__ import annotations

import time

from lightkube import ApiError, Client
from lightkube.models.meta_v1 import DeleteOptions, ObjectMeta, Preconditions
from lightkube.resources.core_v1 import Node, Pod, PodEviction
from prefect import get_run_logger
from pydantic import BaseModel, Field

from flows.operations import operation
from flows.operations.kubernetes.client import (
    KubernetesOperationError,
    KubernetesTarget,
    ResourceName,
    kube_client,
    status,
)

MIRROR_POD = "kubernetes.io/config.mirror"


class DrainIncomplete(KubernetesOperationError):
    """A drain stopped at its deadline; the node stays cordoned.

    `pending` maps each pod (namespace/name) still on the node to why: the PodDisruptionBudget
    message for evictions still refused, or that the evicted pod had not gone yet.
    """

    def __init__(self, node: str, pending: dict[str, str], evicted: list[str]) -> None:
        super().__init__(node, pending, evicted)
        self.node = node
        self.pending = pending
        self.evicted = evicted

    def __str__(self) -> str:
        pods = "; ".join(f"{pod} ({why})" for pod, why in sorted(self.pending.items()))
        evicted = ", ".join(self.evicted) or "none"
        return (
            f"drain of node {self.node} incomplete, {len(self.pending)} pod(s) still there: "
            f"{pods}. Evicted: {evicted}. The node stays cordoned."
        )


class NodeTarget(KubernetesTarget):
    """Parameters of `kubernetes.cordon` and `kubernetes.uncordon`."""

    node: ResourceName


class NodeSchedulability(BaseModel):
    """A node's schedulability after the operation; `changed` is False if it already was so.

    A flow that cordons should uncordon afterwards only when its own cordon `changed` it, so
    it never undoes a person's cordon.
    """

    node: str
    unschedulable: bool
    changed: bool


class Drain(KubernetesTarget):
    """Parameters of `kubernetes.drain`."""

    node: ResourceName
    timeout_seconds: float = Field(
        300.0,
        gt=0,
        le=7200,
        description="Deadline for the whole drain; evictions a PodDisruptionBudget refuses "
        "are retried until then.",
    )
    retry_seconds: float = Field(5.0, gt=0, le=60, description="Pause between eviction rounds.")
    grace_period_seconds: int | None = Field(
        None, ge=0, le=3600, description="Override each pod's termination grace period."
    )
    wait_for_deletion: bool = Field(True, description="Wait until the evicted pods are gone.")


class Drained(BaseModel):
    """What `kubernetes.drain` did; pods are named namespace/name."""

    node: str
    cordoned: bool = Field(description="False if the node was already cordoned.")
    evicted: list[str]
    already_gone: list[str]
    skipped_daemonset: list[str]
    skipped_mirror: list[str]
    refusals: int = Field(description="Evictions a PodDisruptionBudget refused before success.")
    waited_for_deletion: bool


def _set_unschedulable(client: Client, node: str, unschedulable: bool) -> bool:
    """Patch spec.unschedulable as `kubectl cordon/uncordon` does; True if it changed."""
    current = client.get(Node, node)
    was = bool(current.spec and current.spec.unschedulable)
    if was == unschedulable:
        return False
    client.patch(Node, node, {"spec": {"unschedulable": unschedulable}})
    return True


@operation(
    "kubernetes.cordon",
    risk="medium",
    tags=["kubernetes", "node"],
    retries=2,
    retry_delays=(1, 3),
    run_name="cordon {params.node}",
)
def cordon(params: NodeTarget) -> NodeSchedulability:
    """Mark a node unschedulable, as `kubectl cordon` does; its running pods stay."""
    with kube_client(params) as client:
        changed = _set_unschedulable(client, params.node, True)
    get_run_logger().info("node %s %s", params.node, "cordoned" if changed else "already cordoned")
    return NodeSchedulability(node=params.node, unschedulable=True, changed=changed)


@operation(
    "kubernetes.uncordon",
    risk="low",
    tags=["kubernetes", "node"],
    retries=2,
    retry_delays=(1, 3),
    run_name="uncordon {params.node}",
)
def uncordon(params: NodeTarget) -> NodeSchedulability:
    """Mark a node schedulable again, as `kubectl uncordon` does."""
    with kube_client(params) as client:
        changed = _set_unschedulable(client, params.node, False)
    get_run_logger().info(
        "node %s %s", params.node, "uncordoned" if changed else "already schedulable"
    )
    return NodeSchedulability(node=params.node, unschedulable=False, changed=changed)


def _pod_key(pod: Pod) -> str:
    assert pod.metadata is not None
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def _owned_by_daemonset(pod: Pod) -> bool:
    owners = pod.metadata.ownerReferences if pod.metadata else None
    return any(ref.kind == "DaemonSet" and ref.controller for ref in owners or [])


def _is_mirror(pod: Pod) -> bool:
    annotations = pod.metadata.annotations if pod.metadata else None
    return MIRROR_POD in (annotations or {})


def _pdb_reason(error: ApiError) -> str:
    """The PodDisruptionBudget's own words from a 429 Status, else the Status message."""
    details = error.status.details
    causes = [cause.message for cause in (details.causes or []) if cause.message] if details else []
    return "; ".join(causes) or error.status.message or "eviction refused (429)"


def _evict(client: Client, pod: Pod, grace_period_seconds: int | None) -> None:
    """POST an Eviction for `pod`; the uid precondition spares a same-named successor."""
    assert pod.metadata is not None and pod.metadata.name is not None
    options = DeleteOptions(
        gracePeriodSeconds=grace_period_seconds,
        preconditions=Preconditions(uid=pod.metadata.uid),
    )
    client.create(
        PodEviction(
            metadata=ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace),
            deleteOptions=options,
        ),
        pod.metadata.name,
        namespace=pod.metadata.namespace,
    )


def _still_there(client: Client, pod: Pod) -> bool:
    """Whether `pod` (this very pod: same uid) still exists."""
    assert pod.metadata is not None and pod.metadata.name is not None
    try:
        now = client.get(Pod, pod.metadata.name, namespace=pod.metadata.namespace)
    except ApiError as error:
        if status(error) == 404:
            return False
        raise
    return now.metadata is not None and now.metadata.uid == pod.metadata.uid


def _sort_pods(pods: list[Pod]) -> tuple[list[str], list[str], list[Pod]]:
    """The DaemonSet pods and the mirror pods a drain leaves alone, and the pods to evict."""
    daemonset = [_pod_key(p) for p in pods if _owned_by_daemonset(p)]
    mirror = [_pod_key(p) for p in pods if _is_mirror(p) and not _owned_by_daemonset(p)]
    to_evict = [p for p in pods if not _owned_by_daemonset(p) and not _is_mirror(p)]
    return daemonset, mirror, to_evict


class _Evictions:
    """The evictions of one drain, against its deadline: what was evicted, what was gone."""

    def __init__(self, client: Client, params: Drain, deadline: float) -> None:
        self.client, self.params, self.deadline = client, params, deadline
        self.logger = get_run_logger()
        self.evicted: list[Pod] = []
        self.gone: list[str] = []
        self.refusals = 0  # evictions a PodDisruptionBudget refused

    def evict_all(self, pending: list[Pod]) -> None:
        """Evict every pod; one a budget refuses, again each `retry_seconds` until the deadline."""
        while pending:
            blocked = self._round(pending)
            pending = [pod for pod in pending if _pod_key(pod) in blocked]
            if pending:
                self._pause_or_stop(
                    {pod: f"PodDisruptionBudget: {why}" for pod, why in blocked.items()}
                )

    def wait_until_gone(self) -> None:
        """Wait until every evicted pod is gone (its successor may already run elsewhere)."""
        waiting = self.evicted
        while waiting := [p for p in waiting if _still_there(self.client, p)]:
            self._pause_or_stop({_pod_key(p): "evicted, not gone yet" for p in waiting})

    def _round(self, pending: list[Pod]) -> dict[str, str]:
        """Ask once to evict each pod; the pods a budget refused, with its reason."""
        blocked: dict[str, str] = {}
        for pod in pending:
            try:
                _evict(self.client, pod, self.params.grace_period_seconds)
            except ApiError as error:
                code = status(error)
                if code in (404, 409):  # gone, or replaced by another pod of that name
                    self.gone.append(_pod_key(pod))
                    continue
                if code != 429:
                    raise
                self.refusals += 1
                blocked[_pod_key(pod)] = _pdb_reason(error)
                self.logger.warning(
                    "eviction of %s refused: %s", _pod_key(pod), blocked[_pod_key(pod)]
                )
                continue
            self.evicted.append(pod)
            self.logger.info("evicting %s", _pod_key(pod))
        return blocked

    def _pause_or_stop(self, pending: dict[str, str]) -> None:
        """Sleep until the next try, or fail with `DrainIncomplete` once the deadline passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise DrainIncomplete(self.params.node, pending, [_pod_key(p) for p in self.evicted])
        time.sleep(min(self.params.retry_seconds, remaining))


@operation(
    "kubernetes.drain",
    risk="high",
    tags=["kubernetes", "node"],
    run_name="drain {params.node}",
)
def drain(params: Drain) -> Drained:
    """Cordon a node, then evict its pods through the Eviction API, as `kubectl drain` does.

    Evictions honour PodDisruptionBudgets: one refused (429) is retried every
    `retry_seconds` until `timeout_seconds`, after which the drain fails naming the pods still
    blocked. DaemonSet pods and mirror (static) pods are left alone, as with
    `--ignore-daemonsets`. With `wait_for_deletion`, the drain ends when the evicted pods are
    gone. The node stays cordoned whatever happens.
    """
    logger = get_run_logger()
    deadline = time.monotonic() + params.timeout_seconds
    with kube_client(params) as client:
        cordoned = _set_unschedulable(client, params.node, True)
        pods = list(client.list(Pod, namespace="*", fields={"spec.nodeName": params.node}))
        daemonset, mirror, to_evict = _sort_pods(pods)
        logger.info(
            "draining %s: %d pod(s) to evict, skipping %d DaemonSet and %d mirror pod(s)",
            params.node,
            len(to_evict),
            len(daemonset),
            len(mirror),
        )
        evictions = _Evictions(client, params, deadline)
        evictions.evict_all(to_evict)
        if params.wait_for_deletion:
            evictions.wait_until_gone()
    logger.info("node %s drained: %d pod(s) evicted", params.node, len(evictions.evicted))
    return Drained(
        node=params.node,
        cordoned=cordoned,
        evicted=[_pod_key(p) for p in evictions.evicted],
        already_gone=evictions.gone,
        skipped_daemonset=daemonset,
        skipped_mirror=mirror,
        refusals=evictions.refusals,
        waited_for_deletion=params.wait_for_deletion,
    )
