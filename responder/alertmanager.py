"""Alertmanager's v2 API: silences set while a remediation runs, and its active alerts."""

from __future__ import annotations

import re
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


class Alertmanager:
    """Sets and lifts silences; every label of the alert becomes an equality matcher."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def silence(self, labels: dict[str, str], lasting: float, comment: str) -> str:
        """Silence exactly this alert for `lasting` seconds; return the silence id."""
        now = datetime.now(UTC)
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in sorted(labels.items())
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(seconds=lasting)).isoformat(),
            "createdBy": "responder",
            "comment": comment,
        }
        response = await self._http.post("/api/v2/silences", json=body)
        response.raise_for_status()
        return str(response.json()["silenceID"])

    async def lift(self, silence_id: str) -> None:
        """Expire a silence; one already gone counts as lifted."""
        response = await self._http.delete(f"/api/v2/silence/{silence_id}")
        if not silence_not_found(response):
            response.raise_for_status()

    async def alerts(self, receiver: str | None) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds as firing (suppressed ones too), routed to
        `receiver` if given: `GET /api/v2/alerts`, each with `status.state`."""
        params = {"active": "true", "silenced": "true", "inhibited": "true"}
        if receiver:
            params["receiver"] = re.escape(receiver)  # Alertmanager anchors the regex
        response = await self._http.get("/api/v2/alerts", params=params)
        response.raise_for_status()
        alerts = response.json()
        if not isinstance(alerts, list):
            raise ValueError("GET /api/v2/alerts did not answer a list")
        return alerts

    async def close(self) -> None:
        await self._http.aclose()
