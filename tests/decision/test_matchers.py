from __future__ import annotations

import pytest

from responder.decision.matchers import MatchOp, parse_matcher
from responder.exceptions import MatcherError


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('alertname="ServiceDown"', "alertname", MatchOp.EQ, "ServiceDown"),
        ("alertname=ServiceDown", "alertname", MatchOp.EQ, "ServiceDown"),
        ('severity!="info"', "severity", MatchOp.NE, "info"),
        ('severity=~"critical|page"', "severity", MatchOp.RE, "critical|page"),
        (
            ' instance !~ "host-[0-9]+\\\\.example" ',
            "instance",
            MatchOp.NRE,
            r"host-[0-9]+\.example",
        ),
        ('msg="say \\"hi\\""', "msg", MatchOp.EQ, 'say "hi"'),
        ('empty=""', "empty", MatchOp.EQ, ""),
    ],
)
def test_parse(text: str, name: str, op: MatchOp, value: str) -> None:
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)


@pytest.mark.parametrize(
    "text",
    [
        "alertname",
        '="x"',
        'bad-name="x"',
        'a=="x"',
        'a="unterminated',
        'a=~"("',
        "a=x,b=y",
        # Past the re module's limits (found by tests/test_fuzz.py).
        'a=~"a{4294967296}"',
        'a=~"' + "(" * 1000 + ")" * 1000 + '"',
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(MatcherError):
        parse_matcher(text)


def test_regex_is_anchored_like_alertmanager() -> None:
    matcher = parse_matcher('severity=~"crit"')
    assert not matcher.matches({"severity": "critical"})
    assert parse_matcher('severity=~"crit.*"').matches({"severity": "critical"})
    assert parse_matcher('severity=~"critical|page"').matches({"severity": "page"})
    assert not parse_matcher('severity=~"critical|page"').matches({"severity": "xpage"})


def test_missing_label_equals_empty_string() -> None:
    assert parse_matcher('team=""').matches({})
    assert parse_matcher('team!="db"').matches({})
    assert not parse_matcher('team="db"').matches({})
    assert parse_matcher('team=~".*"').matches({})
    assert not parse_matcher('team=~".+"').matches({})
