"""`responder replay`: a recorded history through two rule sets, the difference exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from responder.authoring.history import from_inbox, from_webhooks
from responder.authoring.replay import parse_fail_on, replay_both, report
from responder.cli import app
from responder.decision.rules import load_rules
from responder.decision.services import load_services
from responder.exceptions import PayloadError
from responder.runtime.service import known_flows
from responder.storage.inbox import InboxSource
from responder.storage.store import Store
from tests.helpers import FIXTURES, ROOT

# Today's rules: restart any crashed service once per incident.
CURRENT = """
rules:
  - name: restart
    match: ['alertname="ServiceDown"', 'instance!=""']
    run:
      flow: http-call
      parameters: {url: "http://ctl/restart/{{ alert.labels.instance }}"}
    guard: {key: "restart/{{ alert.labels.instance }}", cooldown: 10m, max_attempts: 1}
"""
# Proposed: restart only critical ones; clean full disks. The budget counts every run of
# http-call (its scope is the flow): two a day.
PROPOSED = """
rules:
  - name: restart
    match: ['alertname="ServiceDown"', 'instance!=""', 'severity="critical"']
    run:
      flow: http-call
      parameters: {url: "http://ctl/restart/{{ alert.labels.instance }}"}
    guard: {key: "restart/{{ alert.labels.instance }}", cooldown: 10m, max_attempts: 1}
  - name: clean-disk
    match: ['alertname="DiskFull"', 'instance!=""']
    run:
      flow: http-call
      parameters: {url: "http://ctl/clean/{{ alert.labels.instance }}"}
    guard: {key: "clean/{{ alert.labels.instance }}", budget: {max_starts: 2, per: 1d}}
"""
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp()
STARTS = "2026-12-01T10:00:00+00:00"
# (seconds after T0, fingerprint, labels, status): checkout is tier 0, search tier 2
# (config/services.yaml).
ALERTS = [
    (0, "a1", {"alertname": "ServiceDown", "instance": "host-1", "service": "checkout",
               "severity": "critical"}, "firing"),
    (10, "a2", {"alertname": "ServiceDown", "instance": "host-2", "service": "search",
                "severity": "warning"}, "firing"),
    (20, "d1", {"alertname": "DiskFull", "instance": "host-1", "service": "checkout"}, "firing"),
    (30, "d2", {"alertname": "DiskFull", "instance": "host-2", "service": "search"}, "firing"),
    (600, "a1", {"alertname": "ServiceDown", "instance": "host-1", "service": "checkout",
                 "severity": "critical"}, "resolved"),
]  # fmt: skip
# What changes, exactly: host-2's warning is no longer restarted; host-1's disk is cleaned,
# host-2's is refused by the budget.
EXPECTED = [
    {
        "change": "new-remediation",
        "kind": "remediation",
        "rule": "clean-disk",
        "flow": "http-call",
        "key": "clean-disk:clean/host-1",
        "incident": f"00000000000000d1@{STARTS}",
        "alertname": "DiskFull",
        "service": "checkout",
        "tier": "0",
        "refusal": "",
        "current": 0,
        "proposed": 1,
    },
    {
        "change": "lost-remediation",
        "kind": "remediation",
        "rule": "restart",
        "flow": "http-call",
        "key": "restart:restart/host-2",
        "incident": f"00000000000000a2@{STARTS}",
        "alertname": "ServiceDown",
        "service": "search",
        "tier": "2",
        "refusal": "",
        "current": 1,
        "proposed": 0,
    },
    {
        "change": "new-refusal",
        "kind": "refusal",
        "rule": "clean-disk",
        "flow": "http-call",
        "key": "clean-disk:clean/host-2",
        "incident": f"00000000000000d2@{STARTS}",
        "alertname": "DiskFull",
        "service": "search",
        "tier": "2",
        "refusal": "budget",
        "current": 0,
        "proposed": 1,
    },
]


def webhook(fingerprint: str, labels: dict[str, str], status: str, at: float) -> bytes:
    """One alert as Alertmanager sends it (every alert of the history starts at T0)."""
    ends = datetime.fromtimestamp(at, UTC).isoformat() if status == "resolved" else None
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {},
        "startsAt": STARTS,
        "endsAt": ends or "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }
    return json.dumps(
        {"version": "4", "groupKey": "{}:{}", "status": status, "receiver": "r", "alerts": [alert]}
    ).encode()


@pytest.fixture
def rule_sets(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "current").mkdir()
    (tmp_path / "proposed").mkdir()
    (tmp_path / "current" / "rules.yaml").write_text(CURRENT)
    (tmp_path / "proposed" / "rules.yaml").write_text(PROPOSED)
    return tmp_path / "current", tmp_path / "proposed"


async def record(store: Store) -> None:
    """The history in a store's inbox (at its times), plus an outcome and a webhook before
    T0 that a replay from T0 leaves out."""
    async with store.transaction() as conn:
        early = webhook("e1", {"alertname": "DiskFull", "instance": "host-9"}, "firing", T0)
        await store.inbox.add_in(conn, InboxSource.ALERTMANAGER, early, T0 - 3600)
        for offset, fingerprint, labels, status in ALERTS:
            body = webhook(fingerprint, labels, status, T0 + offset)
            await store.inbox.add_in(conn, InboxSource.ALERTMANAGER, body, T0 + offset)
        await store.inbox.add_in(conn, InboxSource.OUTCOME, b"{}", T0 + 5)


@pytest.fixture
async def inbox_url(tmp_path: Path) -> str:
    """A real SQLite store whose inbox received the history."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'recorded.db'}"
    store = Store(url)
    await store.migrate()
    await record(store)
    await store.close()
    return url


