"""Anchored source edits for recipes: every helper finds its anchor or raises.

A recipe never edits a file by line number. It looks for something with a name: a marker
comment (`# --- interaction layers ... build them here ---`), a constant (`EMBED_DIM = 16`),
a class or method (`Featurizer.__call__`), a statement (`optimizer.step()`). If that anchor
is missing, or appears more than once where one is needed, the helper raises
`RecipeNotApplicable` with a reason a person can act on; a recipe never silently does
nothing. Code a recipe inserts carries a `# recipe: <name>` tag so the same recipe is
refused a second time on the same file.
"""

from __future__ import annotations

import ast
import io
import json
import re
import textwrap
import tokenize
from pathlib import Path
from typing import Any


class RecipeNotApplicable(Exception):
    """The checkout lacks an anchor the recipe needs (or the change is already there)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- files -------------------------------------------------------------------------------

def read(worktree: Path, rel: str) -> str:
    path = Path(worktree) / rel
    if not path.is_file():
        raise RecipeNotApplicable(f"{rel} does not exist in {worktree}")
    return path.read_text(encoding="utf-8")


def write(worktree: Path, rel: str, text: str) -> None:
    (Path(worktree) / rel).write_text(text, encoding="utf-8")


def tag(name: str) -> str:
    return f"recipe: {name}"


def refuse_if_applied(text: str, rel: str, name: str) -> None:
    if re.search(rf"\b{re.escape(tag(name))}\b", text):
        raise RecipeNotApplicable(f"{rel} already carries recipe {name!r} ({tag(name)!r} found)")


def require(text: str, rel: str, pattern: str, what: str) -> None:
    """At least one line matches `pattern` (a regex, multiline)."""
    if not re.search(pattern, text, flags=re.MULTILINE):
        raise RecipeNotApplicable(f"{rel}: cannot find {what} (pattern {pattern!r})")


def _unique_line(lines: list[str], pattern: str, rel: str, what: str) -> int:
    regex = re.compile(pattern)
    hits = [i for i, line in enumerate(lines) if regex.search(line)]
    if not hits:
        raise RecipeNotApplicable(f"{rel}: cannot find {what} (pattern {pattern!r})")
    if len(hits) > 1:
        raise RecipeNotApplicable(f"{rel}: {what} appears {len(hits)} times (lines "
                                  f"{', '.join(str(h + 1) for h in hits)}); expected exactly one")
    return hits[0]


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _block(code: str, indent: str) -> list[str]:
    return [indent + line if line.strip() else "" for line in textwrap.dedent(code).strip("\n").splitlines()]


# -- insertions at markers and statements ----------------------------------------------

def insert_at_marker(text: str, rel: str, pattern: str, code: str, what: str) -> str:
    """Insert `code` under the unique marker line, after code earlier recipes put there.

    The marker's block is the marker line plus the non-blank lines right after it; new code
    goes at the end of that block, at the marker's indentation, so recipes stack in the
    order they were applied."""
    lines = text.splitlines()
    at = _unique_line(lines, pattern, rel, what)
    end = at + 1
    while end < len(lines) and lines[end].strip():
        end += 1
    lines[end:end] = _block(code, _indent_of(lines[at]))
    return "\n".join(lines) + "\n"


def insert_before(text: str, rel: str, pattern: str, code: str, what: str, *, blank_after: int = 0) -> str:
    """Insert `code` before the unique line matching `pattern`, at that line's indentation."""
    lines = text.splitlines()
    at = _unique_line(lines, pattern, rel, what)
    lines[at:at] = _block(code, _indent_of(lines[at])) + [""] * blank_after
    return "\n".join(lines) + "\n"


def insert_after(text: str, rel: str, pattern: str, code: str, what: str) -> str:
    """Insert `code` after the unique line matching `pattern`, at that line's indentation."""
    lines = text.splitlines()
    at = _unique_line(lines, pattern, rel, what)
    lines[at + 1:at + 1] = _block(code, _indent_of(lines[at]))
    return "\n".join(lines) + "\n"


