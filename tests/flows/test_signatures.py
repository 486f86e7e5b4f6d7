"""A Python flow's parameters read from its source (`flows.signatures`) are those of the
imported flow: same names, types, defaults and verdicts on the same values. What the
source cannot tell exactly makes the check import the flow, as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from flows import REMEDIATIONS
from flows.parameters import imported_parameters, parameter_errors, python_source
from flows.signatures import read_parameters
from flows.sources import operation_names, use_dirs


def _model(fields: dict[str, tuple[Any, Any]]) -> type[BaseModel]:
    model: type[BaseModel] = create_model(
        "parameters", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def _verdict(model: type[BaseModel], parameters: dict[str, Any]) -> Any:
    try:
        return model.model_validate(parameters).model_dump(mode="json")
    except ValidationError as exc:
        return exc.errors(include_url=False, include_input=False)


# Values each flow must accept or refuse alike, hostile labels among them.
SAMPLES: list[dict[str, Any]] = [
    {},
    {"host": "web-1", "service": "api", "restart_url": "http://a/r", "health_url": "http://a/h"},
    {"host": "web-1;rm -rf /", "service": "api", "restart_url": "x", "health_url": "http://a"},
    {"host": "-oProxyCommand", "service": "a b", "restart_url": "http://a", "health_url": "h"},
    {"url": "http://a/x", "method": "GET", "headers_from_env": {"X-Key": "FLOW_SECRET_A"}},
    {"url": "http://a/x", "headers_from_env": {"X-Key\r\nEvil": "FLOW_SECRET_A"}},
    {"url": "http://a/x", "verify_within_seconds": 0, "expected_status": ["x"]},
    {"url": "http://a/x", "method": "TRACE", "json_body": [1], "unknown": 1},
]


@pytest.mark.parametrize("flow", sorted(REMEDIATIONS))
def test_the_packages_flows_read_from_source_are_the_imported_ones(flow: str) -> None:
    source = python_source(flow)
    assert source is not None
    read = read_parameters(*source)
    assert read is not None, "the package's flows are read without importing them"
    imported = imported_parameters(flow)
    assert list(read) == list(imported)
    assert {n: repr(v) for n, v in read.items()} == {n: repr(v) for n, v in imported.items()}
    from_source, from_import = _model(read), _model(imported)
    assert json.dumps(from_source.model_json_schema()) == json.dumps(
        from_import.model_json_schema()
    )
    for sample in SAMPLES:
        assert _verdict(from_source, sample) == _verdict(from_import, sample), sample


def test_the_operation_names_read_from_source_are_the_registered_ones() -> None:
    from flows.operations import all_operations

    assert operation_names() == set(all_operations())


FLOW_HEADER = """\
from __future__ import annotations
import typing
from typing import Annotated, Literal
import pydantic.networks
from pydantic import Field
from prefect import flow
from flows.fencing import fenced
from flows.types import Host
"""


@pytest.mark.parametrize(
    ("body", "read"),
    [
        (  # every form of import, keyword-only and positional-only parameters
            "@flow(name='f')\n@fenced\ndef f(h: Host, /, n: Annotated[int, Field(ge=1)] = 2, *, "
            "m: typing.Optional[Literal['a', 'b']] = None, u: pydantic.networks.AnyHttpUrl | "
            "None = None, free=3) -> str: ...\n",
            True,
        ),
        ("SIZE = 3\n@flow\ndef f(n: int = SIZE) -> None: ...\n", False),  # a name it defines
        ("Alias = Host\n@flow\ndef f(h: Alias) -> None: ...\n", False),
        ("Host = str\n@flow\ndef f(h: Host) -> None: ...\n", False),  # rebinds an import
        ("def deco(f): return f\n@flow\n@deco\ndef f(n: int) -> None: ...\n", False),
        ("@flow\ndef f(*names: str) -> None: ...\n", False),
        ("@flow\ndef f(n: list['Host']) -> None: ...\n", False),  # a type written as text
        ("from .near import T\n@flow\ndef f(n: T) -> None: ...\n", False),
        ("from os.path import *\n@flow\ndef f(n: int) -> None: ...\n", False),
        ("@flow\ndef f(n: Missing) -> None: ...\n", False),  # the import fails: let it say so
    ],
)
def test_what_the_source_cannot_tell_exactly_is_imported(
    tmp_path: Path, body: str, read: bool
) -> None:
    path = tmp_path / "flow.py"
    path.write_text(FLOW_HEADER + body)
    found = read_parameters(path, "f")
    assert (found is not None) is read


@pytest.fixture
def flows_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "more-flows"
    directory.mkdir()
    use_dirs([directory])
    yield directory
    use_dirs([])


def test_a_flow_the_source_cannot_tell_is_checked_by_importing_it(flows_dir: Path) -> None:
    (flows_dir / "local.py").write_text(
        "from typing import Annotated\nfrom prefect import flow\nfrom pydantic import Field\n"
        "Port = Annotated[int, Field(ge=1, le=65535)]\n\n"
        "@flow(name='open-port')\ndef open_port(port: Port) -> None: ...\n"
    )
    assert read_parameters(flows_dir / "local.py", "open_port") is None
    assert parameter_errors("open-port", {"port": 80}) == []
    assert [e["field"] for e in parameter_errors("open-port", {"port": 0})] == ["port"]
