"""Host identity: which machine an alert is about, in one spelling.

Prometheus' `instance` label is a scrape target, usually `host:port` (`mx-1:9100`), and
people write host names in any case; `mx-1`, `mx-1:9100` and `MX-1` are one machine. Rules
that must not touch one machine twice at once lock `host:{{ alert.host }}`, never the raw
label.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

HOST_LABEL = "instance"  # the label that names the host unless the catalog names another


def canonical_host(value: object) -> str:
    """A host as one text: no scheme, user, port or path, case-folded, no trailing dot.

    `MX-1:9100` → `mx-1`; `[::1]:9100` → `::1`; `https://Shop.example.com:443/x` →
    `shop.example.com`. An IP address is written in its standard form (`0:0::1` → `::1`).
    """
    text = str(value).strip()
    if "://" in text:
        text = urlsplit(text).netloc
    text = text.rpartition("@")[2]  # user:password@host
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        end = text.find("]")
        text = text[1:end] if end > 0 else text[1:]
    elif text.count(":") == 1:  # host:port; more colons is a bare IPv6 address
        name, _, port = text.partition(":")
        if port.isdigit() or port == "":
            text = name
    text = text.removesuffix(".").casefold()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def host_of(labels: Mapping[str, str], service: Mapping[str, Any]) -> str:
    """The host of an alert: its service's `host_label` in the catalog, else `instance`.

    "" when the alert has no such label.
    """
    label = service.get("host_label") or HOST_LABEL
    return canonical_host(labels.get(label, ""))