def insert_before_class(text: str, rel: str, class_name: str, code: str) -> str:
    """Module-level code (a helper class or function) right before `class <class_name>`."""
    return insert_before(text, rel, rf"^class {re.escape(class_name)}\b", code, f"class {class_name}",
                         blank_after=2)


def ensure_import(text: str, module: str) -> str:
    """Add a top-level `import <module>` (kept in alphabetical order among the plain
    `import x` lines) unless the module is imported already."""
    statement = f"import {module}"
    if re.search(rf"^{re.escape(statement)}\s*$", text, flags=re.MULTILINE):
        return text
    tree = parse(text, "the file")
    plain = [node for node in tree.body if isinstance(node, ast.Import)]
    lines = text.splitlines()
    if plain:
        later = [node for node in plain if node.names[0].name > module]
        at = later[0].lineno - 1 if later else plain[-1].end_lineno
    else:
        body = [node for node in tree.body if not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
                and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        at = body[0].lineno - 1 if body else len(lines)
    lines.insert(at, statement)
    return "\n".join(lines) + "\n"


# -- methods ------------------------------------------------------------------------------

def parse(text: str, rel: str) -> ast.Module:
    try:
        return ast.parse(text)
    except SyntaxError as exc:
        raise RecipeNotApplicable(f"{rel} does not parse: {exc}") from exc


def _method(text: str, rel: str, class_name: str, method: str) -> ast.FunctionDef:
    tree = parse(text, rel)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    return item
            raise RecipeNotApplicable(f"{rel}: class {class_name} has no method {method}()")
    raise RecipeNotApplicable(f"{rel}: no class {class_name}")


def method_args(text: str, rel: str, class_name: str, method: str) -> list[str]:
    """The method's positional parameter names, without `self`."""
    return [a.arg for a in _method(text, rel, class_name, method).args.args[1:]]


def prepend_to_method(text: str, rel: str, class_name: str, method: str, code: str) -> str:
    """Insert `code` as the first statements of the method (after its docstring)."""
    node = _method(text, rel, class_name, method)
    body = node.body
    first = body[1] if (len(body) > 1 and isinstance(body[0], ast.Expr)
                        and isinstance(body[0].value, ast.Constant)
                        and isinstance(body[0].value.value, str)) else body[0]
    lines = text.splitlines()
    at = first.lineno - 1
    lines[at:at] = _block(code, _indent_of(lines[at]))
    return "\n".join(lines) + "\n"


def append_to_method(text: str, rel: str, class_name: str, method: str, code: str) -> str:
    """Insert `code` after the method's last statement (which must not be a return)."""
    node = _method(text, rel, class_name, method)
    last = node.body[-1]
    if isinstance(last, ast.Return):
        raise RecipeNotApplicable(f"{rel}: {class_name}.{method}() ends in a return; cannot append")
    lines = text.splitlines()
    indent = _indent_of(lines[last.lineno - 1])
    lines[last.end_lineno:last.end_lineno] = _block(code, indent)
    return "\n".join(lines) + "\n"


def wrap_method_return(text: str, rel: str, class_name: str, method: str, code: str,
                       var: str = "out") -> str:
    """Turn the method's final `return EXPR` into `var = EXPR; <code>; return var`.

    `code` reads and rebinds `var`. Applying this twice keeps a single `var = ...` line."""
    node = _method(text, rel, class_name, method)
    last = node.body[-1]
    if not isinstance(last, ast.Return) or last.value is None:
        raise RecipeNotApplicable(f"{rel}: {class_name}.{method}() does not end in `return <value>`")
    lines = text.splitlines()
    start, end = last.lineno - 1, last.end_lineno
    indent = _indent_of(lines[start])
    new: list[str] = []
    if not (isinstance(last.value, ast.Name) and last.value.id == var):
        source = "\n".join(lines[start:end]).strip()
        assert source.startswith("return")
        new += (indent + f"{var} =" + source[len("return"):]).splitlines()
    new += _block(code, indent) + [f"{indent}return {var}"]
    lines[start:end] = new
    return "\n".join(lines) + "\n"


# -- constants ----------------------------------------------------------------------------

def py_literal(value: Any) -> str:
    """Python source for a plain value, with double-quoted strings (the template's style)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(py_literal(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no literal for {type(value).__name__}")


def _constant_line(text: str, rel: str, name: str) -> tuple[list[str], int, str, str]:
    """(lines, index, value source, trailing comment) of the one top-level `NAME = value`."""
    lines = text.splitlines()
    at = _unique_line(lines, rf"^{re.escape(name)}\s*=(?!=)", rel, f"the constant {name}")
    line = lines[at]
    comment_col = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line + "\n").readline):
            if tok.type == tokenize.COMMENT:
                comment_col = tok.start[1]
    except (tokenize.TokenError, SyntaxError) as exc:
        raise RecipeNotApplicable(f"{rel}: {name} = ... spans several lines; a config recipe "
                                  "edits single-line constants only") from exc
    head = line[:comment_col] if comment_col is not None else line
    value_src = head.split("=", 1)[1].strip()
    return lines, at, value_src, (line[comment_col:] if comment_col is not None else "")


def get_constant(text: str, rel: str, name: str) -> Any:
    _, _, value_src, _ = _constant_line(text, rel, name)
    try:
        return ast.literal_eval(value_src)
    except (ValueError, SyntaxError) as exc:
        raise RecipeNotApplicable(f"{rel}: {name} = {value_src} is not a plain literal") from exc


def set_constant(text: str, rel: str, name: str, value: Any) -> str:
    """Rewrite the one line `NAME = <literal>  # comment`, keeping the comment's column.

    Raises RecipeNotApplicable when the constant is missing, duplicated, not a literal on
    one line, or already has this value."""
    lines, at, value_src, comment = _constant_line(text, rel, name)
    old = get_constant(text, rel, name)
    if old == value:
        raise RecipeNotApplicable(f"{rel}: {name} is already {py_literal(value)}")
    new = f"{name} = {py_literal(value)}"
    if comment:
        column = len(lines[at]) - len(comment)
        new = new.ljust(column) + comment if len(new) + 1 < column else new + "  " + comment
    lines[at] = new
    return "\n".join(lines) + "\n"


# -- calls ----------------------------------------------------------------------------------

def find_call(text: str, rel: str, function: str, callee: str) -> ast.Call:
    """The one call of `callee` (a name like CTRModel, or an attribute like
    binary_cross_entropy_with_logits) inside the top-level function `function`."""
    tree = parse(text, rel)
    scope = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function), None)
    if scope is None:
        raise RecipeNotApplicable(f"{rel}: no top-level function {function}()")
    calls = [node for node in ast.walk(scope) if isinstance(node, ast.Call)
             and ((isinstance(node.func, ast.Name) and node.func.id == callee)
                  or (isinstance(node.func, ast.Attribute) and node.func.attr == callee))]
    if len(calls) != 1:
        raise RecipeNotApplicable(f"{rel}: expected one call of {callee}(...) in {function}(), "
                                  f"found {len(calls)}")
    return calls[0]


def source_of(text: str, node: ast.AST) -> str:
    segment = ast.get_source_segment(text, node)
    assert segment is not None
    return segment


def replace_node(text: str, node: ast.AST, new: str) -> str:
    """Replace the exact source span of `node` (which may cover several lines) by `new`."""
    lines = text.splitlines(keepends=True)
    start = sum(len(line) for line in lines[: node.lineno - 1]) + _byte_to_char(lines[node.lineno - 1], node.col_offset)
    end = sum(len(line) for line in lines[: node.end_lineno - 1]) + _byte_to_char(
        lines[node.end_lineno - 1], node.end_col_offset)
    return text[:start] + new + text[end:]


def _byte_to_char(line: str, offset: int) -> int:
    """ast offsets count UTF-8 bytes; str slicing counts characters."""
    return len(line.encode("utf-8")[:offset].decode("utf-8", errors="ignore"))


def replace_line(text: str, rel: str, pattern: str, new: str, what: str) -> str:
    """Replace the unique line matching `pattern` by `new` (indentation kept)."""
    lines = text.splitlines()
    at = _unique_line(lines, pattern, rel, what)
    lines[at] = _indent_of(lines[at]) + new
    return "\n".join(lines) + "\n"
