"""Limits on what a client may send: its rate (429), and the size of labels and annotations
(422 naming the field). Nothing accepted before a limit bites is lost.

The HTTP tests run `_http_server` (what `serve` and `up` run) on a real socket, so the client
is the real peer address: 127.0.0.1, or 127.0.0.2 for a second client.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from responder.events.webhook import MAX_ANNOTATION_VALUE, MAX_LABEL_VALUE, MAX_LABELS
from responder.exceptions import ConfigError
from responder.intake.ratelimit import RateLimit, client_of
from responder.runtime.service import Service
from responder.settings import load_settings
from tests import servers
from tests.helpers import fixture_body, fixture_json, free_port, make_settings, wait_for

URL = "/webhook/alertmanager"
JSON = {"content-type": "application/json"}

Serve = Callable[..., Awaitable[tuple[httpx.AsyncClient, Service]]]


@pytest.fixture
async def serve(tmp_path: Path, rules_dir: Path) -> AsyncIterator[Serve]:
    """Start Responder's real HTTP server with these settings; yields a client for it."""
    running: list[tuple[Any, asyncio.Task[None], httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> tuple[httpx.AsyncClient, Service]:
        base = tmp_path / f"server-{len(running)}"
        base.mkdir()
        settings = make_settings(base, rules_dir, port=free_port(), **overrides)
        service = Service(settings, prefect_api_url=None)
        server, task = await servers.serve_in_process(settings, service)
        client = httpx.AsyncClient(base_url=settings.base_url, timeout=10)
        running.append((server, task, client))
        return client, service

    yield start
    for server, task, client in running:
        await client.aclose()
        server.should_exit = True
        await task


def second_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Another client of the same server, connecting from 127.0.0.2."""
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    return httpx.AsyncClient(base_url=client.base_url, transport=transport, timeout=10)


def limited(endpoint: str) -> float:
    labels = {"endpoint": endpoint}
    return REGISTRY.get_sample_value("responder_rate_limited_total", labels) or 0.0


def inbox_rows(service: Service) -> int:
    with sqlite3.connect(service.settings.data_dir / "responder.db") as db:
        return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])


async def settled(service: Service) -> bool:
    return await service.store.inbox.backlog() == 0


# --- the rate per client --------------------------------------------------------------


async def test_a_burst_beyond_the_limit_gets_429_and_loses_nothing_accepted(
    serve: Serve,
) -> None:
    client, service = await serve(rate_limit_per_client=1, rate_limit_burst=5)
    before = limited("alertmanager")
    body = fixture_body("firing_single_servicedown")

    async def post(sender: httpx.AsyncClient) -> httpx.Response:
        return await sender.post(URL, content=body, headers=JSON)

    responses = await asyncio.gather(*(post(client) for _ in range(20)))
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(accepted) + len(refused) == 20
    assert 5 <= len(accepted) < 10, [r.status_code for r in responses]
    for response in refused:
        assert "too many requests" in response.json()["error"]
        assert 0 < response.json()["retry_after_seconds"] <= 1  # one token, at 1 per second
        assert response.headers["retry-after"] == "1"  # whole seconds, rounded up
    assert limited("alertmanager") - before == len(refused)

    # Another client is not held back by this one.
    async with second_client(client) as other:
        accepted.append(response := await post(other))
        assert response.status_code == 200

    # Once limited, the client is admitted again after waiting as told.
    for _ in range(10):
        if (response := await post(client)).status_code != 200:
            break
        accepted.append(response)
    assert response.status_code == 429
    await asyncio.sleep(response.json()["retry_after_seconds"])
    accepted.append(response := await post(client))
    assert response.status_code == 200

    # Everything acknowledged is in the inbox and was decided; nothing refused is.
    await wait_for(lambda: settled(service))
    assert inbox_rows(service) == len(accepted)
    rows = await service.store.decisions.recent(limit=1000)
    assert sorted(r["inbox_id"] for r in rows) == sorted(r.json()["inbox_id"] for r in accepted)


async def test_every_intake_endpoint_draws_on_the_clients_bucket_and_reads_stay_open(
    serve: Serve,
) -> None:
    client, _ = await serve(rate_limit_per_client=0.01, rate_limit_burst=1)
    before = {e: limited(e) for e in ("alertmanager", "cloudevents", "run-request")}
    body = fixture_body("firing_single_servicedown")
    assert (await client.post(URL, content=body, headers=JSON)).status_code == 200
    event = {"specversion": "1.0", "id": "1", "source": "ci", "type": "deploy.finished"}
    responses = [
        await client.post(URL, content=body, headers=JSON),
        await client.post("/api/v1/events", json=event),
        await client.post("/api/v1/catalog/flows/restart-service/runs", json={}),
    ]
    assert [r.status_code for r in responses] == [429, 429, 429]
    assert all(int(r.headers["retry-after"]) >= 99 for r in responses)  # 1 per 100 s
    after = {e: limited(e) for e in before}
    assert {e: after[e] - before[e] for e in before} == {
        "alertmanager": 1,
        "cloudevents": 1,
        "run-request": 1,
    }
    # Reading is not intake: operators and probes are never throttled.
    assert (await client.get("/api/v1/decisions")).status_code == 200
    assert (await client.get("/healthz")).status_code == 200
    assert "responder_rate_limited_total" in (await client.get("/metrics")).text


async def test_a_rate_of_zero_turns_the_limit_off(serve: Serve) -> None:
    client, _ = await serve(rate_limit_per_client=0, rate_limit_burst=1)
    # Empty bodies: each is answered 415 after the limit would have been checked.
    codes = [(await client.post(URL)).status_code for _ in range(10)]
    assert codes == [415] * 10


async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(serve: Serve) -> None:
    async def codes(client: httpx.AsyncClient, forwarded_for: list[str]) -> list[int]:
        return [
            (await client.post(URL, headers={"x-forwarded-for": f})).status_code
            for f in forwarded_for
        ]

    spoofed = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    direct, _ = await serve(rate_limit_per_client=0.01, rate_limit_burst=2)
    assert await codes(direct, spoofed) == [415, 415, 429]  # all one client: 127.0.0.1

    proxied, _ = await serve(
        rate_limit_per_client=0.01, rate_limit_burst=2, trusted_proxies=["127.0.0.0/8"]
    )
    assert await codes(proxied, spoofed) == [415, 415, 415]  # three clients
    # The client is the right-most address no trusted proxy added; what it sent is ignored.
    chain = [f"203.0.113.{n}, 192.0.2.50" for n in range(3)]
    assert await codes(proxied, chain) == [415, 415, 429]


async def test_x_forwarded_for_values_that_are_not_addresses_share_one_bucket(
    serve: Serve,
) -> None:
    proxied, _ = await serve(
        rate_limit_per_client=0.01, rate_limit_burst=2, trusted_proxies=["127.0.0.0/8"]
    )
    rotated = ["not-an-ip", "still not", "198.51.100.1.5", "[::1", "unknown"]
    codes = [(await proxied.post(URL, headers={"x-forwarded-for": f})).status_code for f in rotated]
    assert codes == [415, 415, 429, 429, 429]


async def test_requests_without_credentials_do_not_spend_a_senders_bucket(
    serve: Serve,
) -> None:
    client, _ = await serve(bearer_token="wh", rate_limit_per_client=0.01, rate_limit_burst=2)
    before = limited("alertmanager")
    for _ in range(5):  # a stranger on the sender's own address
        assert (await client.post(URL, headers={"authorization": "Bearer nope"})).status_code == 401
    assert limited("alertmanager") == before
    sender = {"authorization": "Bearer wh"}
    codes = [(await client.post(URL, headers=sender)).status_code for _ in range(3)]
    assert codes == [415, 415, 429]


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path: Path) -> None:
    config = tmp_path / "responder.yaml"
    config.write_text(f"data_dir: {tmp_path}\n")
    assert load_settings(config, trusted_proxies=["10.0.0.5", "fd00::/8"]).trusted_proxies
    with pytest.raises(
        ConfigError, match=r"field trusted_proxies value .*'\*' is not an IP address"
    ):
        load_settings(config, trusted_proxies=["10.0.0.5", "*"])


def test_a_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    limit = RateLimit(rate=2, burst=3, clock=lambda: now[0])
    assert [limit.admit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.admit("a") == pytest.approx(0.5)
    now[0] += 0.25
    assert limit.admit("a") == pytest.approx(0.25)  # half a token came back; not enough
    now[0] += 0.25
    assert limit.admit("a") == 0.0
    now[0] += 3600  # a long idle time refills no more than the burst
    assert [limit.admit("a") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_the_client_map_is_bounded_and_forgetting_refuses_no_one() -> None:
    now = [0.0]
    limit = RateLimit(rate=1, burst=2, max_clients=100, clock=lambda: now[0])
    for n in range(100_000):  # a flood of addresses, each sending once
        assert limit.admit(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}") == 0.0
        assert len(limit) <= 100
    assert len(limit) == 100

    limit.admit("hot")
    limit.admit("hot")
    assert limit.admit("hot") > 0
    for n in range(99):  # the client seen last is remembered, still limited
        limit.admit(f"new-{n}")
    assert limit.admit("hot") > 0
    for n in range(100):  # forgotten once 100 others came after it: a full bucket
        limit.admit(f"newer-{n}")
    assert [limit.admit("hot") == 0.0 for _ in range(3)] == [True, True, False]


def test_ipv6_clients_count_by_their_64() -> None:
    assert client_of("2001:db8::1") == client_of("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_of("2001:db8:0:1::1") != client_of("2001:db8::1")
    assert client_of("::ffff:192.0.2.7") == client_of("192.0.2.7") == "192.0.2.7"
    assert client_of(None) == "unknown"
    assert client_of("not-an-ip") == client_of("also-not") == client_of("") == "unknown"


# --- label and annotation sizes -------------------------------------------------------


def _too_many_labels(alert: dict[str, Any]) -> None:
    alert["labels"].update({f"extra_{n}": "x" for n in range(MAX_LABELS)})


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda a: a["labels"].update(instance="h" * (MAX_LABEL_VALUE + 1)),
            "alerts.0.labels.instance",
        ),
        (_too_many_labels, "alerts.0.labels"),
        (
            lambda a: a["annotations"].update(description="d" * (MAX_ANNOTATION_VALUE + 1)),
            "alerts.0.annotations.description",
        ),
    ],
    ids=["label-value", "label-count", "annotation-value"],
)
async def test_oversize_labels_are_422_naming_the_field(
    serve: Serve, mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    client, service = await serve()
    body = fixture_json("firing_single_servicedown")
    mutate(body["alerts"][0])
    response = await client.post(URL, content=json.dumps(body), headers=JSON)
    assert response.status_code == 422, response.text
    assert field in {f["field"] for f in response.json()["fields"]}
    assert inbox_rows(service) == 0


async def test_labels_at_the_limits_are_accepted(serve: Serve) -> None:
    client, service = await serve()
    body = fixture_json("firing_single_servicedown")
    labels = body["alerts"][0]["labels"]
    labels["instance"] = "h" * MAX_LABEL_VALUE
    labels.update({f"extra_{n}": "x" for n in range(MAX_LABELS - len(labels))})
    body["alerts"][0]["annotations"]["description"] = "d" * MAX_ANNOTATION_VALUE
    assert len(labels) == MAX_LABELS
    response = await client.post(URL, content=json.dumps(body), headers=JSON)
    assert response.status_code == 200, response.text
    assert inbox_rows(service) == 1
