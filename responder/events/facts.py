"""Facts: named sets of fields that rules require (`when`) or exclude (`unless`).

Rules assert them, the service catalog and maintenance windows load them, and events become
them. Every fact expires.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    """A named set of fields, with an expiry and where it came from."""

    name: str
    fields: Mapping[str, str]
    expires_at: float
    source: str = "rule"

    @property
    def id(self) -> str:
        return fact_id(self.name, self.fields)

    def shown(self) -> str:
        """The fact as the decision log shows it: `name{field=value,...}`."""
        fields = ",".join(f"{k}={v}" for k, v in sorted(self.fields.items()))
        return f"{self.name}{{{fields}}}"


def fact_id(name: str, fields: Mapping[str, str]) -> str:
    """A fact's identity: its name and fields, whatever their order."""
    digest = hashlib.sha256(json.dumps([name, sorted(fields.items())]).encode()).hexdigest()
    return f"fact:{name}:{digest[:32]}"
