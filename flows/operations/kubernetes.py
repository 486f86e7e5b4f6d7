"""`kubernetes.*`: act on workloads and nodes through the Kubernetes API (lightkube, sync).

Every operation takes the cluster to act on (`kubeconfig`, `context`) next to what it acts on;
without a kubeconfig the client is configured the way lightkube's `KubeConfig.from_env` does
it: the pod's service account when running in a cluster, else `$KUBECONFIG`, else
`~/.kube/config`. `kube_client` is the one place a client is built.

Names come from alert labels, so they are hostile data: resource, node and namespace names
must be DNS-1123 names, refused before any request is sent. Each operation does what the
matching `kubectl` command does (the same patches, the Eviction API for drains), so what it
changed reads the same in the audit log as a person's `kubectl` would.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx2
from lightkube import ApiError, Client, ConfigError, KubeConfig
from lightkube.config.models import User
from lightkube.generic_resource import GenericNamespacedResource, create_api_info
from lightkube.models.meta_v1 import DeleteOptions, ObjectMeta, Preconditions
from lightkube.resources.apps_v1 import (
    DaemonSet,
    Deployment,
    DeploymentScale,
    StatefulSet,
    StatefulSetScale,
)
from lightkube.resources.core_v1 import Node, Pod, PodEviction
from lightkube.types import PatchType
from prefect import State, Task, get_run_logger, task
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from flows.operations import operation

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
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MIRROR_POD = "kubernetes.io/config.mirror"
REVISION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
# Deployment annotations `kubectl rollout undo` keeps from the deployment instead of copying
# them from the ReplicaSet it rolls back to.
ROLLBACK_KEEPS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
# Statuses worth another try: the API server shedding load or briefly unavailable.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})

WORKLOADS: dict[str, type[Deployment] | type[StatefulSet] | type[DaemonSet]] = {
    "Deployment": Deployment,
    "StatefulSet": StatefulSet,
    "DaemonSet": DaemonSet,
}
SCALES: dict[str, type[DeploymentScale] | type[StatefulSetScale]] = {
    "Deployment": DeploymentScale,
    "StatefulSet": StatefulSetScale,
}


class _RawDeployment(GenericNamespacedResource):
    """apps/v1 Deployment kept as the JSON the API sent (no field a model lacks is lost)."""

    _api_info = create_api_info("apps", "v1", "Deployment", "deployments", verbs=["get", "patch"])


class _RawReplicaSet(GenericNamespacedResource):
    """apps/v1 ReplicaSet kept as the JSON the API sent: rollback copies its pod template."""

    _api_info = create_api_info("apps", "v1", "ReplicaSet", "replicasets", verbs=["list"])


class KubernetesOperationError(Exception):
    """The operation found the target in a state it must not act on, or could not finish."""


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


class RolloutRestart(KubernetesTarget):
    """Parameters of `kubernetes.rollout_restart`."""

    kind: Literal["Deployment", "StatefulSet", "DaemonSet"] = "Deployment"
    name: ResourceName
    namespace: NamespaceName = "default"


class RolloutRestarted(BaseModel):
    """What `kubernetes.rollout_restart` did."""

    kind: str
    name: str
    namespace: str
    restarted_at: str
    generation: int | None


class Scale(KubernetesTarget):
    """Parameters of `kubernetes.scale`."""

    kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    name: ResourceName
    namespace: NamespaceName = "default"
    replicas: int = Field(ge=0, le=10000)


class Scaled(BaseModel):
    """What `kubernetes.scale` did; `previous_replicas` is what a flow needs to scale back."""

    kind: str
    name: str
    namespace: str
    previous_replicas: int
    replicas: int
    changed: bool


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


class DeletePod(KubernetesTarget):
    """Parameters of `kubernetes.delete_pod`."""

    name: ResourceName
    namespace: NamespaceName = "default"
    grace_period_seconds: int | None = Field(None, ge=0, le=3600)


class PodDeleted(BaseModel):
    """What `kubernetes.delete_pod` did; `existed` is False if the pod was already gone."""

    name: str
    namespace: str
    existed: bool


class Rollback(KubernetesTarget):
    """Parameters of `kubernetes.rollback`."""

    name: ResourceName
    namespace: NamespaceName = "default"
    to_revision: int | None = Field(
        None, ge=1, description="Revision to roll back to; default: the previous one."
    )


class RolledBack(BaseModel):
    """What `kubernetes.rollback` did; `changed` is False if the template already matched."""

    name: str
    namespace: str
    from_revision: int | None
    to_revision: int
    replica_set: str
    images: list[str]
    changed: bool


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


def is_transient(error: BaseException | None) -> bool:
    """A connection failure, or an answer saying the API server is overloaded or down."""
    if isinstance(error, ApiError) and error.status.code is not None:
        return error.status.code in TRANSIENT_STATUS
    if isinstance(error, httpx2.HTTPStatusError):
        return error.response.status_code in TRANSIENT_STATUS
    return isinstance(error, httpx2.TransportError)


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry only errors that another try may not meet again."""
    error = state.data if isinstance(state.data, BaseException) else None
    return is_transient(error)