async def test_a_recorded_inbox_replays_to_the_exact_difference(
    store: Store, rule_sets: tuple[Path, Path]
) -> None:
    """On each backend: SQLite, and PostgreSQL (marked `postgres`)."""
    await record(store)
    history = await from_inbox(store.url, T0, None)
    assert [d.at - T0 for d in history.deliveries] == [0, 10, 20, 30, 600]

    current, proposed = (load_rules([p], known_flows()) for p in rule_sets)
    catalog = load_services(ROOT / "config" / "services.yaml")
    comparison = await replay_both(history, current, proposed, catalog, {})
    document, crossed = report(comparison, history, [parse_fail_on("new-remediation:tier=0")])

    assert document["changes"] == EXPECTED
    assert crossed == ["new-remediation:tier=0"]
    assert document["current"]["remediation"] == 2
    assert document["proposed"]["remediation"] == 2
    assert document["proposed"]["budget"] == 1
    assert document["history"]["alerts"] == 5


def replay_cli(rule_sets: tuple[Path, Path], *args: str) -> Any:
    current, proposed = rule_sets
    return CliRunner().invoke(
        app,
        ["replay", "--rules", str(current), "--proposed", str(proposed), *args],
        catch_exceptions=False,
    )


@pytest.mark.parametrize(
    ("fail_on", "exit_code"),
    [
        ([], 0),
        (["new-remediation"], 1),
        (["new-remediation:tier=0"], 1),
        (["new-remediation:tier=2"], 0),  # host-2's disk was refused, not remediated
        (["lost-remediation"], 1),
        (["lost-remediation:rule=clean-*"], 0),
        (["new-remediation>1"], 0),  # one new remediation: not more than one
        (["budget"], 1),
        (["blast-radius"], 0),
        (["exhausted"], 0),
        (["lost-page", "new-page"], 0),
    ],
)
def test_fail_on_sets_the_exit_code(
    inbox_url: str, rule_sets: tuple[Path, Path], fail_on: list[str], exit_code: int
) -> None:
    flags = [arg for spec in fail_on for arg in ("--fail-on", spec)]
    result = replay_cli(rule_sets, "--from-inbox", inbox_url, "--from", str(T0), *flags)

    assert result.exit_code == exit_code, result.output
    crossed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(crossed) == (1 if exit_code else 0)


