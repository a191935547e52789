"""Knob values in config files, at a dotted key path, edited without reformatting the file.

TOML goes through tomlkit and YAML through ruamel.yaml's round trip (both keep comments,
order and quoting; for YAML the file's mapping and sequence indentation is guessed first,
so a re-dump lays it out as it was). JSON has no round-trip parser, so the value's span
is located with the standard library's scanner and replaced in place, in the file's
indentation. `tools/knobs.py` is the entry point; this module only knows formats.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Mapping, MutableMapping
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

import tomlkit
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import ScalarString
from ruamel.yaml.util import load_yaml_guess_indent


class KeyNotFound(ValueError):
    """The key path does not lead to a value (or the file cannot be parsed)."""


def read_key(text: str, rel: str, keys: list[str]) -> Any:
    """The plain value at `keys` in a TOML, YAML or JSON document."""
    kind = _kind(rel)
    if kind == "toml":
        item = _parent(_toml(text), keys)[keys[-1]]
        return item.unwrap() if hasattr(item, "unwrap") else item
    if kind == "yaml":
        return _plain(_parent(_yaml_load(text)[1], keys)[keys[-1]])
    return _parent(_json(text), keys)[keys[-1]]


def write_key(text: str, rel: str, keys: list[str], value: Any) -> str:
    """`text` with the value at `keys` replaced by `value`; nothing else changes."""
    kind = _kind(rel)
    if kind == "toml":
        doc = _toml(text)
        _parent(doc, keys)[keys[-1]] = value
        return tomlkit.dumps(doc)
    if kind == "yaml":
        yaml, data = _yaml_load(text)
        parent = _parent(data, keys)
        parent[keys[-1]] = _yaml_value(parent[keys[-1]], value)
        out = io.StringIO()
        yaml.dump(data, out)
        return out.getvalue()
    _parent(_json(text), keys)                   # a clear error for a missing key
    start, end = _json_span(text, keys)
    return text[:start] + _json_source(text, start, end, value) + text[end:]


def _kind(rel: str) -> str:
    suffix = rel.rsplit(".", 1)[-1]
    return {"yml": "yaml"}.get(suffix, suffix)


def _parent(root: Any, keys: list[str]) -> MutableMapping:
    """The mapping holding the last key; KeyNotFound names the first missing step."""
    node = root
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping):
            raise KeyNotFound(f"no key {'.'.join(keys)!r}: {'.'.join(keys[:depth])} is not a table/mapping")
        if key not in node:
            missing = ".".join(keys[:depth + 1])
            raise KeyNotFound(f"no key {'.'.join(keys)!r}"
                              + (f" (there is no {missing!r})" if depth < len(keys) - 1 else ""))
        if depth < len(keys) - 1:
            node = node[key]
    return node  # type: ignore[return-value]


# -- TOML ------------------------------------------------------------------------------------

def _toml(text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise KeyNotFound(f"not valid TOML ({exc})") from None


# -- YAML ------------------------------------------------------------------------------------

def _yaml_load(text: str) -> tuple[YAML, Any]:
    """A round-trip YAML set to this file's layout, and the loaded document."""
    try:
        _, sequence, offset = load_yaml_guess_indent(text)
    except YAMLError as exc:
        raise KeyNotFound(f"not valid YAML ({exc})") from None
    mapping = _mapping_indent(text)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096                              # never re-wrap a long line
    if re.search(r"^\s*- ", text, flags=re.MULTILINE) and sequence:
        yaml.indent(mapping=mapping, sequence=sequence, offset=offset or 0)
    else:
        yaml.indent(mapping=mapping, sequence=mapping, offset=0)
    yaml.explicit_start = text.lstrip().startswith("---")
    return yaml, yaml.load(text)


def _mapping_indent(text: str) -> int:
    """How far a nested mapping is indented under its key (2 when nothing is nested)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for parent, child in itertools.pairwise(lines):
        if re.match(r"^\s*[^\s#-][^#]*:\s*(#.*)?$", parent):
            step = (len(child) - len(child.lstrip())) - (len(parent) - len(parent.lstrip()))
            if step > 0 and not child.lstrip().startswith("-"):
                return step
    return 2


def _yaml_value(old: Any, value: Any) -> Any:
    """`value` in the old value's style: quoted strings stay quoted, flow lists stay flow."""
    if isinstance(old, ScalarString) and isinstance(value, str):
        return type(old)(value)
    if isinstance(value, list):
        seq = CommentedSeq(value)
        if isinstance(old, CommentedSeq) and old.fa.flow_style():
            seq.fa.set_flow_style()
        return seq
    return value


def _plain(value: Any) -> Any:
    """ruamel's commented containers and scalar subclasses as plain Python values."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


# -- JSON ------------------------------------------------------------------------------------

def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyNotFound(f"not valid JSON ({exc})") from None


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _json_span(text: str, keys: list[str]) -> tuple[int, int]:
    """(start, end) character offsets of the value at `keys` (the last duplicate key wins,
    as in json.loads). The text is known to be valid JSON and the path to exist."""
    decoder = json.JSONDecoder()
    start = _skip(text, 0)
    end = -1
    for key in keys:
        at = _skip(text, start + 1)                  # past the object's "{"
        found = None
        while text[at] != "}":
            name, at = scanstring(text, at + 1)
            at = _skip(text, _skip(text, at) + 1)    # past the ":"
            _, stop = decoder.raw_decode(text, at)
            if name == key:
                found = (at, stop)
            at = _skip(text, stop)
            if text[at] == ",":
                at = _skip(text, at + 1)
        assert found is not None
        start, end = found
    return start, end


def _json_source(text: str, start: int, end: int, value: Any) -> str:
    """JSON for `value`: one line where the old value was one line, else indented as the file."""
    if "\n" not in text[start:end] or not isinstance(value, (list, dict)) or not value:
        return json.dumps(value, ensure_ascii=False)
    unit = re.search(r"\n([ \t]+)\S", text)
    indent = unit.group(1) if unit else "  "
    line_start = text.rfind("\n", 0, start) + 1
    base = re.match(r"[ \t]*", text[line_start:]).group()  # type: ignore[union-attr]
    dumped = json.dumps(value, ensure_ascii=False, indent=indent)
    return dumped.replace("\n", "\n" + base)
