"""Alertmanager redelivery, end to end: a real Alertmanager 0.25 (Debian package) delivers
through a fault-injecting HTTP proxy to a real Responder (its HTTP app under uvicorn, SQLite,
no Prefect: an admitted decision is recorded and its key taken, nothing is dispatched).

    Alertmanager ──POST──▶ FaultProxy (records every attempt, injects a fault) ──▶ Responder

The cases, each with exactly one admitting decision per incident:

1. **5xx:** the proxy answers 503 to the first attempts, without forwarding them, or after
   Responder committed them (the acknowledgement is lost). Alertmanager retries within the
   same flush, with a backoff of about 0.5 s, 0.75 s, 1.1 s ...
2. **Timeout with a complete body:** Responder commits the body and answers 200, but the proxy
   holds the answer back. Alertmanager 0.25 gives up after max(group_interval, 10 s) (the flush
   deadline: `notify.MinTimeout`), and sends the same body again at the next flush.
3. **Resent groups:** the unchanged group comes again after every repeat interval.
4. **Stale resolved alerts:** an alert resolves; Prometheus keeps re-sending it resolved, so it
   joins the group again and comes back, still resolved, inside later firing webhooks. Then it
   fires again with a new `startsAt`: a new incident, decided again.

The verdicts Responder must record are those DESIGN.md specifies for the sequence of bodies it
committed: the first firing copy of an incident is decided (`admitted`), the first resolved copy
retracts it (`resolved`), and every other copy is a `duplicate`. The figures (attempts, their
times, Alertmanager's measured timeout, verdicts per incident) are printed (`pytest -s`) for
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from responder.events.webhook import Alert
from responder.intake.app import create_app
from responder.runtime.service import Service
from responder.storage.schema import inbox
from tests import servers
from tests.helpers import free_port, make_settings, wait_for

pytestmark = [pytest.mark.alertmanager, pytest.mark.timeout(120)]

ALERTNAME = "RedeliveryProbe"
# One rule. Its guard key carries the incident, so the guard's key lease cannot hide a
# redelivery that the alert-identity ledger failed to recognise: that copy would be recorded
# `refused` (key_active) instead of `duplicate`, and fail the test.
RULE = f"""
rules:
  - name: remediate-probe
    match: ['alertname="{ALERTNAME}"']
    run:
      flow: http-call
      parameters:
        url: "http://127.0.0.1:9/remediate/{{{{ alert.labels.instance | segment }}}}"
    guard:
      key: "probe/{{{{ alert.labels.instance }}}}/{{{{ alert.startsAt }}}}"
"""

Fault = Literal["forward", "reject", "reject-4xx", "lose-ack", "hang"]
HANG_CAP = 30.0  # a held answer is released after this long, if Alertmanager has not gone


# --- the proxy --------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One delivery attempt by Alertmanager, as the proxy saw it."""

    number: int
    at: float  # seconds since the proxy started, when the request had fully arrived
    body: bytes
    fault: Fault
    forwarded: int | None = None  # Responder's status, if the body was forwarded
    answered: int | None = None  # status Alertmanager got; None: it gave up first
    held: float | None = None  # "hang": seconds until Alertmanager closed the connection

    def alerts(self) -> list[tuple[str, str, str]]:
        """(instance, startsAt, status) of each alert in the body."""
        return [
            (a["labels"]["instance"], a["startsAt"], a["status"])
            for a in json.loads(self.body)["alerts"]
        ]


