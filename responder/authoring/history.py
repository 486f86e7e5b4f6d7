"""A replay's history: the webhooks Responder received (or would have), each at its time.

Three sources, one shape (`Delivery`: a time, how its body is read, the body):

- Responder's own inbox (`from_inbox`): every Alertmanager webhook and CloudEvent committed,
  at its arrival time. Outcomes and runs requested by hand are left out: a replay makes its
  own outcomes, and nobody asks for a run in the past.
- Prometheus's `ALERTS` series (`from_prometheus`): each alert's firing episodes rebuilt
  from `/api/v1/query_range`, sent as Alertmanager would send them, one alert per webhook,
  when it started firing (`startsAt` is when it became pending) and when it stopped. The
  series carries no annotations, and its times are those of the query's steps.
- A directory of Alertmanager webhook bodies (`from_webhooks`): each `*.json` file at the
  newest time its alerts name (a firing alert's `startsAt`, a resolved one's `endsAt`), or
  at the file's modification time; ties in file-name order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from responder.authoring.sandbox import fingerprint_of
from responder.events.webhook import AlertmanagerWebhook
from responder.exceptions import PayloadError, StoreUnavailable
from responder.storage.inbox import InboxSource
from responder.storage.store import Store

# Prometheus answers at most 11,000 points per series; a longer range is asked in parts.
POINTS_PER_QUERY = 10_000
# Labels of the ALERTS series that are not the alert's.
SERIES_LABELS = ("__name__", "alertstate")
# The inbox rows a replay takes: what came from outside.
REPLAYED_SOURCES = (InboxSource.ALERTMANAGER, InboxSource.CLOUDEVENTS)

WebhookTime = Literal["alerts", "mtime"]


@dataclass(frozen=True, order=True)
class Delivery:
    """One body as it reached (or would have reached) Responder, at `at` (epoch seconds)."""

    at: float
    order: int
    source: InboxSource = field(compare=False)
    body: bytes = field(compare=False, repr=False)


@dataclass(frozen=True)
class History:
    """Deliveries in time order, and the files that were not webhooks (file, why)."""

    deliveries: list[Delivery]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def alerts(self) -> int:
        """How many alerts (firing or resolved) the webhooks carry."""
        return sum(
            len(json.loads(d.body).get("alerts", []))
            for d in self.deliveries
            if d.source == InboxSource.ALERTMANAGER
        )


def in_range(deliveries: list[Delivery], start: float | None, end: float | None) -> History:
    """The deliveries within [start, end], in time order."""
    kept = [
        d
        for d in sorted(deliveries)
        if (start is None or d.at >= start) and (end is None or d.at <= end)
    ]
    return History(kept)


def from_webhooks(directory: Path, time: WebhookTime = "alerts") -> History:
    """Every `*.json` Alertmanager webhook body in `directory`, in time order; files that
    are not webhooks are skipped, each with its reason."""
    if not directory.is_dir():
        raise PayloadError(f"--webhooks {directory}: not a directory")
    found: list[tuple[float, str, bytes]] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(directory.glob("*.json")):
        try:
            body = path.read_bytes()
            webhook = AlertmanagerWebhook.model_validate_json(body)
        except OSError as exc:
            raise PayloadError(f"cannot read {path}: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(body)"
            skipped.append((str(path), f"not an Alertmanager webhook: {where}: {first['msg']}"))
            continue
        if time == "mtime":
            at = path.stat().st_mtime
        else:
            at = max(
                (a.ends_at if a.status == "resolved" and a.ends_at else a.starts_at).timestamp()
                for a in webhook.alerts
            )
        found.append((at, path.name, body))
    found.sort()
    deliveries = [
        Delivery(at, i, InboxSource.ALERTMANAGER, body) for i, (at, _, body) in enumerate(found)
    ]
    return History(deliveries, skipped)


async def from_inbox(url: str, start: float | None, end: float | None) -> History:
    """The Alertmanager webhooks and CloudEvents a store's inbox received in [start, end],
    in arrival order. The store is only read."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise PayloadError(f"--from-inbox {url!r}: not a database URL") from None
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        raise PayloadError(f"--from-inbox: no store file {parsed.database!r}")
    store = Store(url)
    try:
        rows = await store.inbox.received(REPLAYED_SOURCES, start, end)
    except StoreUnavailable as exc:
        raise PayloadError(f"--from-inbox: cannot read the store's inbox: {exc}") from None
    except Exception as exc:  # a URL that names no store, a missing table
        raise PayloadError(f"--from-inbox: cannot read the store's inbox: {exc}") from None
    finally:
        await store.close()
    return History([Delivery(at, i, source, body) for i, (at, source, body) in enumerate(rows)])


