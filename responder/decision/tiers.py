"""Guard defaults by business tier (`tiers:` in the service catalog).

    tiers:
      0: {approval: true, max_attempts: 1}
      2: {cooldown: 10m}

Every rule's decision on an alert of a service of that tier (its `service` label, looked up
in the catalog) inherits them. A rule may tighten them (a longer cooldown, fewer attempts,
fewer active runs), never loosen them: `responder check` calls a rule that says a looser
value for a tier it covers an error, and at run time the stricter of the two wins.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from responder.decision.documents import Spec
from responder.decision.rules import GuardSpec
from responder.durations import Duration

# The defaults a tier may give, each with which of two values is the stricter.
STRICTER = {
    "approval": max,
    "cooldown": max,
    "cooldown_failed": max,
    "max_attempts": min,
    "max_active": min,
}


class TierDefaults(Spec):
    """What every remediation of a service of this tier is held to, at least."""

    approval: bool | None = Field(None, description="A person approves each run.")
    cooldown: Duration | None = Field(None, description="After a run ends, at least this long.")
    cooldown_failed: Duration | None = Field(
        None, description="After a run that did not complete, at least this long."
    )
    max_attempts: int | None = Field(None, ge=1, description="At most this many per incident.")
    max_active: int | None = Field(None, ge=1, description="At most this many runs at once.")

    def given(self) -> dict[str, Any]:
        """The defaults this tier sets (the others leave the rule as it is)."""
        return {name: value for name, value in self if value is not None}

    def tighten(self, guard: GuardSpec) -> GuardSpec:
        """The rule's policy held to these defaults: for each, the stricter of the two (a
        percentage blast radius is capped later, once the service's hosts are known)."""
        update: dict[str, Any] = {}
        for name, default in self.given().items():
            value = getattr(guard, name)
            if name == "cooldown_failed" and value is None:
                value = guard.cooldown  # the rule's cooldown after any end
            if value is None:
                update[name] = default
            elif not isinstance(value, str):  # a percentage: capped by `blast_radius`
                update[name] = STRICTER[name](value, default)
        return guard.model_copy(update=update) if update else guard

    def looser(self, guard: GuardSpec) -> list[tuple[str, str]]:
        """Each key the rule sets looser than these defaults, with what is wrong."""
        found = []
        for name, default in self.given().items():
            if name not in guard.model_fields_set:
                continue
            value = getattr(guard, name)
            if value is None or isinstance(value, str):
                continue  # unlimited is as the default says; a percentage is capped
            if STRICTER[name](value, default) != value:
                found.append(
                    (name, f"{_shown(name, value)} is looser than {_shown(name, default)}")
                )
        return found


def _shown(name: str, value: Any) -> str:
    if name.startswith("cooldown"):
        return f"{float(value):g}s"
    return str(value).lower() if isinstance(value, bool) else str(value)
