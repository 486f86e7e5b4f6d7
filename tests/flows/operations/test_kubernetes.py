"""The `kubernetes.*` operations, run as Prefect tasks against replayed Kubernetes API responses.

No Kubernetes API server can run here, so these tests use recorded API responses instead: a
small real HTTP server on 127.0.0.1 (`KubeReplay`) answers each (method, path) with the JSON
bodies in tests/fixtures/kubernetes/ and records every request it receives. The bodies are
those a Kubernetes 1.29 API server returns for these calls, field for field (Deployment,
ReplicaSetList, PodList, Node, Scale, and the Status bodies of an eviction granted with 201
or refused with 429 by a PodDisruptionBudget); they were written to match real responses, not
captured from a cluster in this environment. lightkube reaches the server over real HTTP,
configured by a kubeconfig file as a user would configure it, and the tasks run on the real
Prefect test server. The tests assert what each operation *sent*: the patch bodies and their
content types, which pods were evicted, and that invalid names never produce a request.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import pytest
from lightkube import ApiError
from prefect import Task, flow
from pydantic import BaseModel, ValidationError

from flows.operations import OPERATIONS
from flows.operations.kubernetes import (
    DeletePod,
    Drain,
    DrainIncomplete,
    KubernetesOperationError,
    NodeTarget,
    Rollback,
    RolloutRestart,
    Scale,
    cordon,
    delete_pod,
    drain,
    rollback,
    rollout_restart,
    scale,
    uncordon,
)
from tests.helpers import ROOT, free_port

pytestmark = pytest.mark.prefect

FIXTURES = ROOT / "tests" / "fixtures" / "kubernetes"
NODE = "ip-10-0-3-17.eu-west-1.compute.internal"
TOKEN = "replay-token"
R = TypeVar("R")
DEPLOYMENT = "/apis/apps/v1/namespaces/shop/deployments/web"
NODE_PATH = f"/api/v1/nodes/{NODE}"
SHOP_PODS = "/api/v1/namespaces/shop/pods"
WEB_1 = "web-64b8d7f9c5-x2x9k"
WEB_2 = "web-64b8d7f9c5-q8lmn"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@dataclass(frozen=True)
class Seen:
    """One request the replay server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    content_type: str | None
    authorization: str | None


class KubeReplay:
    """A real HTTP server replaying recorded Kubernetes API responses, keyed by (method, path).

    Each route answers its replies in order and then keeps answering the last one. A request
    without a route is answered 500 and kept in `unrouted`, which fails the test.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self.requests: list[Seen] = []
        self.unrouted: list[Seen] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, method: str, path: str, *replies: tuple[int, str]) -> None:
        self.routes[(method, path)] = list(replies)

    def sent(self, method: str, path: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def calls(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(r.method, r.path) for r in self.requests]

    def _answer(self, seen: Seen) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append(seen)
            replies = self.routes.get((seen.method, seen.path))
            if not replies:
                self.unrouted.append(seen)
                return 500, json.dumps({"message": "no recorded response"}).encode()
            status, name = replies.pop(0) if len(replies) > 1 else replies[0]
        return status, (FIXTURES / f"{name}.json").read_bytes()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                status, body = replay._answer(
                    Seen(
                        method=self.command,
                        path=url.path,
                        query=parse_qs(url.query),
                        body=json.loads(raw) if raw else None,
                        content_type=self.headers.get("Content-Type"),
                        authorization=self.headers.get("Authorization"),
                    )
                )
                self.send_response(status)
                # Exactly what the API server sends; lightkube 1.0 raises ApiError only then.
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = answer

        return Handler

    def start(self) -> KubeReplay:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def write_kubeconfig(path: Path, contexts: dict[str, str], current: str, user: bool = True) -> str:
    """A kubeconfig with one cluster (its server URL) per context, all plain http."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": url}} for n, url in contexts.items()],
        "contexts": [
            {"name": n, "context": {"cluster": n, **({"user": "responder"} if user else {})}}
            for n in contexts
        ],
        "current-context": current,
        "users": [{"name": "responder", "user": {"token": TOKEN}}] if user else [],
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return str(path)


