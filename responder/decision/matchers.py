"""Alertmanager-style label matchers: `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`.

Semantics follow Alertmanager: a missing label equals the empty string, and regexes are
anchored at both ends. The same matchers select events (`type="deploy.finished"`,
`data.env="prod"`): an event's name may be a dotted path; an alert rule's may not (the rule
model says so).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from responder.exceptions import MatcherError

_MATCHER = re.compile(
    r"""^\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*(?:\.[a-zA-Z_][a-zA-Z0-9_]*)*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*$""",
    re.DOTALL,
)


class MatchOp(enum.Enum):
    """The four Alertmanager matcher operators."""

    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"

    @property
    def is_regex(self) -> bool:
        return self in (MatchOp.RE, MatchOp.NRE)

    @property
    def is_negative(self) -> bool:
        return self in (MatchOp.NE, MatchOp.NRE)


@dataclass(frozen=True)
class Matcher:
    """One parsed matcher; `matches` gives Alertmanager's answer for a label set."""

    name: str
    op: MatchOp
    value: str
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.regex is not None:
            hit = self.regex.fullmatch(actual) is not None
        else:
            hit = actual == self.value
        return not hit if self.op.is_negative else hit

    def __str__(self) -> str:
        return f"{self.name}{self.op.value}{json.dumps(self.value)}"


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher as Alertmanager writes it; the value may be quoted or bare."""
    m = _MATCHER.match(text)
    if m is None:
        raise MatcherError(
            f'matcher {text!r} is not of the form name="value"; '
            "accepted operators are =, !=, =~ and !~, and the name must be a label name "
            "(or, for an event, an attribute or a data.FIELD path)"
        )
    op = MatchOp(m["op"])
    raw = m["value"]
    if raw.startswith('"'):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise MatcherError(
                f"matcher {text!r}: the quoted value is not a closed, escaped string"
            ) from None
        if not isinstance(value, str):
            raise MatcherError(f"matcher {text!r}: the value must be a string")
    else:
        if any(c in raw for c in '"{},'):
            raise MatcherError(
                f'matcher {text!r}: a bare value cannot contain " {{ }} or ,; '
                'quote it: name="value"'
            )
        value = raw
    regex = None
    if op.is_regex:
        try:
            regex = re.compile(value)
        # re raises these past its limits: a count over 2**32 - 1, groups nested too deep.
        except (re.error, OverflowError, RecursionError) as exc:
            raise MatcherError(f"matcher {text!r}: invalid regular expression: {exc}") from None
    return Matcher(m["name"], op, value, regex)
