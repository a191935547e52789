"""Read and write one knob's value (agentx.toml `[knobs.NAME]`), changing nothing else.

A knob lives in a module-level constant of a Python file or under a dotted key of a TOML,
YAML or JSON file. `write_knob` replaces only that value:

- Python: exactly the source span of the assigned expression (from `ast` positions) is
  replaced by a literal; the name, an annotation, comments and every other byte stay. A
  list that spanned several lines, one item per line, is written the same way.
- TOML (tomlkit) and YAML (ruamel.yaml round trip, with the file's indentation guessed)
  keep comments and layout; JSON is edited in place at the value's span, in the file's
  indentation.

    value = read_knob(root, spec)          # None when the value is not a literal
    write_knob(root, spec, 0.25)

`read_knob` returns None for a Python value that is an expression (`10 ** -2`); such a
knob can still be written. Every problem is a `KnobError` naming the file and the name.
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path
from typing import Any

from agentx.errors import UserError
from agentx.workspace import KnobSpec
from tools import knob_formats


class KnobError(UserError, ValueError):
    """A knob that cannot be read or written; the message names the file and the name."""


def read_knob(root: Path | str, spec: KnobSpec) -> Any:
    """The knob's current value; None when it is a Python expression that is not a literal."""
    text = _read(Path(root), spec)
    if spec.is_python:
        node = _assigned_value(text, spec)
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    try:
        return knob_formats.read_key(text, spec.file, spec.keys)
    except knob_formats.KeyNotFound as exc:
        raise KnobError(f"{spec.file}: {exc}") from None


def write_knob(root: Path | str, spec: KnobSpec, value: Any) -> None:
    """Set the knob to `value` (checked against its type and range); a value equal to the
    current one leaves the file untouched."""
    value = check_value(spec, value)
    root = Path(root)
    text = _read(root, spec)
    current = read_knob(root, spec)
    if current == value and isinstance(current, bool) == isinstance(value, bool):
        return
    if spec.is_python:
        new = _replace_python(text, spec, value)
    else:
        try:
            new = knob_formats.write_key(text, spec.file, spec.keys, value)
        except knob_formats.KeyNotFound as exc:
            raise KnobError(f"{spec.file}: {exc}") from None
    (root / spec.file).write_text(new, encoding="utf-8")


def check_value(spec: KnobSpec, value: Any) -> Any:
    """`value` as the knob's type (an int for a float knob becomes a float), or KnobError."""
    where = f"knob {spec.file}:{spec.name} ({spec.type})"
    if spec.type in ("float", "int"):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise KnobError(f"{where}: {value!r} is not a finite number")
        if spec.type == "int":
            if not float(value).is_integer():
                raise KnobError(f"{where}: {value!r} is not a whole number")
            value = int(value)
        else:
            value = float(value)
        assert spec.low is not None and spec.high is not None
        if not spec.low <= value <= spec.high:
            raise KnobError(f"{where}: {value!r} is outside [{spec.low}, {spec.high}]")
        return value
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise KnobError(f"{where}: {value!r} is not true or false")
        return value
    if spec.type == "categorical":
        if not any(type(value) is type(c) and value == c for c in spec.choices or []):
            raise KnobError(f"{where}: {value!r} is not one of {spec.choices!r}")
        return value
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise KnobError(f"{where}: {value!r} is not a list of feature names")
    if len(set(value)) != len(value):
        raise KnobError(f"{where}: {list(value)!r} names a feature twice")
    unknown = [v for v in value if spec.choices is not None and v not in spec.choices]
    if unknown:
        raise KnobError(f"{where}: {', '.join(unknown)} not among its choices {spec.choices!r}")
    if len(value) < (spec.min_size or 0):
        raise KnobError(f"{where}: {len(value)} features, fewer than min_size {spec.min_size}")
    return list(value)


def py_literal(value: Any) -> str:
    """Python source for a plain value: double-quoted strings, lists as ["a", "b"]."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        raise KnobError(f"{value!r} has no Python literal")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(py_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    raise KnobError(f"no Python literal for a {type(value).__name__} ({value!r})")


# -- Python constants ---------------------------------------------------------------------

def _read(root: Path, spec: KnobSpec) -> str:
    path = root / spec.file
    if not path.is_file():
        raise KnobError(f"{spec.file}: no such file in {root} (knob {spec.name})")
    return path.read_text(encoding="utf-8")


def _assigned_value(text: str, spec: KnobSpec) -> ast.expr:
    """The expression of the one module-level `NAME = ...` or `NAME: type = ...`."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise KnobError(f"{spec.file}: not valid Python ({exc.msg}, line {exc.lineno})") from None
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        else:
            continue
        if isinstance(target, ast.Name) and target.id == spec.name:
            found.append(node)
    if not found:
        raise KnobError(f"{spec.file}: no module-level constant {spec.name} (write `{spec.name} = <value>` "
                        "at the top level, or fix the knob's name)")
    if len(found) > 1:
        lines = ", ".join(str(n.lineno) for n in found)
        raise KnobError(f"{spec.file}: {spec.name} is assigned {len(found)} times (lines {lines}); "
                        "a knob needs exactly one module-level assignment")
    assert found[0].value is not None
    return found[0].value


def _offset(text: str, starts: list[int], line: int, col_bytes: int) -> int:
    """The character offset of an `ast` position (1-based line, UTF-8 byte column)."""
    begin = starts[line - 1]
    end = starts[line] if line < len(starts) else len(text)
    return begin + len(text[begin:end].encode("utf-8")[:col_bytes].decode("utf-8"))


def _replace_python(text: str, spec: KnobSpec, value: Any) -> str:
    node = _assigned_value(text, spec)
    assert node.end_lineno is not None and node.end_col_offset is not None
    starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
    start = _offset(text, starts, node.lineno, node.col_offset)
    end = _offset(text, starts, node.end_lineno, node.end_col_offset)
    return text[:start] + _python_source(text, starts, node, value) + text[end:]


def _python_source(text: str, starts: list[int], node: ast.expr, value: Any) -> str:
    """The new value's literal; a list replacing a one-item-per-line list keeps that layout."""
    literal = py_literal(value)
    if not (isinstance(value, list) and value and isinstance(node, ast.List) and node.elts
            and node.end_lineno != node.lineno and node.elts[0].lineno > node.lineno):
        return literal
    first, close = node.elts[0], node.end_lineno
    assert close is not None and node.end_col_offset is not None
    item_line = text[starts[first.lineno - 1]:]
    item_indent = item_line[:len(item_line) - len(item_line.lstrip(" \t"))]
    close_line = text[starts[close - 1]:_offset(text, starts, close, node.end_col_offset) - 1]
    newline = re.search(r"\r\n|\r|\n", text[starts[node.lineno - 1]:]).group()  # type: ignore[union-attr]
    items = [f"{item_indent}{py_literal(v)}" for v in value]
    if close_line.strip(" \t"):          # the bracket closed after the last item: `    "b"]`
        return "[" + newline + f",{newline}".join(items) + "]"
    return "[" + newline + "".join(f"{item},{newline}" for item in items) + close_line + "]"
