"""JSON columns written through the driver read back as `json.dumps`' text would."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from responder.storage.database import json_text

VALUES: list[Any] = [
    {"alertname": "DiskFull", "instance": "host-1:9100", "n": "12"},
    {"summary": 'é ✓ 日本 \u2028 \x00 "quoted" \\ back'},  # hostile label text
    {"nested": [1, 2.5, True, None, {"k": []}], "1": "key as text"},
    {"lone": "\ud800"},  # UTF-8 cannot hold it: json.dumps escapes it
    [],
    "text",
]


@pytest.mark.parametrize("value", VALUES)
def test_json_text_reads_back_as_json_dumps_does(value: Any) -> None:
    assert json.loads(json_text(value)) == json.loads(json.dumps(value))


def test_nan_stays_nan() -> None:
    assert math.isnan(json.loads(json_text({"x": float("nan")}))["x"])


def test_json_text_is_compact_utf8() -> None:
    assert json_text({"a": "é"}) == '{"a":"é"}'  # not json.dumps' '{"a": "\\u00e9"}'
