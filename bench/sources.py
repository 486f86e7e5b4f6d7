"""Events per second from each event source into the inbox (committed, the sender answered).

- `json`: GitHub's deployment_status fixture posted to `POST /webhook/json/github-deployment`
  (HMAC-signed, each with its own X-GitHub-Delivery) by `--senders` concurrent clients, through
  the real HTTP app in process (no socket): each 200 comes after its commit.
- `redis`: `--events` entries XADDed to a fresh stream first, then one consumer reads them;
  timed until every entry is committed and acknowledged (needs Redis, `--redis-url`).
- `prefect`: `--events` `prefect.flow-run.Failed` events emitted to a temporary Prefect server
  (prefect_test_harness) while the leader is subscribed; timed from the first emit until all
  are in the inbox.

Each runs on a fresh SQLite store with the engine loop reading the inbox at the same time.

    python bench/sources.py --events 2000 --senders 16
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from responder.intake.app import create_app  # noqa: E402
from responder.runtime.service import Service  # noqa: E402
from responder.runtime.streams import RedisStream  # noqa: E402
from responder.settings import Settings  # noqa: E402
from responder.storage.schema import inbox  # noqa: E402

SECRET = "bench-secret"


def settings(workdir: Path, **overrides: Any) -> Settings:
    rules = workdir / "rules"
    rules.mkdir(exist_ok=True)
    return Settings(
        data_dir=workdir / "data",
        rules_dir=rules,
        services_file=workdir / "services.yaml",
        mappings_dir=ROOT / "config" / "mappings",
        webhook_secrets={"github-deployment": SECRET},
        reload_check_seconds=0,
        rate_limit_per_client=0,  # one client sends everything: no per-client limit here
        **overrides,
    )


async def committed(service: Service) -> int:
    async with service.store.transaction() as conn:
        return int(await conn.scalar(select(func.count()).select_from(inbox)) or 0)


async def until(service: Service, events: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while await committed(service) < events:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {await committed(service)} of {events} committed")
        await asyncio.sleep(0.01)


async def json_webhooks(workdir: Path, events: int, senders: int) -> dict[str, Any]:
    service = Service(settings(workdir))
    await service.start()
    body = (ROOT / "tests" / "fixtures" / "webhooks" / "github-deployment-status.json").read_bytes()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    transport = httpx.ASGITransport(app=create_app(service))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            queue = list(range(events))

            async def sender() -> None:
                while queue:
                    n = queue.pop()
                    answer = await client.post(
                        "/webhook/json/github-deployment",
                        content=body,
                        headers={
                            "Content-Type": "application/json",
                            "X-GitHub-Delivery": f"delivery-{n}",
                            "X-Hub-Signature-256": f"sha256={digest}",
                        },
                    )
                    assert answer.status_code == 200, answer.text

            began = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(senders)))
            elapsed = time.perf_counter() - began
        assert await committed(service) == events
    finally:
        await service.stop()
    return {"source": "json", "events": events, "senders": senders, "seconds": elapsed}


async def redis_stream(workdir: Path, events: int, url: str) -> dict[str, Any]:
    import redis.asyncio as redis

    stream = f"responder-bench-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for n in range(events):
        body = {"specversion": "1.0", "id": f"e-{n}", "source": "bench", "type": "bench.event"}
        pipe.xadd(stream, {"event": json.dumps(body | {"data": {"n": n}})})
    await pipe.execute()
    service = Service(settings(workdir))
    await service.start()
    consumer = RedisStream(
        settings(workdir, redis_url=url, redis_stream=stream, redis_consumer="bench"),
        service.accept,
    )
    try:
        began = time.perf_counter()
        consumer.start()
        await until(service, events)
        while (await client.xpending(stream, "responder"))["pending"]:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - began
    finally:
        await consumer.stop()
        await service.stop()
        await client.delete(stream)
        await client.aclose()
    return {"source": "redis", "events": events, "batch": 100, "seconds": elapsed}


async def prefect_feed(workdir: Path, events: int) -> dict[str, Any]:
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        api = str(PREFECT_API_URL.value())
        service = Service(
            settings(workdir, prefect_event_types=["prefect.flow-run.Failed"]),
            prefect_api_url=api,
        )
        await service.start()
        try:
            await asyncio.sleep(2)  # the subscription is made
            began = time.perf_counter()
            async with PrefectEventsClient(api) as emitter:
                for n in range(events):
                    run = uuid.uuid4()
                    await emitter.emit(
                        Event(
                            event="prefect.flow-run.Failed",
                            resource={
                                "prefect.resource.id": f"prefect.flow-run.{run}",
                                "prefect.resource.name": f"bench-{n}",
                                "prefect.state-name": "Failed",
                            },
                        )
                    )
            await until(service, events)
            elapsed = time.perf_counter() - began
        finally:
            await service.stop()
    return {"source": "prefect", "events": events, "seconds": elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sources", nargs="+", default=["json", "redis", "prefect"])
    args = parser.parse_args()
    for source in args.sources:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            if source == "json":
                result = await json_webhooks(workdir, args.events, args.senders)
            elif source == "redis":
                result = await redis_stream(workdir, args.events, args.redis_url)
            else:
                result = await prefect_feed(workdir, args.events)
        result["events_per_second"] = round(result["events"] / result["seconds"], 1)
        result["seconds"] = round(result["seconds"], 2)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