def _status(error: ApiError) -> int | None:
    return error.status.code


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The restartedAt of each task run's first attempt: a retry (the answer to a PATCH may be lost)
# patches the same value, which changes nothing, instead of restarting the pods again.
_FIRST_RESTART: dict[str, str] = {}


def _task_run_id() -> str:
    context = TaskRunContext.get()
    return str(context.task_run.id) if context is not None else ""


@operation(risk="medium", tags=["kubernetes", "workload"])
@task(
    name="kubernetes.rollout_restart",
    retries=2,
    retry_delay_seconds=[1, 3],
    retry_condition_fn=retry_transient,
    task_run_name="rollout restart {params.kind} {params.namespace}/{params.name}",
)
def rollout_restart(params: RolloutRestart) -> RolloutRestarted:
    """Restart a workload's pods by a rolling update, as `kubectl rollout restart` does.

    Sets the pod template annotation kubectl.kubernetes.io/restartedAt to now (a strategic
    merge patch); the controller then replaces the pods under the workload's update strategy.
    A retry patches the first attempt's value, so it never restarts the pods twice. A paused
    Deployment is refused: the patch would roll nothing.
    """
    logger = get_run_logger()
    run_id = _task_run_id()
    restarted_at = _FIRST_RESTART.setdefault(run_id, _utc_now()) if run_id else _utc_now()
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}}}
    with kube_client(params) as client:
        if params.kind == "Deployment":
            current = client.get(Deployment, params.name, namespace=params.namespace)
            if current.spec is not None and current.spec.paused:
                raise KubernetesOperationError(
                    f"deployment {params.namespace}/{params.name} is paused; "
                    "resume it before restarting"
                )
        patched = client.patch(
            WORKLOADS[params.kind],
            params.name,
            patch,
            namespace=params.namespace,
            patch_type=PatchType.STRATEGIC,
        )
    _FIRST_RESTART.pop(run_id, None)
    logger.info("restarted %s %s/%s", params.kind, params.namespace, params.name)
    return RolloutRestarted(
        kind=params.kind,
        name=params.name,
        namespace=params.namespace,
        restarted_at=restarted_at,
        generation=patched.metadata.generation if patched.metadata else None,
    )


@operation(risk="medium", tags=["kubernetes", "workload"])
@task(
    name="kubernetes.scale",
    retries=2,
    retry_delay_seconds=[1, 3],
    retry_condition_fn=retry_transient,
    task_run_name="scale {params.kind} {params.namespace}/{params.name} to {params.replicas}",
)
def scale(params: Scale) -> Scaled:
    """Set a Deployment's or StatefulSet's replica count through its scale subresource.

    Reads the current count first and reports it, so a flow can scale back; an unchanged
    count sends no patch.
    """
    logger = get_run_logger()
    resource = SCALES[params.kind]
    with kube_client(params) as client:
        current = client.get(resource, params.name, namespace=params.namespace)
        previous = current.spec.replicas if current.spec and current.spec.replicas else 0
        changed = previous != params.replicas
        if changed:
            client.patch(
                resource,
                params.name,
                {"spec": {"replicas": params.replicas}},
                namespace=params.namespace,
                patch_type=PatchType.MERGE,
            )
    logger.info(
        "%s %s/%s: %d -> %d replicas",
        params.kind,
        params.namespace,
        params.name,
        previous,
        params.replicas,
    )
    return Scaled(
        kind=params.kind,
        name=params.name,
        namespace=params.namespace,
        previous_replicas=previous,
        replicas=params.replicas,
        changed=changed,
    )


def _set_unschedulable(client: Client, node: str, unschedulable: bool) -> bool:
    """Patch spec.unschedulable as `kubectl cordon/uncordon` does; True if it changed."""
    current = client.get(Node, node)
    was = bool(current.spec and current.spec.unschedulable)
    if was == unschedulable:
        return False
    client.patch(Node, node, {"spec": {"unschedulable": unschedulable}})
    return True