@pytest.fixture
def kube() -> Iterator[KubeReplay]:
    replay = KubeReplay().start()
    yield replay
    replay.stop()
    assert not replay.unrouted, f"requests without a recorded response: {replay.unrouted}"


@pytest.fixture
def kubeconfig(kube: KubeReplay, tmp_path: Path) -> str:
    return write_kubeconfig(tmp_path / "kubeconfig", {"replay": kube.url}, current="replay")


@flow(name="test-kubernetes-operation")
def in_flow(operation: str, params: dict[str, Any]) -> Any:
    """One operation as a flow's step, called through the registry as YAML flows call it."""
    return OPERATIONS[operation](params)


def run(operation: Task[..., R], params: BaseModel) -> R:
    """Run `operation` with `params` as the step of a flow on the Prefect test server."""
    return cast(R, in_flow(operation.name, params.model_dump()))


# -- registry -------------------------------------------------------------------------------


def test_every_operation_is_registered_with_its_risk() -> None:
    risks = {name: op.risk for name, op in OPERATIONS.items() if name.startswith("kubernetes.")}
    assert risks == {
        "kubernetes.rollout_restart": "medium",
        "kubernetes.scale": "medium",
        "kubernetes.cordon": "medium",
        "kubernetes.uncordon": "low",
        "kubernetes.drain": "high",
        "kubernetes.delete_pod": "medium",
        "kubernetes.rollback": "high",
    }
    assert all("kubernetes" in OPERATIONS[name].tags for name in risks)
    assert OPERATIONS["kubernetes.drain"].task.retries == 0
    assert OPERATIONS["kubernetes.rollback"].task.retries == 0
    assert OPERATIONS["kubernetes.cordon"].task.retries == 2


# -- validation: hostile names never reach the API ------------------------------------------


BAD_NAMES = [
    "web;rm -rf /",
    "-x",
    "Web",
    "web\n",
    "$(reboot)",
    "../secrets",
    "web_1",
    "",
    "a" * 254,
]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize(
    ("operation", "field", "others"),
    [
        ("kubernetes.rollout_restart", "name", {"namespace": "shop"}),
        ("kubernetes.rollout_restart", "namespace", {"name": "web"}),
        ("kubernetes.scale", "name", {"namespace": "shop", "replicas": 2}),
        ("kubernetes.cordon", "node", {}),
        ("kubernetes.drain", "node", {}),
        ("kubernetes.delete_pod", "name", {"namespace": "shop"}),
        ("kubernetes.rollback", "name", {"namespace": "shop"}),
    ],
)
def test_an_invalid_name_is_refused_before_any_request(
    prefect_api_url: str,
    kube: KubeReplay,
    kubeconfig: str,
    operation: str,
    field: str,
    others: dict[str, Any],
    bad: str,
) -> None:
    with pytest.raises(ValidationError, match=field):
        OPERATIONS[operation]({**others, field: bad, "kubeconfig": kubeconfig})
    assert kube.requests == []


def test_namespace_is_a_dns_label_of_63_characters_at_most(kubeconfig: str) -> None:
    assert RolloutRestart(name="web", namespace="a" * 63).namespace == "a" * 63
    for bad in ("a" * 64, "shop.prod", "kube_system"):
        with pytest.raises(ValidationError, match="namespace"):
            RolloutRestart(name="web", namespace=bad)
    assert NodeTarget(node="a" * 63 + "." + "b" * 63).node.startswith("a")
    with pytest.raises(ValidationError, match="extra"):
        Scale.model_validate({"name": "web", "replicas": 1, "server": "http://evil.example"})


