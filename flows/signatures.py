"""A Python flow's parameters, read from its file without importing it.

Refusing a decision whose parameters its flow would refuse needs the flow's signature: each
parameter's name, type and default. Importing the flow to read it imports Prefect, seconds
of CPU and tens of MB in `responder serve`, which decides but runs no flow. So the signature
is read from the file's syntax tree, and only what its annotations and defaults name is
imported (pydantic, `flows.types`): the same objects the flow's module would hold, typed as
`typing.get_type_hints` types them (the annotations as `from __future__ import annotations`
keeps them, evaluated among those names). The model built from them is the one the imported
flow gives (`tests/flows/test_signatures.py` holds them side by side).

Only what can be told exactly from the file is read: a flow decorated by nothing but
Prefect's `flow` and `flows.fencing.fenced` (both keep the signature), whose annotations and
defaults name only builtins and names the file imports at its top level (no name it defines
or rebinds itself, no `*` import, no relative import, no text naming a type). Otherwise
`read_parameters` answers None and the flow is imported, as before. A file that imports but
fails when run is then found by the worker that runs it, not by the check.
"""

from __future__ import annotations

import ast
import builtins
import importlib
from pathlib import Path
from typing import Any, get_type_hints

from flows.sources import parse

# The decorators known to keep the function's signature, by where they are imported from.
KEEP_SIGNATURE = frozenset({"prefect.flow", "prefect.flows.flow", "flows.fencing.fenced"})


class _Unreadable(Exception):
    """The file does not tell the signature exactly: import the flow instead."""


def read_parameters(path: Path, function: str) -> dict[str, tuple[Any, Any]] | None:
    """Each parameter of the flow `function` of the Python file at `path`, in order: its
    type (`Any` when not annotated) and default (`...` when required), as the imported
    flow's signature gives them; None when only importing the file can tell."""
    try:
        return _Reader(parse(path)).parameters(function)
    except (_Unreadable, OSError, SyntaxError, ValueError):
        return None