@operation(risk="medium", tags=["kubernetes", "node"])
@task(
    name="kubernetes.cordon",
    retries=2,
    retry_delay_seconds=[1, 3],
    retry_condition_fn=retry_transient,
    task_run_name="cordon {params.node}",
)
def cordon(params: NodeTarget) -> NodeSchedulability:
    """Mark a node unschedulable, as `kubectl cordon` does; its running pods stay."""
    with kube_client(params) as client:
        changed = _set_unschedulable(client, params.node, True)
    get_run_logger().info("node %s %s", params.node, "cordoned" if changed else "already cordoned")
    return NodeSchedulability(node=params.node, unschedulable=True, changed=changed)


@operation(risk="low", tags=["kubernetes", "node"])
@task(
    name="kubernetes.uncordon",
    retries=2,
    retry_delay_seconds=[1, 3],
    retry_condition_fn=retry_transient,
    task_run_name="uncordon {params.node}",
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
        if _status(error) == 404:
            return False
        raise
    return now.metadata is not None and now.metadata.uid == pod.metadata.uid


@operation(risk="high", tags=["kubernetes", "node"])
@task(
    name="kubernetes.drain",
    retries=0,
    task_run_name="drain {params.node}",
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
        daemonset = [_pod_key(p) for p in pods if _owned_by_daemonset(p)]
        mirror = [_pod_key(p) for p in pods if _is_mirror(p) and not _owned_by_daemonset(p)]
        pending = [p for p in pods if not _owned_by_daemonset(p) and not _is_mirror(p)]
        logger.info(
            "draining %s: %d pod(s) to evict, skipping %d DaemonSet and %d mirror pod(s)",
            params.node,
            len(pending),
            len(daemonset),
            len(mirror),
        )
        evicted: list[Pod] = []
        gone: list[str] = []
        refusals = 0
        while pending:
            blocked: dict[str, str] = {}
            still: list[Pod] = []
            for pod in pending:
                try:
                    _evict(client, pod, params.grace_period_seconds)
                except ApiError as error:
                    code = _status(error)
                    if code in (404, 409):  # gone, or replaced by another pod of that name
                        gone.append(_pod_key(pod))
                        continue
                    if code != 429:
                        raise
                    refusals += 1
                    blocked[_pod_key(pod)] = _pdb_reason(error)
                    still.append(pod)
                    logger.warning(
                        "eviction of %s refused: %s", _pod_key(pod), blocked[_pod_key(pod)]
                    )
                    continue
                evicted.append(pod)
                logger.info("evicting %s", _pod_key(pod))
            pending = still
            if pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DrainIncomplete(
                        params.node,
                        {pod: f"PodDisruptionBudget: {why}" for pod, why in blocked.items()},
                        [_pod_key(p) for p in evicted],
                    )
                time.sleep(min(params.retry_seconds, remaining))
        if params.wait_for_deletion:
            waiting = evicted
            while waiting := [p for p in waiting if _still_there(client, p)]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DrainIncomplete(
                        params.node,
                        {_pod_key(p): "evicted, not gone yet" for p in waiting},
                        [_pod_key(p) for p in evicted],
                    )
                time.sleep(min(params.retry_seconds, remaining))
    logger.info("node %s drained: %d pod(s) evicted", params.node, len(evicted))
    return Drained(
        node=params.node,
        cordoned=cordoned,
        evicted=[_pod_key(p) for p in evicted],
        already_gone=gone,
        skipped_daemonset=daemonset,
        skipped_mirror=mirror,
        refusals=refusals,
        waited_for_deletion=params.wait_for_deletion,
    )


@operation(risk="medium", tags=["kubernetes", "workload"])
@task(
    name="kubernetes.delete_pod",
    retries=2,
    retry_delay_seconds=[1, 3],
    retry_condition_fn=retry_transient,
    task_run_name="delete pod {params.namespace}/{params.name}",
)
def delete_pod(params: DeletePod) -> PodDeleted:
    """Delete one pod (its controller, if any, replaces it); a pod already gone is no error.

    Unlike a drain, this bypasses PodDisruptionBudgets.
    """
    with kube_client(params) as client:
        try:
            client.delete(
                Pod,
                params.name,
                namespace=params.namespace,
                grace_period=params.grace_period_seconds,
            )
        except ApiError as error:
            if _status(error) != 404:
                raise
            get_run_logger().info("pod %s/%s already gone", params.namespace, params.name)
            return PodDeleted(name=params.name, namespace=params.namespace, existed=False)
    get_run_logger().info("deleted pod %s/%s", params.namespace, params.name)
    return PodDeleted(name=params.name, namespace=params.namespace, existed=True)


def _revision(obj: dict[str, Any]) -> int | None:
    value = (obj.get("metadata", {}).get("annotations") or {}).get(REVISION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A copy of a pod template without the pod-template-hash label its ReplicaSet adds."""
    metadata = dict(template.get("metadata") or {})
    if "labels" in metadata:
        metadata["labels"] = {k: v for k, v in metadata["labels"].items() if k != POD_TEMPLATE_HASH}
    return {**template, "metadata": metadata}


def _pick_revision(
    replica_sets: list[dict[str, Any]], to_revision: int | None, deployment: str
) -> tuple[int, dict[str, Any]]:
    """The ReplicaSet of `to_revision`, or of the second-newest revision (kubectl's choice)."""
    by_revision = sorted(
        ((rev, rs) for rs in replica_sets if (rev := _revision(rs)) is not None),
        key=lambda item: item[0],
        reverse=True,
    )
    if to_revision is not None:
        for rev, rs in by_revision:
            if rev == to_revision:
                return rev, rs
        known = ", ".join(str(rev) for rev, _ in by_revision) or "none"
        raise KubernetesOperationError(
            f"deployment {deployment} has no revision {to_revision} (known: {known})"
        )
    if len(by_revision) < 2:
        raise KubernetesOperationError(f"no previous revision of deployment {deployment}")
    return by_revision[1]


@operation(risk="high", tags=["kubernetes", "workload"])
@task(
    name="kubernetes.rollback",
    retries=0,
    task_run_name="rollback {params.namespace}/{params.name}",
)
def rollback(params: Rollback) -> RolledBack:
    """Roll a Deployment back to its previous revision, or to `to_revision`, like `kubectl
    rollout undo`.

    Finds the ReplicaSets the Deployment owns, picks one by its
    deployment.kubernetes.io/revision annotation, and replaces the Deployment's pod template
    with that ReplicaSet's (less its pod-template-hash label) in one JSON patch. Not retried:
    once a rollback lands, "the previous revision" is the one just left.
    """
    logger = get_run_logger()
    where = f"{params.namespace}/{params.name}"
    with kube_client(params) as client:
        deployment = dict(client.get(_RawDeployment, params.name, namespace=params.namespace))
        spec = deployment.get("spec") or {}
        if spec.get("paused"):
            raise KubernetesOperationError(
                f"deployment {where} is paused; resume it before rolling back"
            )
        uid = deployment["metadata"]["uid"]
        match_labels = (spec.get("selector") or {}).get("matchLabels") or None
        owned = [
            dict(rs)
            for rs in client.list(_RawReplicaSet, namespace=params.namespace, labels=match_labels)
            if any(
                ref.get("uid") == uid and ref.get("controller")
                for ref in rs.get("metadata", {}).get("ownerReferences") or []
            )
        ]
        revision, replica_set = _pick_revision(owned, params.to_revision, where)
        template = _without_hash(replica_set["spec"]["template"])
        images = [c.get("image", "") for c in template.get("spec", {}).get("containers", [])]
        result = RolledBack(
            name=params.name,
            namespace=params.namespace,
            from_revision=_revision(deployment),
            to_revision=revision,
            replica_set=replica_set["metadata"]["name"],
            images=images,
            changed=False,
        )
        if template == _without_hash(spec.get("template") or {}):
            logger.info("deployment %s already runs the template of revision %d", where, revision)
            return result
        current = deployment["metadata"].get("annotations") or {}
        annotations = {k: v for k, v in current.items() if k in ROLLBACK_KEEPS}
        annotations |= {
            k: v
            for k, v in (replica_set["metadata"].get("annotations") or {}).items()
            if k not in ROLLBACK_KEEPS
        }
        client.patch(
            _RawDeployment,
            params.name,
            [
                {"op": "replace", "path": "/spec/template", "value": template},
                {"op": "replace", "path": "/metadata/annotations", "value": annotations},
            ],
            namespace=params.namespace,
            patch_type=PatchType.JSON,
        )
    logger.info("deployment %s rolled back to revision %d (%s)", where, revision, images)
    return result.model_copy(update={"changed": True})