class FaultProxy:
    """A tiny HTTP/1.1 proxy on 127.0.0.1 that records every attempt and injects faults.

    `plan(n, t)` says what to do with the n-th attempt (1-based), t seconds after the first:
    - `forward`: forward to Responder and relay its answer;
    - `reject`: answer 503 without forwarding;
    - `reject-4xx`: answer 400 without forwarding;
    - `lose-ack`: forward (Responder commits), then answer 503 instead of Responder's 200,
      as a gateway does when the upstream's answer is lost;
    - `hang`: forward (Responder commits), then answer nothing until Alertmanager gives up.
    """

    def __init__(self, target: str, plan: Callable[[int, float], Fault]) -> None:
        self.target = target
        self.plan = plan
        self.attempts: list[Attempt] = []
        self._server: asyncio.Server | None = None
        self._http = httpx.AsyncClient(timeout=5)
        self._started = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self._started = time.monotonic()
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def idle(self) -> None:
        """Every attempt so far has been handled to its end."""
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 40)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            path = head[0].split(" ")[1]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in head[1:] if line)
            }
            body = await reader.readexactly(int(headers["content-length"]))
            at = time.monotonic() - self._started
            since_first = at - self.attempts[0].at if self.attempts else 0.0
            attempt = Attempt(
                len(self.attempts) + 1, at, body, self.plan(len(self.attempts) + 1, since_first)
            )
            self.attempts.append(attempt)
            if attempt.fault == "reject":
                await _answer(writer, attempt, 503, b'{"error": "injected 503"}')
                return
            if attempt.fault == "reject-4xx":
                await _answer(writer, attempt, 400, b'{"error": "injected 400"}')
                return
            response = await self._http.post(
                self.target + path,
                content=body,
                headers={k: v for k, v in headers.items() if k in ("content-type", "user-agent")},
            )
            attempt.forwarded = response.status_code
            if attempt.fault == "forward":
                await _answer(writer, attempt, response.status_code, response.content)
            elif attempt.fault == "lose-ack":
                await _answer(writer, attempt, 503, b'{"error": "injected 503 after commit"}')
            else:  # hang: Alertmanager closes the connection when its deadline passes
                since = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(1), HANG_CAP)
                    attempt.held = time.monotonic() - since
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def summary(self) -> list[str]:
        return [
            f"#{a.number} t={a.at:6.2f}s {a.fault:8} forwarded={a.forwarded} "
            f"answered={a.answered} held={None if a.held is None else round(a.held, 2)} "
            f"{a.alerts()}"
            for a in self.attempts
        ]


async def _answer(writer: asyncio.StreamWriter, attempt: Attempt, status: int, body: bytes) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    attempt.answered = status


# --- Responder, the proxy and Alertmanager ----------------------------------------------------


@dataclass
class Rig:
    service: Service
    proxy: FaultProxy
    proxy_url: str
    tmp_path: Path
    plan: dict[int, Fault] = field(default_factory=dict)  # attempts that are not "forward"
    reject_for: float = 0.0  # and 503 to every attempt this long after the first

    def choose(self, number: int, since_first: float) -> Fault:
        if since_first < self.reject_for:
            return "reject"
        return self.plan.get(number, "forward")

    @contextlib.contextmanager
    def alertmanager(self, group_interval: str, repeat_interval: str) -> Iterator[str]:
        """A real Alertmanager delivering one group per alertname to the proxy."""
        config = f"""
route:
  receiver: responder
  group_by: [alertname]
  group_wait: 1s
  group_interval: {group_interval}
  repeat_interval: {repeat_interval}
receivers:
  - name: responder
    webhook_configs:
      - url: {self.proxy_url}/webhook/alertmanager
        send_resolved: true
"""
        with servers.alertmanager(self.tmp_path, free_port(), config) as url:
            yield url

    async def drained(self) -> None:
        """Every attempt has been handled, and every committed body decided."""
        await self.proxy.idle()

        async def empty() -> bool:
            return await self.service.store.inbox.backlog() == 0

        await wait_for(empty, timeout=20, every=0.05)

    async def committed(self) -> list[bytes]:
        """The inbox, in order: the bodies Responder acknowledged."""
        async with self.service.store.transaction() as conn:
            rows = await conn.execute(select(inbox.c.body).order_by(inbox.c.id))
            return [bytes(r.body) for r in rows]

    async def verdicts(self) -> dict[str, list[str]]:
        """Recorded verdicts per incident ("instance@startsAt"), oldest first."""
        found: dict[str, list[str]] = {}
        for row in reversed(await self.service.store.decisions.recent(limit=1000)):
            name = f"{row['labels']['instance']}@{row['incident'].split('@', 1)[1]}"
            found.setdefault(name, []).append(row["verdict"])
        return found


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "probe.yaml").write_text(RULE)
    port = free_port()
    service = Service(make_settings(tmp_path, rules, port=port))
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())

    async def ready() -> bool:
        with contextlib.suppress(httpx.TransportError):
            async with httpx.AsyncClient() as http:
                return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        return False

    await wait_for(ready, timeout=60, every=0.1)
    proxy = FaultProxy(f"http://127.0.0.1:{port}", lambda n, t: "forward")
    rig = Rig(service, proxy, await proxy.start(), tmp_path)
    proxy.plan = rig.choose
    try:
        yield rig
    finally:
        await proxy.stop()
        server.should_exit = True
        await task


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def post_alerts(
    alertmanager: str, instances: list[str], starts_at: datetime, ends_at: datetime | None = None
) -> None:
    """Post alerts to Alertmanager's API, as Prometheus does; `ends_at` resolves them."""
    alerts: list[dict[str, Any]] = [
        {
            "labels": {"alertname": ALERTNAME, "instance": instance, "severity": "critical"},
            "annotations": {"summary": "redelivery probe"},
            "startsAt": iso(starts_at),
            **({"endsAt": iso(ends_at)} if ends_at else {}),
        }
        for instance in instances
    ]
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{alertmanager}/api/v2/alerts", json=alerts)
        assert response.status_code == 200, response.text