class _Reader:
    """The top level of one module: what each name there is bound to."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.imported: dict[str, str] = {}  # name → what it is: "module.attribute", "module"
        self.modules: dict[str, str] = {}  # name → the module its `import` statement imports
        self.bound: dict[str, int] = {}  # name → how many top-level statements bind it
        for node in ast.walk(tree):
            if isinstance(node, ast.Global | ast.Nonlocal):
                raise _Unreadable  # a function may bind a module-level name
        for statement in tree.body:
            for name in self._binds(statement):
                self.bound[name] = self.bound.get(name, 0) + 1

    def _binds(self, statement: ast.stmt) -> list[str]:
        if isinstance(statement, ast.ImportFrom):
            if statement.level or statement.module is None:
                return [alias.asname or alias.name for alias in statement.names]  # relative
            if statement.module == "__future__":
                return []
            names = []
            for alias in statement.names:
                if alias.name == "*":
                    raise _Unreadable
                name = alias.asname or alias.name
                self.imported[name] = f"{statement.module}.{alias.name}"
                names.append(name)
            return names
        if isinstance(statement, ast.Import):
            names = []
            for alias in statement.names:
                name = alias.asname or alias.name.partition(".")[0]
                # `import a.b` imports a.b and binds a; `import a.b as c` binds a.b.
                self.imported[name] = alias.name if alias.asname else name
                self.modules[name] = alias.name
                names.append(name)
            return names
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return [statement.name]
        # Any other statement: every name it stores, and every import inside it (a `try`,
        # an `if`), counts as a binding the file makes itself.
        found = []
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
                found.append(node.id)
            elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
                found.append(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                found.append(node.rest)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                found += [alias.asname or alias.name.partition(".")[0] for alias in node.names]
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.append(node.name)
            elif isinstance(node, ast.alias) and node.name == "*":
                raise _Unreadable
        return found

    def parameters(self, function: str) -> dict[str, tuple[Any, Any]]:
        definitions = [
            node
            for node in self.tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function
        ]
        if len(definitions) != 1 or self.bound.get(function) != 1:
            raise _Unreadable
        (definition,) = definitions
        for decorator in definition.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if self._origin(target) not in KEEP_SIGNATURE:
                raise _Unreadable
        arguments = definition.args
        if arguments.vararg is not None or arguments.kwarg is not None:
            raise _Unreadable
        positional = [*arguments.posonlyargs, *arguments.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults))
        defaults += arguments.defaults
        defaults += arguments.kw_defaults
        annotations = {}
        found: dict[str, tuple[Any, Any]] = {}
        for argument, default in zip([*positional, *arguments.kwonlyargs], defaults, strict=True):
            if argument.annotation is not None:
                _no_type_as_text(argument.annotation)
                annotations[argument.arg] = argument.annotation
            found[argument.arg] = (Any, ... if default is None else self._value(default))
        # A function of the module's names, annotated as the flow is: typed the same way.
        holder = eval("lambda: None", self._namespace([*annotations.values()]))
        holder.__annotations__ = {name: ast.unparse(a) for name, a in annotations.items()}
        try:
            hints = get_type_hints(holder, include_extras=True)
        except Exception:
            raise _Unreadable from None
        return {name: (hints.get(name, Any), default) for name, (_, default) in found.items()}

    def _value(self, expression: ast.expr) -> Any:
        namespace = self._namespace([expression])
        try:  # from its text: compiling a syntax tree is no safer in threads than parsing
            return eval(ast.unparse(expression), namespace)
        except Exception:
            raise _Unreadable from None

    def _namespace(self, expressions: list[ast.expr]) -> dict[str, Any]:
        """The names these expressions use, bound as the module binds them (builtins aside)."""
        used = {
            node.id
            for expression in expressions
            for node in ast.walk(expression)
            if isinstance(node, ast.Name)
        }
        namespace: dict[str, Any] = {"__builtins__": builtins}
        for name in used:
            if name not in self.bound:
                continue  # a builtin, or a NameError the import would raise too
            if self.bound[name] != 1 or name not in self.imported:
                raise _Unreadable
            namespace[name] = _resolve(self.imported[name], self.modules.get(name))
        return namespace

    def _origin(self, expression: ast.expr) -> str | None:
        """Where a decorator comes from (`prefect.flow`), if from an import."""
        if isinstance(expression, ast.Name):
            if self.bound.get(expression.id) != 1:
                return None
            return self.imported.get(expression.id)
        if isinstance(expression, ast.Attribute):
            owner = self._origin(expression.value)
            return None if owner is None else f"{owner}.{expression.attr}"
        return None


def _no_type_as_text(annotation: ast.expr) -> None:
    """A type written as text inside an annotation (`list["Host"]`) is looked up where the
    module is: refuse it. Text is plain data in `Literal[...]` and in calls' arguments."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        raise _Unreadable
    if isinstance(annotation, ast.Call):
        return
    if isinstance(annotation, ast.Subscript):
        head = annotation.value
        if (isinstance(head, ast.Name) and head.id == "Literal") or (
            isinstance(head, ast.Attribute) and head.attr == "Literal"
        ):
            return
    for child in ast.iter_child_nodes(annotation):
        if isinstance(child, ast.expr):
            _no_type_as_text(child)


def _resolve(origin: str, module: str | None) -> Any:
    """What a top-level import binds: `module` imported, the module `origin` (`import`); or
    the attribute `origin` names, else its submodule (`from m import x`)."""
    try:
        if module is not None:
            importlib.import_module(module)
            return importlib.import_module(origin)
        module_name, _, attribute = origin.rpartition(".")
        found = importlib.import_module(module_name)
        try:
            return getattr(found, attribute)
        except AttributeError:
            return importlib.import_module(origin)
    except Exception:
        raise _Unreadable from None
