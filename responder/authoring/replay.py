"""`responder replay`: a history of alerts through today's rules and proposed ones, compared.

Each rule set gets its own sandbox (`authoring.sandbox`: the real engine loop and guard on a
throwaway store), and the history is delivered to it at its recorded times on the sandbox's
clock. Timers fire at their time in between (`firing_for`, the ladder's next attempts, facts
expiring, refused incidents decided again). Nothing is dispatched: each admitted run ends
`run_seconds` after its admission, in `run_state`, and its outcome goes back to the engine
as a real one would.

The two decision logs are then compared per incident:

- a *remediation* is a rule's admitted runs for an incident (rule, flow, key, incident);
- a *refusal* is a rule refused for an incident by one guard check (`budget` and
  `max_active`, the blast radius, among them);
- a *page* is an admitted run of a paging rule (its name matches `page_rules`) or of the
  `notify` flow, or an incident that climbed the ladder to `exhausted` (a `max_attempts`
  refusal).

A change is `new-…` (only the proposed rules do it), `lost-…` (only today's do), or
`changed-…` (both, a different number of times).
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from responder.authoring.history import History
from responder.authoring.sandbox import Sandbox
from responder.decision.escalation import TOP_OF_THE_LADDER
from responder.decision.rules import RuleBook
from responder.decision.services import ServiceCatalog
from responder.exceptions import PayloadError

KINDS = ("remediation", "refusal", "page")
CHANGES = ("new", "lost", "changed")
# Fields a --fail-on filter may name.
FILTER_FIELDS = ("rule", "flow", "key", "alertname", "service", "tier", "refusal")
# Shorthands of --fail-on.
ALIASES = {
    "budget": "new-refusal:refusal=budget",
    "blast-radius": "new-refusal:refusal=max_active",
    "exhausted": "new-page:refusal=max_attempts",
}
NOTIFY_FLOW = "notify"
# The totals a report shows, and their names in the table.
TOTALS = {
    "remediation": "remediations",
    "refusal": "refusals",
    "page": "pages",
    "budget": "budget hits",
    "blast-radius": "blast radius",
}
BLAST_RADIUS = "max_active"


@dataclass(frozen=True)
class Item:
    """One remediation, refusal or page of one incident, and how often it happened."""

    kind: str
    rule: str
    flow: str
    key: str
    incident: str
    alertname: str
    service: str
    tier: str
    refusal: str = ""


@dataclass(frozen=True)
class Change:
    """An item whose count differs between today's rules and the proposed ones."""

    change: str  # new, lost, changed
    item: Item
    current: int
    proposed: int

    @property
    def name(self) -> str:
        """`new-remediation`, `lost-refusal`, ... (what --fail-on names)."""
        return f"{self.change}-{self.item.kind}"

    def as_json(self) -> dict[str, Any]:
        return {
            "change": self.name,
            **asdict(self.item),
            "current": self.current,
            "proposed": self.proposed,
        }


@dataclass(frozen=True)
class Replayed:
    """What one rule set did with the history: its items, and totals by verdict."""

    items: Counter[Item]
    verdicts: Counter[str]

    def totals(self) -> dict[str, int]:
        kinds = Counter[str]()
        for item, count in self.items.items():
            kinds[item.kind] += count
            if item.refusal in ("budget", BLAST_RADIUS) and item.kind == "refusal":
                kinds["budget" if item.refusal == "budget" else "blast-radius"] += count
        return {**{k: kinds[k] for k in (*KINDS, "budget", "blast-radius")}, **self.verdicts}


@dataclass(frozen=True)
class Comparison:
    """Today's and the proposed rules' outcomes, and what changed, in a stable order."""

    current: Replayed
    proposed: Replayed
    changes: list[Change] = field(default_factory=list)


