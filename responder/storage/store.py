"""The store: Responder's persistence, one object per process, grouped by tables.

`store.inbox`, `store.alerts`, `store.facts`, `store.decisions`, `store.approvals`,
`store.silences`, `store.leases`, `store.switches`, `store.incidents`, `store.timers` and
`store.maintenance` each own a
group of tables (`store.fencing` reads across three of them); the store itself is the database
they share (engine, transactions, migrations, health). It decides nothing: admission, release,
cooldowns, lease expiry and the pause are `responder.control`'s.
"""

from __future__ import annotations

from responder.storage.alerts import Alerts
from responder.storage.approvals import ApprovalRecords
from responder.storage.database import Database
from responder.storage.decisions import Decisions
from responder.storage.facts import Facts
from responder.storage.fencing import Fencing
from responder.storage.inbox import Inbox
from responder.storage.incidents import Incidents
from responder.storage.leases import Leases
from responder.storage.maintenance import MaintenanceWindows
from responder.storage.silences import Silences
from responder.storage.switches import Switches
from responder.storage.timers import Timers


class Store(Database):
    """Async access to Responder's tables. One instance per process."""

    def __init__(self, url: str, *, timeout_seconds: float = 5.0, durable: bool = True) -> None:
        super().__init__(url, timeout_seconds=timeout_seconds, durable=durable)
        self.inbox = Inbox(self)
        self.alerts = Alerts(self)
        self.facts = Facts(self)
        self.decisions = Decisions(self)
        self.approvals = ApprovalRecords(self)
        self.silences = Silences(self)
        self.leases = Leases(self)
        self.switches = Switches(self)
        self.incidents = Incidents(self)
        self.timers = Timers(self)
        self.maintenance = MaintenanceWindows(self)
        self.fencing = Fencing(self)
