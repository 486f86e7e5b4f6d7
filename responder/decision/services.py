"""The service catalog (`config/services.yaml`): what each service is, and maintenance.

Each service becomes a `service` fact, so rules join it instead of repeating tiers and
owners. Maintenance windows (`responder.decision.maintenance`) refuse every rule's decision on
the alerts they cover, through the guard; a window that gives `labels` is also a
`maintenance` fact while it is in effect, for rules that join it:

    when:   [{fact: service, where: ['name="{{ alert.labels.service }}"', 'tier="0"']}]
    unless: [{fact: maintenance, where: ['instance="{{ alert.labels.instance }}"']}]

Rule templates also see the alert's service entry as `service` (from its `service` label).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from responder.decision.documents import Spec, load_document
from responder.decision.maintenance import MAX_WINDOWS, MaintenanceWindow
from responder.decision.tiers import TierDefaults
from responder.events.facts import Fact
from responder.events.webhook import LabelName
from responder.exceptions import CatalogError

# Configured services never expire on their own; a reload replaces them.
SERVICE_TTL = 10 * 365 * 86400.0

ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")]
BatchSize = Annotated[str, StringConstraints(pattern=r"^(100|[1-9][0-9]?)%$|^[1-9][0-9]{0,4}$")]


class BatchPolicy(Spec):
    """How a remediation over many hosts of this service is rolled out."""

    size: BatchSize = Field("1", description="Hosts per batch: a count or a percentage.")
    pause: float = Field(0.0, ge=0, description="Seconds between batches.")
    max_failures: int = Field(0, ge=0, description="Failed hosts that stop the rollout.")


class ServiceSpec(Spec):
    """One service: its business tier, who owns it, and how it may be remediated."""

    tier: int = Field(ge=0, le=9, description="0 is the most critical.")
    owner: str = Field("", max_length=200)
    approval: bool = Field(False, description="Remediations need a person's approval.")
    hosts: int | None = Field(None, ge=1, description="Hosts it runs on (for % budgets).")
    batch: BatchPolicy = Field(default_factory=BatchPolicy)
    host_label: LabelName | None = Field(
        None,
        description="The label naming the host of this service's alerts (`alert.host` in "
        "rules); default `instance`, without its port.",
    )


class ServiceCatalog(Spec):
    """The whole `services.yaml`."""

    services: dict[ServiceName, ServiceSpec] = Field(default_factory=dict)
    tiers: dict[Annotated[int, Field(ge=0, le=9)], TierDefaults] = Field(
        default_factory=dict,
        description="Guard defaults by tier, which rules inherit and may only tighten.",
    )
    maintenance: list[MaintenanceWindow] = Field(
        default_factory=list,
        max_length=MAX_WINDOWS,
        description="Maintenance windows (decision.maintenance): the guard refuses every "
        "rule's decision on the alerts they cover while they are in effect.",
    )

    @property
    def windows(self) -> tuple[MaintenanceWindow, ...]:
        """The catalog's windows, each named (`catalog-N` where the file names none)."""
        return tuple(
            w if w.name else w.model_copy(update={"name": f"catalog-{i}"})
            for i, w in enumerate(self.maintenance, start=1)
        )

    def facts(self, now: float | None = None) -> list[Fact]:
        """The catalog as facts: one per service, one per live maintenance window."""
        now = time.time() if now is None else now
        found = [
            Fact(
                "service",
                {
                    "name": name,
                    "tier": str(spec.tier),
                    "owner": spec.owner,
                    "approval": "true" if spec.approval else "false",
                },
                now + SERVICE_TTL,
                source="catalog",
            )
            for name, spec in self.services.items()
        ]
        for window in self.maintenance:
            # A window giving `labels` is a `maintenance` fact while in effect, for the
            # rules that say `unless: [{fact: maintenance, ...}]`.
            occurrence = window.occurrence(now) if window.labels else None
            if occurrence is not None:
                found.append(
                    Fact(
                        "maintenance",
                        {**window.labels, "reason": window.reason},
                        occurrence[1],
                        source="catalog",
                    )
                )
        return found

    def service_of(self, labels: dict[str, str]) -> dict[str, Any]:
        """The catalog entry of an alert's `service` label, for templates ({} if none)."""
        spec = self.services.get(labels.get("service", ""))
        return {} if spec is None else {"name": labels["service"], **spec.model_dump()}

    def defaults_of(self, service: dict[str, Any]) -> TierDefaults | None:
        """The guard defaults of a service's tier (its catalog entry); None if it has none."""
        tier = service.get("tier")
        return None if tier is None else self.tiers.get(int(tier))


def load_services(path: Path) -> ServiceCatalog:
    """Load `services.yaml`; a missing file is an empty catalog."""
    if not path.exists():
        return ServiceCatalog()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read: {exc}", file=str(path)) from None
    catalog, _ = load_document(text, str(path), ServiceCatalog, CatalogError)
    return catalog or ServiceCatalog()
