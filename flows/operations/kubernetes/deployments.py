"""`kubernetes.rollback`: a Deployment back to an earlier revision, as `kubectl rollout undo`."""

from __future__ import annotations

from typing import Any

from lightkube import Client
from lightkube.generic_resource import GenericNamespacedResource, create_api_info
from lightkube.types import PatchType
from prefect import get_run_logger
from pydantic import BaseModel, Field

from flows.operations import operation
from flows.operations.kubernetes.client import (
    KubernetesOperationError,
    KubernetesTarget,
    NamespaceName,
    ResourceName,
    kube_client,
)

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


class _RawDeployment(GenericNamespacedResource):
    """apps/v1 Deployment kept as the JSON the API sent (no field a model lacks is lost)."""

    _api_info = create_api_info("apps", "v1", "Deployment", "deployments", verbs=["get", "patch"])


class _RawReplicaSet(GenericNamespacedResource):
    """apps/v1 ReplicaSet kept as the JSON the API sent: rollback copies its pod template."""

    _api_info = create_api_info("apps", "v1", "ReplicaSet", "replicasets", verbs=["list"])


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


def _owned_replica_sets(
    client: Client, deployment: dict[str, Any], namespace: str
) -> list[dict[str, Any]]:
    """The ReplicaSets the Deployment controls (by its selector, then by owner uid)."""
    uid = deployment["metadata"]["uid"]
    match_labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels")
    return [
        dict(rs)
        for rs in client.list(_RawReplicaSet, namespace=namespace, labels=match_labels or None)
        if any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in rs.get("metadata", {}).get("ownerReferences") or []
        )
    ]


def _rolled_back_annotations(
    deployment: dict[str, Any], replica_set: dict[str, Any]
) -> dict[str, str]:
    """The Deployment's annotations after `kubectl rollout undo`: its own `ROLLBACK_KEEPS`,
    every other one from the ReplicaSet rolled back to."""
    current = deployment["metadata"].get("annotations") or {}
    annotations = {k: v for k, v in current.items() if k in ROLLBACK_KEEPS}
    annotations |= {
        k: v
        for k, v in (replica_set["metadata"].get("annotations") or {}).items()
        if k not in ROLLBACK_KEEPS
    }
    return annotations


@operation(
    "kubernetes.rollback",
    risk="high",
    tags=["kubernetes", "workload"],
    run_name="rollback {params.namespace}/{params.name}",
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
        owned = _owned_replica_sets(client, deployment, params.namespace)
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
        annotations = _rolled_back_annotations(deployment, replica_set)
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