def from_prometheus(
    url: str, start: float, end: float, step: float, client: httpx.Client | None = None
) -> History:
    """The alerts Prometheus's `ALERTS` series shows firing in [start, end], as webhooks."""
    if step <= 0 or end <= start:
        raise PayloadError("--prometheus needs --start before --end and a --step above 0")
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, str]]] = {}
    with client or httpx.Client(timeout=30) as http:
        part = start
        while part <= end:
            last = min(end, part + step * (POINTS_PER_QUERY - 1))
            for metric, values in _query_range(http, url, part, last, step):
                labels = tuple(sorted((k, v) for k, v in metric.items() if k not in SERIES_LABELS))
                state = metric.get("alertstate", "firing")
                series.setdefault(labels, []).extend((float(t), state) for t, _ in values)
            part = last + step
    deliveries: list[Delivery] = []
    for labels, samples in sorted(series.items()):
        for episode in _episodes(sorted(samples), step):
            deliveries.extend(_episode_webhooks(dict(labels), episode, step, end))
    ordered = sorted(deliveries, key=lambda d: (d.at, d.order))
    return History([Delivery(d.at, i, d.source, d.body) for i, d in enumerate(ordered)])


def _query_range(
    http: httpx.Client, url: str, start: float, end: float, step: float
) -> list[tuple[dict[str, str], list[list[Any]]]]:
    """One `query_range` of `ALERTS`: each series' labels and its [time, value] points."""
    where = f"{url.rstrip('/')}/api/v1/query_range"
    try:
        answer = http.get(
            where, params={"query": "ALERTS", "start": start, "end": end, "step": step}
        )
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PayloadError(f"--prometheus {url}: cannot query ALERTS: {exc}") from None
    if answer.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        detail = body.get("error") if isinstance(body, dict) else None
        raise PayloadError(
            f"--prometheus {url}: query_range answered {answer.status_code}: "
            f"{str(detail or body)[:500]}"
        )
    try:
        return [
            (
                {str(k): str(v) for k, v in r["metric"].items()},
                [[float(t), v] for t, v in r["values"]],
            )
            for r in body["data"]["result"]
        ]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PayloadError(
            f"--prometheus {url}: query_range's answer is not a matrix of series "
            "(data.result[].metric, data.result[].values)"
        ) from None


def _episodes(samples: list[tuple[float, str]], step: float) -> list[list[tuple[float, str]]]:
    """Samples split where a step is missing: each part is one pending-then-firing run."""
    runs: list[list[tuple[float, str]]] = []
    for at, state in samples:
        if runs and at - runs[-1][-1][0] <= step * 1.5:
            runs[-1].append((at, state))
        else:
            runs.append([(at, state)])
    return runs


def _episode_webhooks(
    labels: dict[str, str], episode: list[tuple[float, str]], step: float, end: float
) -> list[Delivery]:
    """The webhooks Alertmanager would send for one episode: firing when it started firing
    (`startsAt` when it became pending), resolved one step after its last sample, unless it
    was still firing at the range's end. An episode that never fired sends nothing."""
    firing = [at for at, state in episode if state == "firing"]
    if not firing:
        return []
    began, fired, last = episode[0][0], firing[0], firing[-1]
    fingerprint = fingerprint_of(labels)
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {},
        "startsAt": _iso(began),
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }
    sent = [Delivery(fired, 0, InboxSource.ALERTMANAGER, _body([alert]))]
    if last + step <= end:
        resolved = {**alert, "status": "resolved", "endsAt": _iso(last + step)}
        sent.append(Delivery(last + step, 1, InboxSource.ALERTMANAGER, _body([resolved])))
    return sent


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _body(alerts: list[dict[str, Any]]) -> bytes:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    common = alerts[0]["labels"] if len(alerts) == 1 else {}
    return json.dumps(
        {
            "version": "4",
            "groupKey": "{}:{}",
            "status": status,
            "receiver": "responder",
            "groupLabels": {"alertname": alerts[0]["labels"].get("alertname", "")},
            "commonLabels": common,
            "commonAnnotations": {},
            "externalURL": "",
            "truncatedAlerts": 0,
            "alerts": alerts,
        }
    ).encode()
