"""Where flows come from: this package, and the directories of the `flows_dir` setting.

A directory of `flows_dir` holds YAML flows (`*.yaml`, `*.yml`, as in this package: see
`flows.dsl`) and Python flows (`*.py`): each top-level function decorated with Prefect's
`@flow` is a remediation named as Prefect names it (`@flow(name="...")`, else the function's
name with `-` for `_`). Names are read without importing anything, so checking rules stays
fast; a flow is imported when it is used.

The directories travel in `RESPONDER_FLOWS_PATH` (os.pathsep between them), so that the
processes Responder starts, and the runs Prefect starts from them, find the same flows.
A name declared twice, in any two places, is an error naming both.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from typing import Any

from responder.exceptions import FlowFileError

ENV = "RESPONDER_FLOWS_PATH"
PACKAGE_DIR = Path(__file__).resolve().parent
# CPython 3.11 builds syntax trees with interpreter-wide state: two threads parsing at once
# can fail with "SystemError: AST constructor recursion depth mismatch" (a reload's check
# and the start's, or a first parameter check, run in threads).
_PARSING = threading.Lock()


def parse(path: Path) -> ast.Module:
    """A Python file's syntax tree, one thread at a time (SyntaxError, OSError as they come)."""
    source = path.read_bytes()
    with _PARSING:
        return ast.parse(source, filename=str(path))


def environment(directories: list[Path]) -> dict[str, str]:
    """What tells a process (a flow runner, a worker) to take flows from these directories."""
    return {ENV: os.pathsep.join(str(d.resolve()) for d in directories)} if directories else {}


def use_dirs(directories: list[Path]) -> None:
    """Take flows from these directories too (and let child processes know)."""
    os.environ.pop(ENV, None)
    os.environ.update(environment(directories))


def extra_dirs() -> list[Path]:
    """The directories of `flows_dir` in force in this process."""
    return [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p]


def yaml_files() -> list[Path]:
    """Every YAML flow file: this package's, then each directory's, each in name order."""
    found: list[Path] = []
    for directory in [PACKAGE_DIR, *extra_dirs()]:
        if not directory.is_dir():
            raise FlowFileError("flows_dir: no such directory", file=str(directory))
        found.extend(sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]))
    return found


def python_flows() -> dict[str, tuple[Path, str]]:
    """Each Python flow of the directories by name: its file and function. A file that is
    not Python, or a name used twice, is a `FlowFileError` at its line."""
    found: dict[str, tuple[Path, str]] = {}
    for directory in extra_dirs():
        for path in sorted(directory.glob("*.py")):
            for name, function, line in _declared(path):
                if name in found:
                    where = found[name][0]
                    problem = f"flow {name!r} is also declared in {where}"
                    raise FlowFileError(problem, file=str(path), line=line)
                found[name] = (path, function)
    return found


def _declared(path: Path) -> list[tuple[str, str, int]]:
    """The flows a Python file declares: name, function and line of each."""
    try:
        tree = parse(path)
    except SyntaxError as exc:
        raise FlowFileError(f"not Python: {exc.msg}", file=str(path), line=exc.lineno) from None
    except OSError as exc:
        raise FlowFileError(f"cannot read: {exc.strerror}", file=str(path)) from None
    declared = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if _name_of(target) != "flow":
                continue
            name = node.name.replace("_", "-")
            for keyword in call.keywords if call else []:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    name = str(keyword.value.value)
            declared.append((name, node.name, node.lineno))
    return declared


def operation_names() -> set[str]:
    """The names of the atomic operations, read from `flows/operations` without importing
    it (each `@operation("name", ...)`): what a YAML flow's steps may use. Importing them
    imports Prefect, which deciding does not need."""
    names: set[str] = set()
    for path in sorted((PACKAGE_DIR / "operations").rglob("*.py")):
        for node in ast.walk(parse(path)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and _name_of(decorator.func) == "operation"
                    and decorator.args
                    and isinstance(decorator.args[0], ast.Constant)
                ):
                    names.add(str(decorator.args[0].value))
    return names


def _name_of(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def load_python_flow(path: Path, function: str) -> Any:
    """Import a Python flow file (once per content) and return its flow object."""
    text = path.read_bytes()
    module_name = f"responder_flows_{path.stem}_{hashlib.sha256(text).hexdigest()[:12]}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise FlowFileError(f"cannot import: {exc!r}"[:500], file=str(path)) from None
    return getattr(module, function)
