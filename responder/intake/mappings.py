"""JSON webhooks of any sender, turned into CloudEvents by a small mapping file.

A mapping (`config/mappings/<name>.yaml`, served at `POST /webhook/json/<name>`) says where
each CloudEvent attribute comes from in the sender's JSON body:

    source: {value: grafana}                  # a constant
    type: {path: status, prefix: grafana.}    # a value in the body, with a prefix
    subject: commonLabels.alertname           # a plain string is a path
    id: {header: X-GitHub-Delivery}           # a request header (the sender's delivery id)
    time: {path: alerts[0].startsAt, optional: true}
    data:
      environment: deployment.environment
      url: {path: deployment_status.target_url, optional: true}
    signature: github                         # X-Hub-Signature-256, if a secret is set

Paths are dotted keys with list indexes: `alerts[0].labels.alertname`, `items[-1].id`; a key
is letters, digits, `_` and `-`. Without `id`, the event's id is a hash of the whole body
(or, with `{hash: [paths]}`, of those values), so a resent webhook is the same event.
A path the body lacks is a 422 naming the path, unless the field says `optional: true`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping as MappingOf
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from responder.decision.documents import Spec, load_document
from responder.events.cloudevents import CloudEvent
from responder.exceptions import MappingError
from responder.intake.errors import Refused

_KEY = r"[A-Za-z0-9_\-]+"
_INDEX = r"\[-?\d{1,9}\]"
PATH = re.compile(rf"^{_KEY}(?:{_INDEX})*(?:\.{_KEY}(?:{_INDEX})*)*$")
_PART = re.compile(rf"({_KEY})|\[(-?\d+)\]")
NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
PATH_SYNTAX = "dotted keys with list indexes, e.g. alerts[0].labels.alertname"
MAX_HASHED = 32


def resolve(document: Any, path: str) -> Any:
    """The value at `path` in a JSON document; KeyError(path) when it is not there."""
    value = document
    for key, index in _PART.findall(path):
        if key:
            if not isinstance(value, dict) or key not in value:
                raise KeyError(path)
            value = value[key]
        else:
            position = int(index)
            if not isinstance(value, list) or not -len(value) <= position < len(value):
                raise KeyError(path)
            value = value[position]
    return value


class FieldSpec(Spec):
    """Where one attribute comes from: exactly one of `path`, `value`, `header`, `hash`."""

    path: str | None = None
    value: str | None = None
    header: str | None = None
    hash: list[str] | None = None
    prefix: str = ""
    optional: bool = False

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_origin(self) -> FieldSpec:
        given = [k for k in ("path", "value", "header", "hash") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of path, value, header or hash")
        return self

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str | None) -> str | None:
        if path is not None and not PATH.match(path):
            raise ValueError(f"not a path: {path!r}; a path is {PATH_SYNTAX}")
        return path

    @field_validator("hash")
    @classmethod
    def _check_hashed(cls, paths: list[str] | None) -> list[str] | None:
        for path in paths or []:
            cls._check_path(path)
        if paths is not None and len(paths) > MAX_HASHED:
            raise ValueError(f"at most {MAX_HASHED} paths")
        return paths

    def take(self, body: bytes, document: Any, headers: MappingOf[str, str]) -> Any:
        """The value for this field; KeyError(where) when the body or headers lack it."""
        if self.value is not None:
            return self.prefix + self.value
        if self.header is not None:
            if self.header not in headers:
                raise KeyError(f"header {self.header}")
            return self.prefix + headers[self.header]
        if self.hash is not None:
            hashed = [resolve(document, p) for p in self.hash] if self.hash else body
            raw = hashed if isinstance(hashed, bytes) else json.dumps(hashed, sort_keys=True)
            digest = hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode())
            return self.prefix + digest.hexdigest()[:32]
        assert self.path is not None
        value = resolve(document, self.path)
        return self.prefix + _text(value) if self.prefix else value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


class JsonMapping(Spec):
    """One sender's mapping: its JSON body's paths → a CloudEvent's attributes and data."""

    source: FieldSpec
    type: FieldSpec
    id: FieldSpec = FieldSpec(hash=[])
    subject: FieldSpec | None = None
    time: FieldSpec | None = None
    data: dict[str, FieldSpec] = Field(default_factory=dict)
    signature: Literal["github"] | None = None

    @field_validator("data")
    @classmethod
    def _check_data_keys(cls, data: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for key in data:
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$", key):
                raise ValueError(f"data key {key!r} is not a field name ([a-zA-Z_][a-zA-Z0-9_]*)")
        return data

    def event(self, body: bytes, headers: MappingOf[str, str]) -> CloudEvent:
        """The CloudEvent this body stands for; `Refused` (400 or 422) naming what is wrong."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise Refused(400, "body is not valid JSON", detail=str(exc)[:200]) from None
        attributes: dict[str, Any] = {"specversion": "1.0"}
        missing: list[str] = []
        named: dict[str, FieldSpec | None] = {"source": self.source, "type": self.type}
        named |= {"id": self.id, "subject": self.subject, "time": self.time}
        for name, spec in [*named.items(), *self.data.items()]:
            if spec is None:
                continue
            try:
                value = spec.take(body, document, headers)
            except KeyError as exc:
                if not spec.optional:
                    missing.append(f"{name} ({exc.args[0]})")
                continue
            if name in named:
                attributes[name] = value if name == "time" else _text(value)
            else:
                attributes.setdefault("data", {})[name] = value
        if missing:
            raise Refused(422, f"body lacks {', '.join(missing)}", missing=missing)
        try:
            return CloudEvent.model_validate(attributes)
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            raise Refused(422, "body does not make a CloudEvent", fields=fields) from None


def load_mappings(directory: Path) -> dict[str, JsonMapping]:
    """Every `<name>.yaml` in `directory` (none when it does not exist); a MappingError
    names the file, the line and what is accepted."""
    mappings: dict[str, JsonMapping] = {}
    if not directory.is_dir():
        return mappings
    for path in sorted(directory.glob("*.yaml")):
        if not NAME.match(path.stem):
            raise MappingError(f"a mapping's name must match {NAME.pattern}", file=str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MappingError(f"cannot read: {exc}", file=str(path)) from None
        mapping, _ = load_document(text, str(path), JsonMapping, MappingError)
        if mapping is None:
            raise MappingError("the file is empty; a mapping needs source and type", file=str(path))
        mappings[path.stem] = mapping
    return mappings