def expected_verdicts(bodies: list[bytes]) -> dict[str, list[str]]:
    """What DESIGN.md prescribes for these committed bodies, per incident: the first firing
    copy is decided (one rule matches, so `admitted`), the first resolved copy `resolved`,
    every other copy (resends, stale resolved, firing after resolved) `duplicate`."""
    seen: set[tuple[str, str]] = set()
    verdicts: dict[str, list[str]] = {}
    for body in bodies:
        for alert in json.loads(body)["alerts"]:
            start = Alert.model_validate(alert).starts_at.isoformat()  # as Responder keeps it
            incident = f"{alert['labels']['instance']}@{start}"
            status = alert["status"]
            if (incident, status) in seen or (incident, "resolved") in seen:
                verdict = "duplicate"
            else:
                verdict = "admitted" if status == "firing" else "resolved"
            seen.add((incident, status))
            verdicts.setdefault(incident, []).append(verdict)
    return verdicts


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    async def check() -> bool:
        return predicate()

    await wait_for(check, timeout=timeout, every=0.05)


def report(case: str, rig: Rig, verdicts: dict[str, list[str]], **figures: Any) -> None:
    print(f"\n=== {case}")
    for line in rig.proxy.summary():
        print("   ", line)
    for name, value in figures.items():
        print(f"    {name}: {value}")
    for incident, found in verdicts.items():
        print(f"    {incident}: {found}")


def admitting(verdicts: dict[str, list[str]]) -> dict[str, int]:
    return {incident: found.count("admitted") for incident, found in verdicts.items()}


# --- the cases --------------------------------------------------------------------------------

REJECTED = 3  # 503s before the proxy lets a delivery through


@pytest.mark.parametrize("fault", ["reject", "lose-ack"])
async def test_5xx_is_retried_and_decided_once(rig: Rig, fault: Fault) -> None:
    """503 to the first attempts: Alertmanager retries within the flush until one gets 200.
    `reject` never reached Responder; `lose-ack` did, every time, so Responder committed the
    body four times and must decide once."""
    rig.plan.update({n: fault for n in range(1, REJECTED + 1)})
    start = datetime.now(UTC)
    # group_interval 30s: the flush deadline is 30 s, and a body refused with a 4xx would
    # only come back 30 s later: what arrives earlier is a retry of the same flush.
    with rig.alertmanager(group_interval="30s", repeat_interval="1h") as am:
        await post_alerts(am, ["host-1", "host-2"], start)
        await until(lambda: any(a.answered == 200 for a in rig.proxy.attempts), timeout=20)
        await asyncio.sleep(1.5)  # nothing more may come
    await rig.drained()
    attempts = rig.proxy.attempts
    committed = await rig.committed()
    verdicts = await rig.verdicts()
    gaps = [round(b.at - a.at, 2) for a, b in itertools.pairwise(attempts)]
    report(f"5xx ({fault})", rig, verdicts, retry_gaps_s=gaps, committed=len(committed))

    assert [a.answered for a in attempts] == [503] * REJECTED + [200]
    assert attempts[-1].at - attempts[0].at < 10, "the retries belong to one flush"
    assert len({a.body for a in attempts}) == 1, "every retry carries the same body"
    assert len(committed) == (1 if fault == "reject" else REJECTED + 1)
    assert verdicts == expected_verdicts(committed)
    assert admitting(verdicts) == {incident: 1 for incident in verdicts}
    assert len(verdicts) == 2
    if fault == "lose-ack":
        assert all(found == ["admitted"] + ["duplicate"] * REJECTED for found in verdicts.values())