def test_the_json_report_is_the_difference(inbox_url: str, rule_sets: tuple[Path, Path]) -> None:
    result = replay_cli(
        rule_sets, "--from-inbox", inbox_url, "--from", "2026-12-01T10:00:00Z", "--json"
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["changes"] == EXPECTED


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("new-remediations", "not understood"),
        ("gained-remediation", "not understood"),
        ("new-remediation:teir=0", "filter 'teir=0' not understood"),
        ("new-remediation:tier", "filter 'tier' not understood"),
    ],
)
def test_a_bad_fail_on_names_what_is_accepted(spec: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as caught:
        parse_fail_on(spec)
    assert "accepted: CHANGE-KIND" in str(caught.value)


def test_bad_flags_are_errors(rule_sets: tuple[Path, Path], tmp_path: Path) -> None:
    both = replay_cli(rule_sets, "--webhooks", str(FIXTURES), "--from-inbox", "sqlite://")
    assert both.exit_code == 1
    assert "give one history" in both.output
    when = replay_cli(rule_sets, "--webhooks", str(FIXTURES), "--from", "yesterday")
    assert when.exit_code == 1
    assert "--from 'yesterday': accepted: an RFC 3339 time" in when.output


def test_the_webhook_fixtures_replay_in_the_time_their_alerts_name() -> None:
    history = from_webhooks(FIXTURES)

    assert [Path(f).name for f, _ in history.skipped] == ["index.json"]
    assert len(history.deliveries) == 11
    assert [d.at for d in history.deliveries] == sorted(d.at for d in history.deliveries)


async def test_the_webhook_fixtures_through_the_library_without_escalation(
    tmp_path: Path,
) -> None:
    """The captured webhooks through the shipped rules, and through them less
    escalation.yaml: exactly the outage pages (and the refusals of their held key) go."""
    proposed = tmp_path / "proposed"
    proposed.mkdir()
    for file in (ROOT / "rules").glob("*.yaml"):
        if file.name != "escalation.yaml":
            (proposed / file.name).write_text(file.read_text())
    history = from_webhooks(FIXTURES)
    catalog = load_services(ROOT / "config" / "services.yaml")
    comparison = await replay_both(
        history,
        load_rules([ROOT / "rules"], known_flows()),
        load_rules([proposed], known_flows()),
        catalog,
        {"pager_url": "http://pager", "service_control_url": "http://ctl"},
    )
    document, _ = report(comparison, history, [])

    changes = [(c["change"], c["rule"], c["key"], c["refusal"]) for c in document["changes"]]
    outage = "page-service-outage:page/outage/"
    assert changes == [
        ("lost-remediation", "page-service-outage", f"{outage}checkout", ""),
        ("lost-remediation", "page-service-outage", f"{outage}payments", ""),
        ("lost-refusal", "page-service-outage", f"{outage}payments", "key_active"),
        ("lost-refusal", "page-service-outage", f"{outage}checkout", "key_active"),
        ("lost-refusal", "page-service-outage", f"{outage}checkout", "cooldown"),
        ("lost-refusal", "page-service-outage", f"{outage}checkout", "key_active"),
        ("lost-refusal", "page-service-outage", f"{outage}payments", "key_active"),
        ("lost-refusal", "page-service-outage", f"{outage}payments", "cooldown"),
        ("lost-page", "page-service-outage", f"{outage}checkout", ""),
        ("lost-page", "page-service-outage", f"{outage}payments", ""),
    ]
    assert all(c["current"] == 1 and c["proposed"] == 0 for c in document["changes"])
    assert document["current"]["page"] == 2
    assert document["proposed"]["page"] == 0


async def test_an_inbox_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "r.db"
    with pytest.raises(PayloadError, match="no store file"):
        await from_inbox(f"sqlite+aiosqlite:///{missing}", None, None)
    assert not missing.parent.exists()  # only read: nothing was created
    with pytest.raises(PayloadError, match="not a database URL"):
        await from_inbox("not a url", None, None)
