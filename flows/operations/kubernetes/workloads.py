"""`kubernetes.rollout_restart`, `kubernetes.scale`, `kubernetes.delete_pod`: act on workloads.

Each does what the matching `kubectl` command does (the same patches), so what it changed
reads the same in the audit log as a person's `kubectl` would.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from lightkube import ApiError
from lightkube.resources.apps_v1 import (
    DaemonSet,
    Deployment,
    DeploymentScale,
    StatefulSet,
    StatefulSetScale,
)
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType
from prefect import get_run_logger
from prefect.context import TaskRunContext
from pydantic import BaseModel, Field

from flows.operations import operation
from flows.operations.kubernetes.client import (
    KubernetesOperationError,
    KubernetesTarget,
    NamespaceName,
    ResourceName,
    kube_client,
    status,
)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

WORKLOADS: dict[str, type[Deployment] | type[StatefulSet] | type[DaemonSet]] = {
    "Deployment": Deployment,
    "StatefulSet": StatefulSet,
    "DaemonSet": DaemonSet,
}
SCALES: dict[str, type[DeploymentScale] | type[StatefulSetScale]] = {
    "Deployment": DeploymentScale,
    "StatefulSet": StatefulSetScale,
}


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


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The restartedAt of each task run's first attempt: a retry (the answer to a PATCH may be lost)
# patches the same value, which changes nothing, instead of restarting the pods again.
_FIRST_RESTART: dict[str, str] = {}


def _task_run_id() -> str:
    context = TaskRunContext.get()
    return str(context.task_run.id) if context is not None else ""


@operation(
    "kubernetes.rollout_restart",
    risk="medium",
    tags=["kubernetes", "workload"],
    retries=2,
    retry_delays=(1, 3),
    run_name="rollout restart {params.kind} {params.namespace}/{params.name}",
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


@operation(
    "kubernetes.scale",
    risk="medium",
    tags=["kubernetes", "workload"],
    retries=2,
    retry_delays=(1, 3),
    run_name="scale {params.kind} {params.namespace}/{params.name} to {params.replicas}",
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


@operation(
    "kubernetes.delete_pod",
    risk="medium",
    tags=["kubernetes", "workload"],
    retries=2,
    retry_delays=(1, 3),
    run_name="delete pod {params.namespace}/{params.name}",
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
            if status(error) != 404:
                raise
            get_run_logger().info("pod %s/%s already gone", params.namespace, params.name)
            return PodDeleted(name=params.name, namespace=params.namespace, existed=False)
    get_run_logger().info("deleted pod %s/%s", params.namespace, params.name)
    return PodDeleted(name=params.name, namespace=params.namespace, existed=True)