async def test_5xx_past_the_flush_deadline_is_sent_again_at_the_next_flush(rig: Rig) -> None:
    """503 to everything for 10.5 s: Alertmanager retries for 10 s (its flush deadline with
    group_interval 1s), gives up, and the next flush starts over with the same body."""
    rig.reject_for = 10.5
    start = datetime.now(UTC)
    with rig.alertmanager(group_interval="1s", repeat_interval="1h") as am:
        await post_alerts(am, ["host-1", "host-2"], start)
        await until(lambda: any(a.answered == 200 for a in rig.proxy.attempts), timeout=30)
        await asyncio.sleep(1)  # nothing more may come
    await rig.drained()
    attempts = rig.proxy.attempts
    committed = await rig.committed()
    verdicts = await rig.verdicts()
    first = attempts[0].at
    # The first flush's attempts: the next flush starts when its 10 s deadline has passed.
    flush = [a for a in attempts if a.at - first < 9.9]
    report(
        "5xx past the flush deadline",
        rig,
        verdicts,
        attempts_in_first_flush=len(flush),
        last_retry_of_first_flush_s=round(flush[-1].at - first, 2),
        next_flush_after_s=round(attempts[len(flush)].at - first, 2),
    )

    assert [a.answered for a in attempts[:-1]] == [503] * (len(attempts) - 1)
    assert attempts[-1].answered == 200
    assert 5 <= len(flush) <= 9, "about 7 attempts per 10 s"
    assert 9.9 <= attempts[len(flush)].at - first <= 11.0, "the next flush, at the deadline"
    assert len({a.body for a in attempts}) == 1
    assert committed == [attempts[-1].body]
    assert verdicts == {incident: ["admitted"] for incident in verdicts}
    assert len(verdicts) == 2


async def test_a_4xx_is_sent_again_only_at_the_next_group_interval(rig: Rig) -> None:
    """Why Responder answers 503, never 4xx, when it cannot commit: Alertmanager does not
    retry a 4xx; the same body only comes back at the group's next flush."""
    rig.plan[1] = "reject-4xx"
    start = datetime.now(UTC)
    with rig.alertmanager(group_interval="3s", repeat_interval="1h") as am:
        await post_alerts(am, ["host-1", "host-2"], start)
        await until(lambda: any(a.answered == 200 for a in rig.proxy.attempts), timeout=20)
        await asyncio.sleep(1)  # nothing more may come
    await rig.drained()
    attempts = rig.proxy.attempts
    committed = await rig.committed()
    verdicts = await rig.verdicts()
    gap = attempts[-1].at - attempts[0].at
    report("4xx", rig, verdicts, resent_after_s=round(gap, 2))

    assert [a.answered for a in attempts] == [400, 200]
    assert 2.5 <= gap <= 4.5, "not retried: sent again at the next flush (group_interval 3s)"
    assert attempts[0].body == attempts[1].body
    assert verdicts == expected_verdicts(committed)
    assert verdicts == {incident: ["admitted"] for incident in verdicts}
    assert len(verdicts) == 2


async def test_a_timeout_after_a_complete_body_is_resent_and_decided_once(rig: Rig) -> None:
    """Responder commits the body and answers 200 at once; the proxy holds the answer until
    Alertmanager gives up. Alertmanager sends the same body again at the next flush."""
    rig.plan[1] = "hang"
    start = datetime.now(UTC)
    with rig.alertmanager(group_interval="1s", repeat_interval="1h") as am:
        await post_alerts(am, ["host-1", "host-2"], start)
        await until(lambda: any(a.answered == 200 for a in rig.proxy.attempts), timeout=30)
        await asyncio.sleep(2.5)  # a few more flushes: nothing more may come
    await rig.drained()
    attempts = rig.proxy.attempts
    committed = await rig.committed()
    verdicts = await rig.verdicts()
    first, second = attempts[0], attempts[1]
    report(
        "timeout with a complete body",
        rig,
        verdicts,
        alertmanager_gave_up_after_s=first.held and round(first.held, 2),
        resent_after_s=round(second.at - first.at, 2),
    )

    assert [a.forwarded for a in attempts] == [200, 200]
    assert [a.answered for a in attempts] == [None, 200]
    assert first.held is not None and 9.5 <= first.held <= 11.0, first.held
    assert second.at - first.at < first.held + 1.5, "resent at the next flush"
    assert committed == [first.body, second.body]
    assert first.body == second.body, "the resend is the same body, byte for byte"
    assert verdicts == expected_verdicts(committed)
    assert verdicts == {incident: ["admitted", "duplicate"] for incident in verdicts}
    assert len(verdicts) == 2