def test_a_flow_built_from_alert_labels_fails_before_touching_the_cluster(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    @flow(name="restart-from-labels")
    def restart_from_labels(labels: dict[str, str], kubeconfig: str) -> Any:
        return OPERATIONS["kubernetes.rollout_restart"](
            {
                "name": labels["deployment"],
                "namespace": labels["namespace"],
                "kubeconfig": kubeconfig,
            }
        )

    with pytest.raises(ValidationError, match="name"):
        restart_from_labels({"deployment": "web;rm -rf /", "namespace": "shop"}, kubeconfig)
    assert kube.requests == []

    kube.route("GET", DEPLOYMENT, (200, "deployment-web"))
    kube.route("PATCH", DEPLOYMENT, (200, "deployment-web-restarted"))
    result = restart_from_labels({"deployment": "web", "namespace": "shop"}, kubeconfig)
    assert (result.kind, result.namespace, result.name) == ("Deployment", "shop", "web")
    assert kube.calls() == [("GET", DEPLOYMENT), ("PATCH", DEPLOYMENT)]


# -- connection -----------------------------------------------------------------------------


def test_the_kubeconfig_context_chooses_the_cluster(
    prefect_api_url: str, kube: KubeReplay, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    path = write_kubeconfig(tmp_path / "kc", {"prod": dead, "replay": kube.url}, current="prod")
    kube.route("GET", NODE_PATH, (200, "node-cordoned"))
    result = run(cordon, NodeTarget(node=NODE, kubeconfig=path, context="replay"))
    assert result.changed is False
    assert kube.sent("GET", NODE_PATH)[0].authorization == f"Bearer {TOKEN}"


def test_without_a_kubeconfig_the_environment_decides(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not in a cluster (no service account here), so lightkube reads $KUBECONFIG.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    kube.route("GET", NODE_PATH, (200, "node-cordoned"))
    assert run(cordon, NodeTarget(node=NODE)).unschedulable is True
    assert kube.calls() == [("GET", NODE_PATH)]


def test_a_context_without_a_user_sends_no_credentials(
    prefect_api_url: str, kube: KubeReplay, tmp_path: Path
) -> None:
    path = write_kubeconfig(tmp_path / "kc", {"proxy": kube.url}, current="proxy", user=False)
    kube.route("GET", NODE_PATH, (200, "node-cordoned"))
    run(cordon, NodeTarget(node=NODE, kubeconfig=path))
    assert kube.sent("GET", NODE_PATH)[0].authorization is None


# -- rollout restart ------------------------------------------------------------------------


def test_rollout_restart_patches_restarted_at_like_kubectl(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("GET", DEPLOYMENT, (200, "deployment-web"))
    kube.route("PATCH", DEPLOYMENT, (200, "deployment-web-restarted"))
    before = datetime.now(UTC).replace(microsecond=0)
    result = run(
        rollout_restart, RolloutRestart(name="web", namespace="shop", kubeconfig=kubeconfig)
    )

    (patch,) = kube.sent("PATCH", DEPLOYMENT)
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {"kubectl.kubernetes.io/restartedAt": result.restarted_at}
                }
            }
        }
    }
    assert patch.query == {"fieldManager": ["responder"]}
    assert patch.authorization == f"Bearer {TOKEN}"
    at = datetime.strptime(result.restarted_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= at <= datetime.now(UTC) + timedelta(seconds=1)
    assert result.generation == 5
    assert kube.calls() == [("GET", DEPLOYMENT), ("PATCH", DEPLOYMENT)]


@pytest.mark.parametrize(
    ("kind", "name", "namespace", "path", "body"),
    [
        (
            "StatefulSet",
            "db",
            "shop",
            "/apis/apps/v1/namespaces/shop/statefulsets/db",
            "statefulset-db-restarted",
        ),
        (
            "DaemonSet",
            "fluent-bit",
            "kube-system",
            "/apis/apps/v1/namespaces/kube-system/daemonsets/fluent-bit",
            "daemonset-fluent-bit-restarted",
        ),
    ],
)
def test_rollout_restart_of_statefulsets_and_daemonsets(
    prefect_api_url: str,
    kube: KubeReplay,
    kubeconfig: str,
    kind: str,
    name: str,
    namespace: str,
    path: str,
    body: str,
) -> None:
    kube.route("PATCH", path, (200, body))
    params = RolloutRestart.model_validate(
        {"kind": kind, "name": name, "namespace": namespace, "kubeconfig": kubeconfig}
    )
    result = run(rollout_restart, params)
    (patch,) = kube.sent("PATCH", path)
    annotations = patch.body["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"kubectl.kubernetes.io/restartedAt": result.restarted_at}
    assert kube.calls() == [("PATCH", path)]


def test_rollout_restart_refuses_a_paused_deployment_without_retrying(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("GET", DEPLOYMENT, (200, "deployment-web-paused"))
    with pytest.raises(KubernetesOperationError, match="paused"):
        run(rollout_restart, RolloutRestart(name="web", namespace="shop", kubeconfig=kubeconfig))
    assert kube.calls() == [("GET", DEPLOYMENT)]


def test_a_missing_deployment_fails_at_once(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("GET", DEPLOYMENT, (404, "status-deployment-not-found"))
    with pytest.raises(ApiError, match=r'deployments\.apps "web" not found'):
        run(rollout_restart, RolloutRestart(name="web", namespace="shop", kubeconfig=kubeconfig))
    assert kube.calls() == [("GET", DEPLOYMENT)]  # a 404 is not worth a retry


def test_an_unavailable_api_server_is_retried(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("GET", DEPLOYMENT, (503, "status-unavailable"), (200, "deployment-web"))
    kube.route("PATCH", DEPLOYMENT, (200, "deployment-web-restarted"))
    result = run(
        rollout_restart, RolloutRestart(name="web", namespace="shop", kubeconfig=kubeconfig)
    )
    assert result.generation == 5
    assert kube.calls() == [("GET", DEPLOYMENT), ("GET", DEPLOYMENT), ("PATCH", DEPLOYMENT)]


# -- scale ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "replicas", "path", "before", "after", "previous"),
    [
        ("Deployment", "web", 5, f"{DEPLOYMENT}/scale", "scale-web", "scale-web-5", 3),
        (
            "StatefulSet",
            "db",
            3,
            "/apis/apps/v1/namespaces/shop/statefulsets/db/scale",
            "scale-db",
            "scale-db-3",
            2,
        ),
    ],
)
def test_scale_patches_the_scale_subresource(
    prefect_api_url: str,
    kube: KubeReplay,
    kubeconfig: str,
    kind: str,
    name: str,
    replicas: int,
    path: str,
    before: str,
    after: str,
    previous: int,
) -> None:
    kube.route("GET", path, (200, before))
    kube.route("PATCH", path, (200, after))
    params = Scale.model_validate(
        {
            "kind": kind,
            "name": name,
            "namespace": "shop",
            "replicas": replicas,
            "kubeconfig": kubeconfig,
        }
    )
    result = run(scale, params)
    (patch,) = kube.sent("PATCH", path)
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {"spec": {"replicas": replicas}}
    assert (result.previous_replicas, result.replicas, result.changed) == (previous, replicas, True)


def test_scale_to_the_current_count_sends_no_patch(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("GET", f"{DEPLOYMENT}/scale", (200, "scale-web"))
    result = run(scale, Scale(name="web", namespace="shop", replicas=3, kubeconfig=kubeconfig))
    assert (result.previous_replicas, result.changed) == (3, False)
    assert kube.calls() == [("GET", f"{DEPLOYMENT}/scale")]


# -- cordon / uncordon ----------------------------------------------------------------------


def test_cordon_then_uncordon_in_a_flow(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("GET", NODE_PATH, (200, "node"), (200, "node-cordoned"))
    kube.route("PATCH", NODE_PATH, (200, "node-cordoned"), (200, "node"))

    @flow(name="node-maintenance")
    def maintenance(node: str, kubeconfig: str) -> tuple[bool, bool]:
        on = OPERATIONS["kubernetes.cordon"]({"node": node, "kubeconfig": kubeconfig})
        off = OPERATIONS["kubernetes.uncordon"]({"node": node, "kubeconfig": kubeconfig})
        return on.changed, off.changed

    assert maintenance(NODE, kubeconfig) == (True, True)
    patches = kube.sent("PATCH", NODE_PATH)
    assert [p.body for p in patches] == [
        {"spec": {"unschedulable": True}},
        {"spec": {"unschedulable": False}},
    ]
    assert {p.content_type for p in patches} == {"application/strategic-merge-patch+json"}


def test_cordon_leaves_a_cordoned_node_alone(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("GET", NODE_PATH, (200, "node-cordoned"))
    result = run(cordon, NodeTarget(node=NODE, kubeconfig=kubeconfig))
    assert (result.unschedulable, result.changed) == (True, False)
    assert kube.sent("PATCH", NODE_PATH) == []


def test_uncordon_of_a_schedulable_node_changes_nothing(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("GET", NODE_PATH, (200, "node"))
    result = run(uncordon, NodeTarget(node=NODE, kubeconfig=kubeconfig))
    assert (result.unschedulable, result.changed) == (False, False)
    assert kube.sent("PATCH", NODE_PATH) == []


# -- drain ----------------------------------------------------------------------------------


def eviction_path(namespace: str, pod: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction"


EVICTABLE = {("shop", WEB_1), ("shop", WEB_2), ("shop", "db-0")}
NOT_EVICTABLE = {
    ("kube-system", "fluent-bit-8hx2c"),  # DaemonSet
    ("kube-system", "aws-node-k7v2p"),  # DaemonSet
    ("kube-system", f"kube-proxy-{NODE}"),  # mirror pod of a static pod
}


def route_node_with_pods(kube: KubeReplay) -> None:
    kube.route("GET", NODE_PATH, (200, "node"))
    kube.route("PATCH", NODE_PATH, (200, "node-cordoned"))
    kube.route("GET", "/api/v1/pods", (200, "pods-on-node"))


def evictions(kube: KubeReplay) -> list[Seen]:
    with kube.lock:
        return [r for r in kube.requests if r.path.endswith("/eviction")]


def test_drain_cordons_then_evicts_all_but_daemonset_and_mirror_pods(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_node_with_pods(kube)
    for namespace, pod in EVICTABLE:
        kube.route("POST", eviction_path(namespace, pod), (201, "eviction-created"))
    kube.route(
        "GET",
        f"{SHOP_PODS}/{WEB_1}",
        (200, "pod-web-x2x9k-terminating"),
        (404, "status-pod-not-found"),
    )
    kube.route("GET", f"{SHOP_PODS}/{WEB_2}", (404, "status-pod-not-found"))
    kube.route("GET", f"{SHOP_PODS}/db-0", (200, "pod-db-0-successor"))  # new uid: the old is gone

    result = run(
        drain, Drain(node=NODE, kubeconfig=kubeconfig, retry_seconds=0.05, timeout_seconds=20)
    )

    (listing,) = kube.sent("GET", "/api/v1/pods")
    assert listing.query == {"fieldSelector": [f"spec.nodeName={NODE}"]}
    calls = kube.calls()
    assert calls[:3] == [("GET", NODE_PATH), ("PATCH", NODE_PATH), ("GET", "/api/v1/pods")]
    assert kube.sent("PATCH", NODE_PATH)[0].body == {"spec": {"unschedulable": True}}

    sent = evictions(kube)
    evicted = {(r.body["metadata"]["namespace"], r.body["metadata"]["name"]) for r in sent}
    assert evicted == EVICTABLE and len(sent) == 3
    assert not evicted & NOT_EVICTABLE
    pods = {p["metadata"]["name"]: p for p in fixture("pods-on-node")["items"]}
    for request in sent:
        name = request.body["metadata"]["name"]
        assert request.path == eviction_path("shop", name)
        assert request.content_type == "application/json"
        assert request.body["apiVersion"] == "policy/v1"
        assert request.body["kind"] == "Eviction"
        assert request.body["deleteOptions"]["preconditions"] == {
            "uid": pods[name]["metadata"]["uid"]
        }

    assert result.cordoned is True
    assert sorted(result.evicted) == sorted(f"{ns}/{pod}" for ns, pod in EVICTABLE)
    assert sorted(result.skipped_daemonset) == [
        "kube-system/aws-node-k7v2p",
        "kube-system/fluent-bit-8hx2c",
    ]
    assert result.skipped_mirror == [f"kube-system/kube-proxy-{NODE}"]
    assert (result.refusals, result.already_gone, result.waited_for_deletion) == (0, [], True)
    assert len(kube.sent("GET", f"{SHOP_PODS}/{WEB_1}")) == 2  # waited until it was gone


def test_drain_retries_an_eviction_a_disruption_budget_refused(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_node_with_pods(kube)
    for namespace, pod in EVICTABLE - {("shop", WEB_2)}:
        kube.route("POST", eviction_path(namespace, pod), (201, "eviction-created"))
    kube.route(
        "POST",
        eviction_path("shop", WEB_2),
        (429, "eviction-refused-pdb"),
        (201, "eviction-created"),
    )
    result = run(
        drain,
        Drain(
            node=NODE,
            kubeconfig=kubeconfig,
            retry_seconds=0.05,
            timeout_seconds=20,
            grace_period_seconds=45,
            wait_for_deletion=False,
        ),
    )
    assert len(kube.sent("POST", eviction_path("shop", WEB_2))) == 2
    assert len(kube.sent("POST", eviction_path("shop", WEB_1))) == 1
    assert f"shop/{WEB_2}" in result.evicted and len(result.evicted) == 3
    assert result.refusals == 1
    assert all(r.body["deleteOptions"]["gracePeriodSeconds"] == 45 for r in evictions(kube))
    assert not any(m == "GET" and p.startswith(SHOP_PODS) for m, p in kube.calls())


def test_drain_fails_at_its_deadline_naming_the_pod_a_budget_still_protects(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_node_with_pods(kube)
    for namespace, pod in EVICTABLE - {("shop", WEB_2)}:
        kube.route("POST", eviction_path(namespace, pod), (201, "eviction-created"))
    kube.route("POST", eviction_path("shop", WEB_2), (429, "eviction-refused-pdb"))

    started = time.monotonic()
    with pytest.raises(DrainIncomplete) as info:
        run(
            drain,
            Drain(
                node=NODE,
                kubeconfig=kubeconfig,
                retry_seconds=0.1,
                timeout_seconds=0.6,
                wait_for_deletion=False,
            ),
        )
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert f"shop/{WEB_2}" in message
    assert "The disruption budget web-pdb needs 2 healthy pods and has 2 currently" in message
    assert "stays cordoned" in message
    assert list(info.value.pending) == [f"shop/{WEB_2}"]
    assert sorted(info.value.evicted) == ["shop/db-0", f"shop/{WEB_1}"]
    assert len(kube.sent("POST", eviction_path("shop", WEB_2))) >= 3  # retried until the deadline
    assert elapsed >= 0.6
    assert kube.sent("PATCH", NODE_PATH)[0].body == {"spec": {"unschedulable": True}}
    assert len(kube.sent("PATCH", NODE_PATH)) == 1  # never uncordoned behind our back


def test_drain_fails_when_an_evicted_pod_does_not_go(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_node_with_pods(kube)
    for namespace, pod in EVICTABLE:
        kube.route("POST", eviction_path(namespace, pod), (201, "eviction-created"))
    kube.route("GET", f"{SHOP_PODS}/{WEB_1}", (200, "pod-web-x2x9k-terminating"))
    kube.route("GET", f"{SHOP_PODS}/{WEB_2}", (404, "status-pod-not-found"))
    kube.route("GET", f"{SHOP_PODS}/db-0", (404, "status-pod-not-found"))
    with pytest.raises(DrainIncomplete, match=f"shop/{WEB_1} \\(evicted, not gone yet\\)"):
        run(drain, Drain(node=NODE, kubeconfig=kubeconfig, retry_seconds=0.05, timeout_seconds=0.5))
    assert len(kube.sent("GET", f"{SHOP_PODS}/{WEB_1}")) >= 3


def test_drain_counts_a_pod_gone_before_its_eviction(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_node_with_pods(kube)
    for namespace, pod in EVICTABLE - {("shop", WEB_2)}:
        kube.route("POST", eviction_path(namespace, pod), (201, "eviction-created"))
    kube.route("POST", eviction_path("shop", WEB_2), (404, "status-pod-not-found"))
    result = run(drain, Drain(node=NODE, kubeconfig=kubeconfig, wait_for_deletion=False))
    assert result.already_gone == [f"shop/{WEB_2}"]
    assert f"shop/{WEB_2}" not in result.evicted


# -- delete pod -----------------------------------------------------------------------------


def test_delete_pod_sends_the_grace_period(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("DELETE", f"{SHOP_PODS}/{WEB_1}", (200, "pod-web-x2x9k-terminating"))
    result = run(
        delete_pod,
        DeletePod(name=WEB_1, namespace="shop", grace_period_seconds=0, kubeconfig=kubeconfig),
    )
    assert result.existed is True
    (request,) = kube.sent("DELETE", f"{SHOP_PODS}/{WEB_1}")
    assert request.query == {"gracePeriodSeconds": ["0"]}


def test_delete_pod_of_a_pod_already_gone_is_no_error(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    kube.route("DELETE", f"{SHOP_PODS}/{WEB_2}", (404, "status-pod-not-found"))
    result = run(delete_pod, DeletePod(name=WEB_2, namespace="shop", kubeconfig=kubeconfig))
    assert result.existed is False
    assert len(kube.requests) == 1


# -- rollback -------------------------------------------------------------------------------


REPLICASETS = "/apis/apps/v1/namespaces/shop/replicasets"


def replicaset_template(name: str) -> dict[str, Any]:
    """The pod template of a recorded ReplicaSet, without its pod-template-hash label."""
    (rs,) = [rs for rs in fixture("replicasets-web")["items"] if rs["metadata"]["name"] == name]
    template: dict[str, Any] = rs["spec"]["template"]
    del template["metadata"]["labels"]["pod-template-hash"]
    return template


def route_rollback(kube: KubeReplay, deployment: str = "deployment-web") -> None:
    kube.route("GET", DEPLOYMENT, (200, deployment))
    kube.route("GET", REPLICASETS, (200, "replicasets-web"))
    kube.route("PATCH", DEPLOYMENT, (200, "deployment-web-rolled-back"))


def test_rollback_copies_the_previous_revisions_template_like_kubectl(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_rollback(kube)
    result = run(rollback, Rollback(name="web", namespace="shop", kubeconfig=kubeconfig))

    (listing,) = kube.sent("GET", REPLICASETS)
    assert listing.query == {"labelSelector": ["app=web"]}
    (patch,) = kube.sent("PATCH", DEPLOYMENT)
    assert patch.content_type == "application/json-patch+json"
    expected = replicaset_template("web-7d9c5b6f4")  # revision 2; the canary's 7 is not web's
    assert expected["metadata"] == {"creationTimestamp": None, "labels": {"app": "web"}}
    assert patch.body == [
        {"op": "replace", "path": "/spec/template", "value": expected},
        {
            "op": "replace",
            "path": "/metadata/annotations",
            "value": {
                "deployment.kubernetes.io/revision": "3",
                "kubernetes.io/change-cause": "deploy web 1.4.1",
            },
        },
    ]
    assert result.model_dump() == {
        "name": "web",
        "namespace": "shop",
        "from_revision": 3,
        "to_revision": 2,
        "replica_set": "web-7d9c5b6f4",
        "images": ["registry.example.com/shop/web:1.4.1"],
        "changed": True,
    }


def test_rollback_to_a_given_revision(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_rollback(kube)
    result = run(
        rollback, Rollback(name="web", namespace="shop", to_revision=1, kubeconfig=kubeconfig)
    )
    (patch,) = kube.sent("PATCH", DEPLOYMENT)
    assert patch.body[0]["value"] == replicaset_template("web-5d8f7c9b6")
    assert (result.to_revision, result.replica_set) == (1, "web-5d8f7c9b6")


def test_rollback_to_an_unknown_revision_changes_nothing(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_rollback(kube)
    with pytest.raises(KubernetesOperationError, match=r"no revision 7 \(known: 3, 2, 1\)"):
        run(rollback, Rollback(name="web", namespace="shop", to_revision=7, kubeconfig=kubeconfig))
    assert kube.sent("PATCH", DEPLOYMENT) == []


def test_rollback_to_the_template_already_running_sends_no_patch(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_rollback(kube, deployment="deployment-web-at-revision-2")
    result = run(
        rollback, Rollback(name="web", namespace="shop", to_revision=2, kubeconfig=kubeconfig)
    )
    assert result.changed is False
    assert kube.sent("PATCH", DEPLOYMENT) == []


def test_rollback_refuses_a_paused_deployment(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    route_rollback(kube, deployment="deployment-web-paused")
    with pytest.raises(KubernetesOperationError, match="paused"):
        run(rollback, Rollback(name="web", namespace="shop", kubeconfig=kubeconfig))
    assert kube.calls() == [("GET", DEPLOYMENT)]


def test_the_shipped_drain_node_flow_drains_through_evictions(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    from flows import load_flow

    route_node_with_pods(kube)
    for namespace, pod in EVICTABLE:
        kube.route("POST", eviction_path(namespace, pod), (201, "eviction-created"))
    for _, pod in EVICTABLE:
        kube.route("GET", f"{SHOP_PODS}/{pod}", (404, "status-pod-not-found"))
    summary = load_flow("drain-node")(node=NODE, kubeconfig=kubeconfig, timeout_seconds=20)
    assert summary == "drain-node: done (drain)"  # no Prometheus given: no verification
    sent = {(r.body["metadata"]["namespace"], r.body["metadata"]["name"]) for r in evictions(kube)}
    assert sent == EVICTABLE


def test_the_shipped_rollback_flow_rolls_back_to_the_previous_revision(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    from flows import load_flow

    route_rollback(kube)
    load_flow("rollback-deployment")(namespace="shop", deployment="web", kubeconfig=kubeconfig)
    (patch,) = kube.sent("PATCH", DEPLOYMENT)
    assert patch.body[0]["value"] == replicaset_template("web-7d9c5b6f4")


def test_a_retried_rollout_restart_patches_the_same_value_and_restarts_once(
    prefect_api_url: str, kube: KubeReplay, kubeconfig: str
) -> None:
    # The first PATCH may have been applied before its 503 (a proxy, a lost answer): the
    # retry must change nothing, so it sends the first attempt's restartedAt again.
    kube.route("GET", DEPLOYMENT, (200, "deployment-web"))
    kube.route("PATCH", DEPLOYMENT, (503, "status-unavailable"), (200, "deployment-web-restarted"))
    result = run(
        rollout_restart, RolloutRestart(name="web", namespace="shop", kubeconfig=kubeconfig)
    )
    patches = kube.sent("PATCH", DEPLOYMENT)
    assert len(patches) == 2  # retried after at least a second
    values = {
        p.body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        for p in patches
    }
    assert values == {result.restarted_at}
