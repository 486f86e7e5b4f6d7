"""Maintenance windows: a start, an end, an optional recurrence, and the alerts they cover.

A window covers an alert when every selector it gives agrees: its label matchers (`match`,
the rules' syntax), its `services` (the alert's `service` label) and its `hosts` (the alert's
host identity, `alert.host`). While a window covering an alert is in effect the guard refuses
every rule's decision on it (unless the rule says `guard: {maintenance: ignore}`), naming the
window, and the incident waits for the window's end; then it is decided again.

Times without an offset are wall-clock times in the window's `timezone` (an IANA name,
default UTC). A recurring window repeats from `start` by an RFC 5545 RRULE
(`FREQ=WEEKLY;BYDAY=SU;BYHOUR=2`: the recurrence rule of a calendar event), each occurrence
as long as `end - start`; `until` in the rule ends the series. The windows come from the
catalog (`maintenance:` in services.yaml), the API and the CLI (`responder maintenance`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rrulestr  # type: ignore[import-untyped]
from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    StringConstraints,
    model_validator,
)

from responder.decision.documents import Spec
from responder.decision.hosts import canonical_host
from responder.decision.matchers import Matcher
from responder.decision.rules import MatcherText, parsed_matcher
from responder.events.webhook import LabelName

WindowName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
Selector = Annotated[str, StringConstraints(min_length=1, max_length=253)]
# How often a window may recur: not more often than hourly.
FREQUENCIES = ("HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
# At most this many windows are in force (catalog and stored together).
MAX_WINDOWS = 1000


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name[:60]!r}; an IANA name, e.g. UTC or Europe/Paris"
        ) from None
    return name


def _recurrence(text: str) -> str:
    rule = text.strip().removeprefix("RRULE:")
    parts = dict(p.partition("=")[::2] for p in rule.upper().split(";") if p)
    if parts.get("FREQ") not in FREQUENCIES:
        raise ValueError(
            "an RFC 5545 RRULE with FREQ one of " + ", ".join(FREQUENCIES) + ", e.g. "
            "FREQ=WEEKLY;BYDAY=SU (the start gives the time of day)"
        )
    if "DTSTART" in rule.upper() or "\n" in rule:
        raise ValueError("one RRULE line, without DTSTART: the window's start is its start")
    try:
        rrulestr(rule, dtstart=datetime(2000, 1, 1, tzinfo=UTC))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an RRULE: {exc}") from None
    return rule


class MaintenanceWindow(Spec):
    """One maintenance window (see the module's docstring)."""

    name: WindowName | None = Field(
        None, description="Unique; the API and CLI require it, the catalog numbers its own."
    )
    reason: str = Field(min_length=1, max_length=1000, description="Why, e.g. a ticket.")
    start: datetime | None = Field(
        None, description="When it begins; none: it is in effect until `end`."
    )
    end: datetime = Field(
        validation_alias=AliasChoices("end", "until"),
        description="When it ends (for a recurring window: the first occurrence's end).",
    )
    timezone: Annotated[str, AfterValidator(_zone)] = Field(
        "UTC", description="The IANA time zone of times written without an offset."
    )
    recurrence: Annotated[str, AfterValidator(_recurrence)] | None = Field(
        None, description="An RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=SU."
    )
    match: list[MatcherText] = Field(
        default_factory=list, max_length=20, description="Label matchers, as in rules."
    )
    labels: dict[LabelName, str] = Field(
        default_factory=dict, description="Exact labels (the catalog's older form of match)."
    )
    services: list[Selector] = Field(default_factory=list, max_length=100)
    hosts: list[Selector] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _consistent(self) -> MaintenanceWindow:
        if not (self.match or self.labels or self.services or self.hosts):
            raise ValueError(
                "a window needs match, services or hosts (labels in the catalog); to cover "
                "every alert say match: ['alertname=~\".+\"']"
            )
        if self.recurrence is not None and self.start is None:
            raise ValueError("a recurring window needs its start")
        if self.start is not None and self._at(self.end) <= self._at(self.start):
            raise ValueError("end must be after start")
        return self

    def _at(self, moment: datetime) -> datetime:
        zone = ZoneInfo(self.timezone)
        return moment.astimezone(zone) if moment.tzinfo else moment.replace(tzinfo=zone)

    def covers(self, labels: dict[str, str], host: str) -> bool:
        """Whether the window covers an alert with these labels and host identity (as
        `canonical_host` writes it)."""
        exact, matchers, services, hosts = self.selectors
        for name, value in exact:
            if labels.get(name) != value:
                return False
        for matcher in matchers:
            if not matcher.matches(labels):
                return False
        if services and labels.get("service") not in services:
            return False
        return not hosts or host in hosts

    @cached_property
    def selectors(
        self,
    ) -> tuple[tuple[tuple[str, str], ...], tuple[Matcher, ...], frozenset[str], frozenset[str]]:
        """The window's selectors, parsed once: exact labels, matchers, services, hosts."""
        return (
            tuple(self.labels.items()),
            tuple(parsed_matcher(m) for m in self.match),
            frozenset(self.services),
            frozenset(canonical_host(h) for h in self.hosts),
        )

    @cached_property
    def _bounds(self) -> tuple[float, float]:
        """The first (or only) occurrence's start and end, epoch seconds."""
        start = -math.inf if self.start is None else self._at(self.start).timestamp()
        return start, self._at(self.end).timestamp()

    def occurrence(self, now: float) -> tuple[float, float] | None:
        """The start and end (epoch seconds) of the occurrence in effect at `now`, if any.

        A recurring window remembers the occurrence it found and the next one's start: a
        decision between the two costs no walk along the series."""
        start, end = self._bounds
        if self.recurrence is None:
            return (start, end) if start <= now < end else None
        found = self._found
        if not found or not found[0][0] <= now < found[0][1]:
            found[:] = [self._around(now)]
        last, finish = found[0][2], found[0][3]
        return (last, finish) if last <= now < finish else None

    @cached_property
    def _found(self) -> list[tuple[float, float, float, float]]:
        """The occurrence found last, as `_around` gives it (a cache, not part of the
        window: a plain list, which a frozen model may hold and change)."""
        return []

    def _around(self, now: float) -> tuple[float, float, float, float]:
        """For a recurring window: the span [from, to) over which the occurrence starting
        last at or before `now` (its start and end) stays the one to look at."""
        assert self.start is not None and self.recurrence is not None
        first = self._at(self.start)
        series = _series(self.recurrence, first)
        moment = datetime.fromtimestamp(now, first.tzinfo)
        last: datetime | None = series.before(moment, inc=True)
        after: datetime | None = series.after(moment)
        until = math.inf if after is None else after.timestamp()
        if last is None:
            return -math.inf, until, math.inf, math.inf
        finish = last + (self._at(self.end) - first)
        return last.timestamp(), until, last.timestamp(), finish.timestamp()

    def next_start(self, now: float) -> float | None:
        """When the window is next in effect after `now` (None: never again)."""
        if self.recurrence is None:
            begins = None if self.start is None else self._at(self.start).timestamp()
            return begins if begins is not None and begins > now else None
        assert self.start is not None
        start = self._at(self.start)
        after: datetime | None = _series(self.recurrence, start).after(
            datetime.fromtimestamp(now, start.tzinfo)
        )
        return None if after is None else after.timestamp()

    def shown(self, now: float) -> dict[str, Any]:
        """The window as the API and CLI show it: its spec, and whether it is in effect."""
        occurrence = self.occurrence(now)
        return {
            **self.model_dump(mode="json", exclude_defaults=True),
            "in_effect": occurrence is not None,
            "in_effect_until": None if occurrence is None else occurrence[1],
            "next_start": self.next_start(now),
        }


@lru_cache(maxsize=1024)
def _series(recurrence: str, start: datetime) -> rrule:
    return rrulestr(recurrence, dtstart=start, cache=True)


def covering(
    windows: list[MaintenanceWindow], labels: dict[str, str], host: str, now: float
) -> tuple[MaintenanceWindow, float] | None:
    """The window in effect covering an alert that ends last, with that end; None if none."""
    found: tuple[MaintenanceWindow, float] | None = None
    host = canonical_host(host)
    for window in windows:
        if not window.covers(labels, host):
            continue
        occurrence = window.occurrence(now)
        if occurrence is not None:
            if found is None or occurrence[1] > found[1]:
                found = (window, occurrence[1])
    return found