async def test_a_group_resent_every_repeat_interval_is_decided_once(rig: Rig) -> None:
    start = datetime.now(UTC)
    with rig.alertmanager(group_interval="1s", repeat_interval="2s") as am:
        await post_alerts(am, ["host-1", "host-2"], start)
        await until(lambda: [a.answered for a in rig.proxy.attempts[:4]] == [200] * 4, timeout=30)
    await rig.drained()
    attempts = rig.proxy.attempts
    committed = await rig.committed()
    verdicts = await rig.verdicts()
    gaps = [round(b.at - a.at, 2) for a, b in itertools.pairwise(attempts)]
    report("resent group", rig, verdicts, repeat_gaps_s=gaps)

    assert len(attempts) >= 4 and all(a.forwarded == 200 for a in attempts)
    assert len({tuple(a.alerts()) for a in attempts}) == 1, "the same group each time"
    assert verdicts == expected_verdicts(committed)
    assert verdicts == {
        incident: ["admitted"] + ["duplicate"] * (len(committed) - 1) for incident in verdicts
    }
    assert len(verdicts) == 2


async def test_stale_resolved_alerts_and_a_new_incident(rig: Rig) -> None:
    """host-1 and host-2 fire; host-1 resolves and Prometheus keeps re-sending it resolved, so
    it comes back inside later firing webhooks of the group; then host-1 fires again, with a
    new startsAt: same fingerprint, new incident, decided again."""
    first_start = datetime.now(UTC) - timedelta(seconds=1)
    attempts = rig.proxy.attempts

    def delivered(alert: tuple[str, str, str], after: int = 0) -> Callable[[], bool]:
        return lambda: any(alert in a.alerts() for a in attempts[after:] if a.answered == 200)

    with rig.alertmanager(group_interval="1s", repeat_interval="2s") as am:
        await post_alerts(am, ["host-1", "host-2"], first_start)
        await until(lambda: len(attempts) >= 1, timeout=20)
        [host1] = [a for a in attempts[0].alerts() if a[0] == "host-1"]
        resolved = (host1[0], host1[1], "resolved")

        ends = datetime.now(UTC)
        await post_alerts(am, ["host-1"], first_start, ends)
        await until(delivered(resolved), timeout=20)
        first_resolved = next(a.number for a in attempts if resolved in a.alerts())

        async def stale_seen() -> bool:
            await post_alerts(am, ["host-1"], first_start, ends)  # as Prometheus re-sends it
            return delivered(resolved, after=first_resolved)()

        await wait_for(stale_seen, timeout=20, every=0.5)
        stale = next(a for a in attempts[first_resolved:] if resolved in a.alerts())

        second_start = datetime.now(UTC)
        await post_alerts(am, ["host-1"], second_start)

        def refire() -> list[Attempt]:
            """Attempts carrying host-1 with another startsAt."""
            return [
                a
                for a in attempts
                if any(x[0] == "host-1" and x[1] != host1[1] for x in a.alerts())
            ]

        await until(lambda: bool(refire()), timeout=20)
    await rig.drained()
    committed = await rig.committed()
    verdicts = await rig.verdicts()
    fingerprints = {
        (a["labels"]["instance"], a["startsAt"]): a["fingerprint"]
        for body in committed
        for a in json.loads(body)["alerts"]
    }
    report(
        "stale resolved, then a new incident",
        rig,
        verdicts,
        first_resolved_attempt=first_resolved,
        stale_resolved_attempt=stale.number,
        refired_attempt=refire()[0].number,
    )

    assert stale.answered == 200 and stale.number > first_resolved
    assert json.loads(stale.body)["status"] == "firing", "a stale resolved alert in a firing group"
    assert verdicts == expected_verdicts(committed)
    assert len(verdicts) == 3
    assert admitting(verdicts) == {incident: 1 for incident in verdicts}
    [old, new] = sorted(v for v in verdicts if v.startswith("host-1@"))
    assert verdicts[old].count("resolved") == 1
    assert verdicts[old][verdicts[old].index("resolved") + 1 :] != []  # the stale copies
    assert set(verdicts[old][verdicts[old].index("resolved") + 1 :]) == {"duplicate"}
    assert verdicts[new][0] == "admitted"
    host1_fingerprints = {fp for (instance, _), fp in fingerprints.items() if instance == "host-1"}
    assert len(host1_fingerprints) == 1, "the same labels: the same fingerprint"
