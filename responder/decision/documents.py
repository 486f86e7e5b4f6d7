"""YAML documents users edit: `safe_load` → validate (unknown keys rejected) → frozen model.

Every error names the file, the line and what the field accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from responder.exceptions import DocumentError


class Spec(BaseModel):
    """A part of a document users edit: frozen, and a key it does not know is an error
    (the base of rule files, the service catalog, rule tests and YAML flows)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=DocumentError)


class _Loader(yaml.SafeLoader):
    """`SafeLoader`, whose errors in reading a value (2001-02-30) name the value's line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            # PyYAML's constructors fail on some values with plain Python errors: a date
            # out of range, `!!timestamp x` (AttributeError), `!!bool x` (KeyError)...
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read this value: {exc.__class__.__name__}: {exc}",
                node.start_mark,
            ) from None


def load_document(
    text: str, file: str, model: type[M], error: type[DocumentError]
) -> tuple[M | None, yaml.Node | None]:
    """Parse and validate; (None, None) for an empty document. Raises the first error."""
    data, node = read_document(text, file, error)
    if node is None:
        return None, None
    try:
        return model.model_validate(data), node
    except ValidationError as exc:
        raise validation_errors(exc, node, file, model, error)[0] from None


def read_document(text: str, file: str, error: type[DocumentError]) -> tuple[Any, yaml.Node | None]:
    """Parse YAML safely: the data and its node tree, (None, None) for an empty document."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        problem = f"character #x{exc.character:04x} is not allowed in YAML"
        raise error(f"not valid YAML: {problem}", file=file, line=line) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _reject_duplicate_keys(node, file, error)
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else loader.line + 1
        raise error(f"not valid YAML: {exc.problem}", file=file, line=line) from None
    except RecursionError:
        problem = "the document is nested too deeply"
        raise error(problem, file=file, line=loader.line + 1) from None
    finally:
        loader.dispose()


def validation_errors(
    exc: ValidationError,
    node: yaml.Node,
    file: str,
    model: type[BaseModel],
    error: type[E],
    at: Sequence[Any] = (),
) -> list[E]:
    """Every problem pydantic found, each at the line and column of its key or value, and
    saying what is accepted. An unknown key usually explains a missing one (a typo): unknown
    keys come first. `at` is where in the document `model`'s part is."""
    found: list[E] = []
    for err in sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden"):
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in (*at, *loc)) or "(top level)"
        message = str(err["ctx"]["error"]) if "error" in err.get("ctx", {}) else err["msg"]
        line, column = location_of(node, (*at, *loc), key=err["type"] == "extra_forbidden")
        problem = f"{path}: {message}{_given(err, message)}{_accepted(model, loc)}"
        found.append(error(problem, file=file, line=line, column=column))
    return found


def _given(err: Any, message: str) -> str:
    """The bad value, when it is a short scalar the message does not already quote."""
    value = err.get("input")
    if err["type"] in ("missing", "extra_forbidden") or isinstance(value, (dict, list)):
        return ""
    shown = repr(value)
    if len(shown) > 80 or shown in message or str(value) in message:
        return ""
    return f" (given: {shown})"


def node_at(node: yaml.Node, loc: Sequence[Any], *, key: bool = False) -> yaml.Node:
    """The deepest YAML node that `loc` (a pydantic error path) reaches; with `key`, the
    key node of its last part when the path reaches it whole."""
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    last = i == len(loc) - 1
                    node = key_node if key and last else value_node
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
        else:
            break
    return node


def location_of(node: yaml.Node, loc: Sequence[Any], *, key: bool = False) -> tuple[int, int]:
    """The line and column (both from 1) of `node_at(node, loc, key=key)`."""
    found = node_at(node, loc, key=key)
    return int(found.start_mark.line) + 1, int(found.start_mark.column) + 1


def line_of(node: yaml.Node, loc: Sequence[Any]) -> int:
    """The line of the deepest YAML node that `loc` (a pydantic error path) reaches."""
    return location_of(node, loc)[0]


# An alias repeats a node where it is used: a few, nested, make a document that expands to
# billions of values (an "alias bomb"). Both caps are far above what a hand-written file uses.
MAX_ALIASES = 10_000
MAX_EXPANDED_NODES = 1_000_000


def _reject_duplicate_keys(node: yaml.Node, file: str, error: type[DocumentError]) -> None:
    """Rejects duplicate keys, a node that contains an alias to itself (nothing could validate
    it), and alias bombs: in time linear in the document, as each node is walked once."""
    expanded: dict[int, int] = {}  # node id → values it expands to; absent while being walked
    aliases = 0

    def walk(node: yaml.Node, parent: yaml.Node) -> int:
        nonlocal aliases
        if id(node) in expanded:
            aliases += 1
            if aliases > MAX_ALIASES:
                # An alias node is its anchor's node: name the collection that uses it.
                line = parent.start_mark.line + 1
                raise error(f"more than {MAX_ALIASES} aliases", file=file, line=line)
            return expanded[id(node)]
        if id(node) in walking:
            raise error(
                "the node anchored here contains an alias to itself",
                file=file,
                line=node.start_mark.line + 1,
            )
        walking.add(id(node))
        size = 1
        if isinstance(node, yaml.MappingNode):
            keys: set[Any] = set()
            for key_node, value_node in node.value:
                # A complex key (`? [a]`) is unhashable here; the constructor refuses it.
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else key_node
                if key in keys:
                    raise error(
                        f"key {key!r} appears twice in one mapping",
                        file=file,
                        line=key_node.start_mark.line + 1,
                    )
                keys.add(key)
                size += walk(key_node, node) + walk(value_node, node)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                size += walk(item, node)
        if size > MAX_EXPANDED_NODES:
            raise error(
                f"the aliases here expand the document beyond {MAX_EXPANDED_NODES} values",
                file=file,
                line=node.start_mark.line + 1,
            )
        walking.discard(id(node))
        expanded[id(node)] = size
        return size

    walking: set[int] = set()
    walk(node, node)


def _accepted(model: type[BaseModel] | None, loc: Sequence[Any]) -> str:
    """What a field accepts, when pydantic's message does not already say it."""
    mapping_key = False
    for part in loc:
        if isinstance(part, int) or model is None or mapping_key:
            mapping_key = False
            continue
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        info = fields.get(str(part))
        if info is None:
            if model.model_config.get("extra") == "forbid":
                return f"; accepted keys: {', '.join(fields)}"
            return ""
        model = _model_in(info.annotation)
        mapping_key = get_origin(info.annotation) is dict
    return ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