@dataclass(frozen=True)
class FailOn:
    """A line the difference must not cross: changes named `change-kind` whose fields
    equal the filter's (`new-remediation:tier=0,rule=restart-*`), more than `above`."""

    spec: str
    change: str
    kind: str
    filters: tuple[tuple[str, str], ...] = ()
    above: int = 0

    def crossed(self, changes: list[Change]) -> list[Change]:
        """The changes over this line (none unless there are more than `above`)."""
        hit = [
            c
            for c in changes
            if c.change == self.change
            and c.item.kind == self.kind
            and all(fnmatch.fnmatchcase(str(getattr(c.item, f)), v) for f, v in self.filters)
        ]
        return hit if len(hit) > self.above else []


_FAIL_ON = re.compile(
    r"^(?P<change>[a-z]+)-(?P<kind>[a-z]+)(?::(?P<filters>[^>]*))?(?:>(?P<above>\d+))?$"
)


def parse_fail_on(spec: str) -> FailOn:
    """`CHANGE-KIND[:FIELD=GLOB,...][>N]`, or a shorthand (`budget`, `blast-radius`,
    `exhausted`); a clear error naming what is accepted otherwise."""
    text = ALIASES.get(spec.strip(), spec.strip())
    accepted = (
        f"accepted: CHANGE-KIND[:FIELD=VALUE,...][>N] with CHANGE one of {', '.join(CHANGES)}, "
        f"KIND one of {', '.join(KINDS)}, FIELD one of {', '.join(FILTER_FIELDS)} (VALUE may "
        f"use * and ?), or one of {', '.join(ALIASES)}"
    )
    found = _FAIL_ON.match(text)
    if found is None or found["change"] not in CHANGES or found["kind"] not in KINDS:
        raise PayloadError(f"--fail-on {spec!r}: not understood; {accepted}")
    filters: list[tuple[str, str]] = []
    for part in filter(None, (found["filters"] or "").split(",")):
        name, equals, value = part.partition("=")
        if not equals or name.strip() not in FILTER_FIELDS or not value.strip():
            raise PayloadError(f"--fail-on {spec!r}: filter {part!r} not understood; {accepted}")
        filters.append((name.strip(), value.strip()))
    return FailOn(spec, found["change"], found["kind"], tuple(filters), int(found["above"] or 0))


async def replay(
    history: History,
    book: RuleBook,
    catalog: ServiceCatalog,
    rule_vars: dict[str, str],
    *,
    run_seconds: float = 60.0,
    run_state: str = "COMPLETED",
    until: float | None = None,
) -> list[dict[str, Any]]:
    """Deliver the history to a sandbox running `book`, each body at its time, then let
    time run on to `until` (default: the last delivery, plus `run_seconds`); the decision
    log, oldest first."""
    sandbox = Sandbox(book, catalog, rule_vars, run_seconds=run_seconds, run_state=run_state)
    if history.deliveries:
        sandbox.clock.now = history.deliveries[0].at
    async with sandbox:
        for at, together in itertools.groupby(history.deliveries, key=lambda d: d.at):
            await sandbox.run_until(at)
            await sandbox.send_together([(d.source, d.body) for d in together])
        last = history.deliveries[-1].at if history.deliveries else sandbox.clock.now
        await sandbox.run_until(until if until is not None else last + run_seconds)
        return await sandbox.decisions()


def outcome_of(
    decisions: list[dict[str, Any]], catalog: ServiceCatalog, page_rules: str = "page-*"
) -> Replayed:
    """A decision log as items: remediations, refusals and pages per incident."""
    items = Counter[Item]()
    verdicts = Counter[str]()
    for d in decisions:
        verdicts[d["verdict"]] += 1
        if d["rule"] is None:
            continue
        if d["verdict"] == "admitted":
            items[_item(d, catalog, "remediation")] += 1
            if fnmatch.fnmatchcase(d["rule"], page_rules) or d["flow"] == NOTIFY_FLOW:
                items[_item(d, catalog, "page")] += 1
        elif d["verdict"] == "refused":
            items[_item(d, catalog, "refusal", d["refusal"] or "")] += 1
            if d["refusal"] == TOP_OF_THE_LADDER:
                items[_item(d, catalog, "page", TOP_OF_THE_LADDER)] += 1
    return Replayed(items, verdicts)


