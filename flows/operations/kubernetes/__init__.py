"""`kubernetes.*`: act on workloads and nodes through the Kubernetes API (lightkube, sync).

Every operation takes the cluster to act on (`kubeconfig`, `context`) next to what it acts
on, and does what the matching `kubectl` command does (the same patches, the Eviction API for
drains), so what it changed reads the same in the audit log as a person's `kubectl` would.

- `client`: which cluster, the one place a client is built, which names are accepted;
- `workloads`: rollout restart, scale, delete a pod;
- `nodes`: cordon, uncordon, drain;
- `deployments`: roll back.
"""

from __future__ import annotations

from flows.operations.kubernetes.client import (
    KubernetesOperationError,
    KubernetesTarget,
    kube_client,
)
from flows.operations.kubernetes.deployments import Rollback, RolledBack, rollback
from flows.operations.kubernetes.nodes import (
    Drain,
    Drained,
    DrainIncomplete,
    NodeSchedulability,
    NodeTarget,
    cordon,
    drain,
    uncordon,
)
from flows.operations.kubernetes.workloads import (
    DeletePod,
    PodDeleted,
    RolloutRestart,
    RolloutRestarted,
    Scale,
    Scaled,
    delete_pod,
    rollout_restart,
    scale,
)

__all__ = [
    "DeletePod",
    "Drain",
    "DrainIncomplete",
    "Drained",
    "KubernetesOperationError",
    "KubernetesTarget",
    "NodeSchedulability",
    "NodeTarget",
    "PodDeleted",
    "Rollback",
    "RolledBack",
    "RolloutRestart",
    "RolloutRestarted",
    "Scale",
    "Scaled",
    "cordon",
    "delete_pod",
    "drain",
    "kube_client",
    "rollback",
    "rollout_restart",
    "scale",
    "uncordon",
]
