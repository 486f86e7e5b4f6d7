"""Mapping files: the path syntax, and every mistake named with its file, line and what is
accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.exceptions import MappingError
from responder.intake.errors import Refused
from responder.intake.mappings import JsonMapping, load_mappings, resolve
from tests.helpers import ROOT

DOCUMENT = {"a": {"b": [{"c": 1}, {"c": 2, "d-e": "x"}]}, "s": "t"}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("s", "t"),
        ("a.b[0].c", 1),
        ("a.b[-1].c", 2),
        ("a.b[1].d-e", "x"),
        ("a.b", DOCUMENT["a"]["b"]),
    ],  # type: ignore[index]
)
def test_resolve(path: str, value: object) -> None:
    assert resolve(DOCUMENT, path) == value


@pytest.mark.parametrize("path", ["x", "a.x", "a.b[2].c", "a.b[-3]", "s.t", "s[0]", "a[0]"])
def test_resolve_missing(path: str) -> None:
    with pytest.raises(KeyError) as caught:
        resolve(DOCUMENT, path)
    assert caught.value.args[0] == path


def load(tmp_path: Path, text: str, name: str = "sender") -> dict[str, JsonMapping]:
    (tmp_path / f"{name}.yaml").write_text(text)
    return load_mappings(tmp_path)


@pytest.mark.parametrize(
    ("text", "line", "said"),
    [
        ("source: {value: x}\ntype: 'a..b'\n", 2, "dotted keys with list indexes"),
        ("source: {value: x}\ntype: a\nsubjetc: b\n", 3, "subjetc"),
        ("source: {value: x}\ntype: {path: a, value: b}\n", 2, "exactly one of path"),
        ("source: {value: x}\n", 1, "type"),
        ("source: {value: x}\ntype: a\ndata: {bad-key: x}\n", 3, "not a field name"),
        ("source: {value: x}\ntype: a\nsignature: gitlab\n", 3, "github"),
        ("source: {value: x}\ntype: a\nid: {hash: ['a[x]']}\n", 3, "not a path"),
        ("source: [x\n", 2, "not valid YAML"),
    ],
)
def test_bad_mapping_names_file_line_and_what_is_accepted(
    tmp_path: Path, text: str, line: int, said: str
) -> None:
    with pytest.raises(MappingError) as caught:
        load(tmp_path, text)
    assert caught.value.file == str(tmp_path / "sender.yaml")
    assert caught.value.line == line, caught.value
    assert said in str(caught.value)


def test_empty_file_and_bad_name(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="empty"):
        load(tmp_path, "")
    (tmp_path / "sender.yaml").unlink()
    with pytest.raises(MappingError, match="name"):
        load(tmp_path, "source: {value: x}\ntype: a\n", name="Bad Name")


def test_absent_directory_is_no_mapping(tmp_path: Path) -> None:
    assert load_mappings(tmp_path / "absent") == {}


def test_shipped_mappings_load() -> None:
    assert sorted(load_mappings(ROOT / "config" / "mappings")) == ["github-deployment", "grafana"]


def test_event_from_a_body() -> None:
    mapping = JsonMapping.model_validate(
        {
            "source": {"value": "s"},
            "type": {"path": "kind", "prefix": "p."},
            "subject": {"path": "who", "optional": True},
            "data": {"n": "a.b[1].c", "flag": "f"},
        }
    )
    event = mapping.event(b'{"kind": "k", "a": {"b": [0, {"c": 5}]}, "f": true}', {})
    assert (event.type, event.source, event.subject) == ("p.k", "s", None)
    assert event.data == {"n": 5, "flag": True}
    # Without an id, the hash of the body: the same body is the same event, another is not.
    again = mapping.event(b'{"kind": "k", "a": {"b": [0, {"c": 5}]}, "f": true}', {})
    other = mapping.event(b'{"kind": "k", "a": {"b": [0, {"c": 6}]}, "f": true}', {})
    assert event.id == again.id != other.id
    with pytest.raises(Refused) as caught:
        mapping.event(b'{"kind": "k"}', {})
    assert caught.value.response.status_code == 422
    assert b"a.b[1].c" in caught.value.response.body
    assert b'"missing":["n (a.b[1].c)","flag (f)"]' in caught.value.response.body