def _item(d: dict[str, Any], catalog: ServiceCatalog, kind: str, refusal: str = "") -> Item:
    """A decision record as an item of `kind`, with its service's tier from the catalog."""
    service = (d["labels"] or {}).get("service", "")
    spec = catalog.services.get(service)
    return Item(
        kind,
        d["rule"],
        d["flow"] or "",
        d["guard_key"] or "",
        d["incident"],
        d["alertname"],
        service,
        "" if spec is None else str(spec.tier),
        refusal,
    )


def compare(current: Replayed, proposed: Replayed) -> Comparison:
    """What changed from today's rules to the proposed ones, item by item."""
    changes: list[Change] = []
    for item in sorted({*current.items, *proposed.items}, key=_order):
        before, after = current.items[item], proposed.items[item]
        if before == after:
            continue
        change = "new" if not before else "lost" if not after else "changed"
        changes.append(Change(change, item, before, after))
    return Comparison(current, proposed, changes)


def _order(item: Item) -> tuple[int, str, str, str, str]:
    return (KINDS.index(item.kind), item.rule, item.incident, item.key, item.refusal)


async def replay_both(
    history: History,
    current: RuleBook,
    proposed: RuleBook,
    catalog: ServiceCatalog,
    rule_vars: dict[str, str],
    *,
    run_seconds: float = 60.0,
    run_state: str = "COMPLETED",
    page_rules: str = "page-*",
) -> Comparison:
    """The history through both rule sets, one after the other, compared."""
    outcomes = []
    for book in (current, proposed):
        decisions = await replay(
            history, book, catalog, rule_vars, run_seconds=run_seconds, run_state=run_state
        )
        outcomes.append(outcome_of(decisions, catalog, page_rules))
    return compare(*outcomes)


def report(
    comparison: Comparison, history: History, lines: list[FailOn]
) -> tuple[dict[str, Any], list[str]]:
    """The comparison as JSON, and the --fail-on lines it crosses (their specs)."""
    crossed = [line.spec for line in lines if line.crossed(comparison.changes)]
    span = [d.at for d in history.deliveries]
    document = {
        "history": {
            "deliveries": len(history.deliveries),
            "alerts": history.alerts,
            "from": min(span, default=None),
            "to": max(span, default=None),
            "skipped": [{"file": f, "reason": r} for f, r in history.skipped],
        },
        "current": comparison.current.totals(),
        "proposed": comparison.proposed.totals(),
        "changes": [c.as_json() for c in comparison.changes],
        "failed": crossed,
    }
    return document, crossed


def table(document: dict[str, Any]) -> list[str]:
    """The JSON report as lines for people: totals side by side, then each change."""
    seen = document["history"]
    lines = [
        f"replayed {seen['deliveries']} webhooks ({seen['alerts']} alerts)",
        *(f"skipped {s['file']}: {s['reason']}" for s in seen["skipped"]),
        f"{'':<14}{'current':>9}{'proposed':>10}",
    ]
    for name, shown in TOTALS.items():
        before, after = document["current"][name], document["proposed"][name]
        lines.append(f"{shown:<14}{before:>9}{after:>10}{'' if before == after else '  *'}")
    changes = document["changes"]
    lines.append(f"{len(changes)} change(s)" + (":" if changes else ""))
    if changes:
        lines.append(
            f"  {'change':<20} {'rule':<28} {'now':>3} {'new':>3}  flow / key / refusal, incident"
        )
    for c in changes:
        what = " ".join(
            part for part in (c["flow"], c["key"], c["refusal"] and f"[{c['refusal']}]") if part
        )
        tier = f" tier {c['tier']}" if c["tier"] else ""
        lines.append(
            f"  {c['change']:<20} {c['rule']:<28} {c['current']:>3} {c['proposed']:>3}  "
            f"{what}, {c['alertname']} {c['incident']}{tier}"
        )
    for spec in document["failed"]:
        lines.append(f"FAIL --fail-on {spec}: crossed")
    return lines
