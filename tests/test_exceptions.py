"""The exception tree drawn in `responder.exceptions` is the real one, flows included.

Every class the drawing names exists with the drawn parent among its bases, and every
exception class defined in responder/ or flows/ is drawn (but private ones, which never leave
their module). So the drawing cannot go stale when a class is added, moved or re-parented.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import responder.exceptions
from flows.errors import OperationFailed, is_transient, retry_if_transient
from tests.helpers import ROOT

# One line of the drawing: the tree's guides (4 characters a level), then the class name.
LINE = re.compile(
    r"^    (?P<guides>(?:│   |    )*)(?P<branch>├── |└── )?(?P<name>[A-Z]\w*)(?:\s|$)"
)


def drawing(doc: str) -> dict[str, str | None]:
    """Class name → the parent drawn for it (None for the root), from a docstring's tree."""
    # The tree is the docstring's second paragraph.
    lines = [line for line in doc.split("\n\n")[1].splitlines() if line.strip()]
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in lines:
        match = LINE.match(line)
        assert match, f"not a line of the tree: {line!r}"
        depth = len(match["guides"]) // 4 + (match["branch"] is not None)
        name = match["name"]
        assert name not in parents, f"{name} is drawn twice"
        assert depth <= len(path), f"{name} is indented below no parent"
        del path[depth:]
        parents[name] = path[-1] if path else None
        path.append(name)
    return parents


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined (not imported) in a module of responder/ or flows/."""
    found: dict[str, type[BaseException]] = {}
    for package in ("responder", "flows"):
        for file in sorted((ROOT / package).rglob("*.py")):
            parts = file.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__" or "migrations" in parts:
                continue  # running the CLI, or Alembic's scripts
            module = importlib.import_module(".".join(parts).removesuffix(".__init__"))
            for name, cls in vars(module).items():
                if (
                    inspect.isclass(cls)
                    and issubclass(cls, BaseException)
                    and cls.__module__ == module.__name__
                    and not name.startswith("_")
                ):
                    assert name not in found, f"two exception classes named {name}"
                    found[name] = cls
    return found


def mismatches(drawn: dict[str, str | None], real: dict[str, type[BaseException]]) -> list[str]:
    """How the drawing and the classes differ; empty when they agree."""
    problems = [f"{name} is drawn but not defined" for name in drawn if name not in real]
    problems += [f"{name} is defined but not drawn" for name in real if name not in drawn]
    for name, parent in drawn.items():
        cls = real.get(name)
        if cls is None:
            continue
        bases = [base.__name__ for base in cls.__bases__]
        if parent is None and bases != ["Exception"]:
            problems.append(f"{name} is drawn as the root, but derives from {bases}")
        elif parent is not None and parent not in bases:
            problems.append(f"{name} is drawn under {parent}, but derives from {bases}")
    return problems


def test_the_drawn_tree_is_the_real_hierarchy() -> None:
    drawn = drawing(responder.exceptions.__doc__ or "")
    assert drawn["ResponderError"] is None  # the root
    assert mismatches(drawn, defined_exceptions()) == []


def test_the_check_notices_a_class_out_of_place_or_left_out() -> None:
    real = defined_exceptions()
    drawn = drawing(responder.exceptions.__doc__ or "")
    moved = {**drawn, "DrainIncomplete": "OperationFailed"}
    assert mismatches(moved, real) == [
        "DrainIncomplete is drawn under OperationFailed, "
        "but derives from ['KubernetesOperationError']"
    ]
    left_out = {name: parent for name, parent in drawn.items() if name != "CommandFailed"}
    assert mismatches(left_out, real) == ["CommandFailed is defined but not drawn"]
    invented = {**drawn, "Imaginary": "FlowError"}
    assert mismatches(invented, real) == ["Imaginary is drawn but not defined"]


def test_the_drawing_parses_as_drawn() -> None:
    doc = """Title.

    Root
    ├── A      the first
    │   └── B  under A
    └── C      the last
        └── D
    """
    assert drawing(doc) == {"Root": None, "A": "Root", "B": "A", "C": "Root", "D": "C"}
    with pytest.raises(AssertionError, match="drawn twice"):
        drawing(doc.replace("D\n", "A\n"))


def test_every_exception_of_responder_and_flows_is_a_responder_error() -> None:
    strays = [
        name
        for name, cls in defined_exceptions().items()
        if not issubclass(cls, responder.exceptions.ResponderError)
    ]
    assert strays == []


def test_one_retry_rule_for_every_operation_that_retries() -> None:
    from flows.operations import all_operations

    retrying = {name: op.task for name, op in all_operations().items() if op.task.retries}
    assert "http.request" in retrying and "kubernetes.cordon" in retrying
    assert {task.retry_condition_fn for task in retrying.values()} == {retry_if_transient}


def test_what_is_transient() -> None:
    import httpx2
    from lightkube import ApiError

    assert is_transient(OperationFailed("unreachable", transient=True))
    assert not is_transient(OperationFailed("refused", transient=False))
    assert not is_transient(ValueError("not ours"))
    assert not is_transient(None)
    request = httpx2.Request("GET", "https://kube.invalid/api")
    assert is_transient(httpx2.ConnectError("refused", request=request))

    def api_error(code: int) -> ApiError:
        body = {"kind": "Status", "code": code, "message": "m"}
        return ApiError(request=request, response=httpx2.Response(code, json=body))

    assert is_transient(api_error(503)) and is_transient(api_error(429))
    assert not is_transient(api_error(404)) and not is_transient(api_error(501))


def test_no_module_of_flows_defines_its_own_retry_condition() -> None:
    # flows/errors.py holds the rules (is_transient; a YAML step's any-failure-but-fenced);
    # operations/__init__.py applies the first to every operation that retries.
    sources = {
        path: path.read_text() for path in Path(ROOT, "flows").rglob("*.py") if path.is_file()
    }
    own = [
        str(path.relative_to(ROOT))
        for path, text in sources.items()
        if "retry_condition_fn" in text and path.name not in ("__init__.py", "errors.py")
    ]
    assert own == []
