"""Alertmanager's v2 API: silences set while a remediation runs, and its active alerts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx


def silence_not_found(response: httpx.Response) -> bool:
    """Whether Alertmanager said it has no such silence.

    Since 0.26 it answers 404; 0.25 (Debian 12's) answers 500 with the JSON string
    "silence not found" (prometheus/alertmanager#3352).
    """
    if response.status_code == httpx.codes.NOT_FOUND:
        return True
    return response.status_code == httpx.codes.INTERNAL_SERVER_ERROR and (
        response.text.strip() == '"silence not found"'
    )


_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")  # needs no quoting in a filter


def quote_value(value: str) -> str:
    r"""A label value as a double-quoted matcher value Alertmanager reads back unchanged.

    Its matcher parsers (the classic one of 0.25 and the UTF-8 one of 0.27+) both take `\\`,
    `\"` and `\n` inside quotes; a value is alert data, so anything else is left as is and
    nothing in it can end the quotes or add a matcher.
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def equality_filter(name: str, value: str) -> str:
    """`name="value"`, one `filter` of `GET /api/v2/alerts` (name: a Prometheus label name)."""
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
        raise ValueError(f"not a label name: {name!r}")
    return f"{name}={quote_value(value)}"


def _equal(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": False, "isEqual": True}


def exact_matchers(
    labels: Mapping[str, str], held: Iterable[Mapping[str, str]]
) -> list[dict[str, Any]]:
    """Matchers that silence the alert with `labels` and none of the `held` alerts.

    In Alertmanager an absent label and an empty value are one thing, and `team=""` matches
    every alert without `team`: an empty value says nothing that tells this alert apart, so it
    is left out. Equality on the other labels still matches any alert that has them and more;
    for each such alert Alertmanager holds, `L=""` on a label L it has and this one lacks
    leaves it out (this alert has no L, so it still matches).
    """
    present = {name: value for name, value in labels.items() if value != ""}
    if not present:
        raise ValueError("an alert whose labels are all empty cannot be silenced exactly")
    excluded: set[str] = set()
    for other in held:
        theirs = {name: value for name, value in other.items() if value != ""}
        if theirs == present or any(theirs.get(n) != v for n, v in present.items()):
            continue  # this alert itself, or one the equality matchers do not match
        if excluded & theirs.keys():
            continue  # already left out
        excluded.add(min(theirs.keys() - present.keys()))
    return [_equal(name, value) for name, value in sorted(present.items())] + [
        _equal(name, "") for name in sorted(excluded)
    ]


class Alertmanager:
    """Sets and lifts silences that match exactly one alert (see `exact_matchers`)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def silence(self, labels: dict[str, str], lasting: float, comment: str) -> str:
        """Silence exactly this alert for `lasting` seconds; return the silence id.

        "Exactly" is among the alerts Alertmanager holds now (firing, silenced or inhibited):
        an alert that appears later with this alert's labels and more is silenced too.
        """
        held = await self._held_label_sets(labels.get("alertname", ""))
        now = datetime.now(UTC)
        body = {
            "matchers": exact_matchers(labels, held),
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(seconds=lasting)).isoformat(),
            "createdBy": "responder",
            "comment": comment,
        }
        response = await self._http.post("/api/v2/silences", json=body)
        response.raise_for_status()
        return str(response.json()["silenceID"])

    async def extend(self, silence_id: str, lasting: float) -> str | None:
        """Make a silence last `lasting` seconds from now; the id it has then (Alertmanager
        may give the updated silence a new one). None when it is gone or expired: someone
        lifted it, and it is not set again."""
        response = await self._http.get(f"/api/v2/silence/{silence_id}")
        if silence_not_found(response):
            return None
        response.raise_for_status()
        silence = response.json()
        if silence.get("status", {}).get("state") == "expired":
            return None
        body = {key: silence[key] for key in ("id", "matchers", "startsAt", "createdBy", "comment")}
        body["endsAt"] = (datetime.now(UTC) + timedelta(seconds=lasting)).isoformat()
        response = await self._http.post("/api/v2/silences", json=body)
        response.raise_for_status()
        return str(response.json()["silenceID"])

    async def lift(self, silence_id: str) -> None:
        """Expire a silence; one already gone counts as lifted."""
        response = await self._http.delete(f"/api/v2/silence/{silence_id}")
        if not silence_not_found(response):
            response.raise_for_status()

    async def alerts(
        self, receiver: str | None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds as firing (suppressed ones too), routed to
        `receiver` if given and carrying each of `labels` exactly (an empty value: without
        that label): `GET /api/v2/alerts`, each with `status.state`."""
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("active", "true"),
            ("silenced", "true"),
            ("inhibited", "true"),
        ]
        if receiver:
            params.append(("receiver", re.escape(receiver)))  # Alertmanager anchors the regex
        params.extend(("filter", equality_filter(n, v)) for n, v in sorted((labels or {}).items()))
        response = await self._http.get("/api/v2/alerts", params=params)
        response.raise_for_status()
        alerts = response.json()
        if not isinstance(alerts, list):
            raise ValueError("GET /api/v2/alerts did not answer a list")
        return alerts

    async def _held_label_sets(self, alertname: str) -> list[dict[str, str]]:
        params: dict[str, str] = {
            "active": "true",
            "silenced": "true",
            "inhibited": "true",
            "unprocessed": "true",
        }
        if _PLAIN_VALUE.match(alertname):
            params["filter"] = f'alertname="{alertname}"'
        response = await self._http.get("/api/v2/alerts", params=params)
        response.raise_for_status()
        alerts = response.json()
        if not isinstance(alerts, list):
            raise ValueError("GET /api/v2/alerts did not answer a list")
        return [dict(a.get("labels") or {}) for a in alerts if isinstance(a, dict)]

    async def close(self) -> None:
        await self._http.aclose()
