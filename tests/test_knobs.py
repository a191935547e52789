"""Knob edits: each file kind round-trips, and a write changes that value's lines and no others."""

import ast
import difflib
import json

import pytest

from agentx.workspace import KnobSpec
from tools.knobs import KnobError, read_knob, write_knob

PYTHON = '''"""A model."""
import os

BASE = ["user_id"]
LABEL = "café"; C = 1.0  # regularisation
DEPTH: int = 3   # tree depth
NUMERIC = [
    "age",
    "release_year",
]
PACKED = ["a",
          "b"]
LR = 10 ** -2
CATEGORICAL = BASE + ["item_id"]
MODEL = "logreg"  # or "hgb"


def main(run_dir):
    C = 5.0   # a local of the same name is not the knob
    return os.path.join(run_dir, MODEL)
'''

TOML = '''# model settings
[model]            # the model
kind = "logreg"    # logreg | hgb
C = 1.0            # regularisation

[model.params]
depth = 3
features = ["age", "zip"]   # inputs
'''

YAML = '''# model settings
model:
    kind: "logreg"   # logreg | hgb
    C: 1.0           # regularisation
    params:
        depth: 3
        features:
          - age      # first
          - zip
train:
    epochs: 4
'''

JSON = '''{
  "model": {
    "kind": "logreg",
    "C": 1.0,
    "params": {
      "depth": 3,
      "features": [
        "age",
        "zip"
      ]
    }
  },
  "train": {"epochs": 4}
}
'''

FILES = {"train.py": PYTHON, "conf/model.toml": TOML, "conf/model.yaml": YAML, "conf/model.json": JSON}


def knob(file, name, type_, **extra):
    return KnobSpec(file=file, name=name, type=type_, **extra)


FLOAT = {"low": 1e-4, "high": 100.0, "log": True}
INT = {"low": 1, "high": 12}
KIND = {"choices": ["logreg", "hgb"]}

# (spec, value before, value written)
CASES = [
    (knob("train.py", "C", "float", **FLOAT), 1.0, 0.25),
    (knob("train.py", "DEPTH", "int", **INT), 3, 8),
    (knob("train.py", "MODEL", "categorical", **KIND), "logreg", "hgb"),
    (knob("train.py", "NUMERIC", "features"), ["age", "release_year"], ["age", "gender", "occupation"]),
    (knob("train.py", "PACKED", "features"), ["a", "b"], ["c"]),
    (knob("train.py", "LR", "float", **FLOAT), None, 0.003),
    (knob("train.py", "CATEGORICAL", "features"), None, ["user_id", "item_id", "genres"]),
    (knob("conf/model.toml", "model.C", "float", **FLOAT), 1.0, 0.5),
    (knob("conf/model.toml", "model.kind", "categorical", **KIND), "logreg", "hgb"),
    (knob("conf/model.toml", "model.params.depth", "int", **INT), 3, 6),
    (knob("conf/model.toml", "model.params.features", "features"), ["age", "zip"], ["zip", "genres"]),
    (knob("conf/model.yaml", "model.C", "float", **FLOAT), 1.0, 0.5),
    (knob("conf/model.yaml", "model.kind", "categorical", **KIND), "logreg", "hgb"),
    (knob("conf/model.yaml", "model.params.depth", "int", **INT), 3, 6),
    (knob("conf/model.yaml", "model.params.features", "features"), ["age", "zip"], ["zip", "genres"]),
    (knob("conf/model.json", "model.C", "float", **FLOAT), 1.0, 0.5),
    (knob("conf/model.json", "model.kind", "categorical", **KIND), "logreg", "hgb"),
    (knob("conf/model.json", "model.params.depth", "int", **INT), 3, 6),
    (knob("conf/model.json", "model.params.features", "features"), ["age", "zip"], ["zip", "genres", "age"]),
]


@pytest.fixture
def root(tmp_path):
    for rel, text in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def value_lines(spec, text):
    """0-based indices of the lines that hold the knob's value in `text`, found independently
    of tools/knobs.py: the ast span for Python, else the key's line and its continuation."""
    lines = text.splitlines()
    if spec.is_python:
        node = next(n for n in ast.parse(text).body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    and getattr(n.targets[0] if isinstance(n, ast.Assign) else n.target, "id", None) == spec.name)
        return set(range(node.value.lineno - 1, node.value.end_lineno))
    key = spec.keys[-1]
    starts = [i for i, line in enumerate(lines) if line.strip().startswith((f"{key} =", f"{key}:", f'"{key}":'))]
    assert len(starts) == 1, starts
    start = end = starts[0]
    indent = len(lines[start]) - len(lines[start].lstrip())
    while end + 1 < len(lines) and (len(lines[end + 1]) - len(lines[end + 1].lstrip()) > indent
                                    or lines[end + 1].strip() in ("]", "],")):
        end += 1
    return set(range(start, end + 1))


def changed_lines(before, after):
    """Indices of lines of `before` that a line diff replaces or deletes, and whether lines
    were inserted anywhere else."""
    changed = set()
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            changed |= set(range(i1, i2))
        elif tag == "insert":
            changed.add(i1 - 1)        # an inserted line continues the line above it
    return changed


@pytest.mark.parametrize("spec,before,after", CASES, ids=[f"{c[0].file}:{c[0].name}" for c in CASES])
def test_write_changes_only_the_value(root, spec, before, after):
    original = (root / spec.file).read_text()
    assert read_knob(root, spec) == before
    write_knob(root, spec, after)
    assert read_knob(root, spec) == after
    edited = (root / spec.file).read_text()
    changed = changed_lines(original, edited)
    span = value_lines(spec, original)
    assert changed and changed <= span, (changed, span, edited)
    if len(span) == 1:
        assert changed == span
    for rel, text in FILES.items():   # the other files are untouched
        if rel != spec.file:
            assert (root / rel).read_text() == text


def test_python_keeps_comment_annotation_and_layout(root):
    write_knob(root, knob("train.py", "C", "float", **FLOAT), 0.03)
    write_knob(root, knob("train.py", "DEPTH", "int", **INT), 5)
    write_knob(root, knob("train.py", "NUMERIC", "features"), ["age", "zip_prefix"])
    text = (root / "train.py").read_text()
    assert 'LABEL = "café"; C = 0.03  # regularisation\n' in text
    assert "DEPTH: int = 5   # tree depth\n" in text
    assert 'NUMERIC = [\n    "age",\n    "zip_prefix",\n]\n' in text
    assert "    C = 5.0   # a local of the same name is not the knob\n" in text
    write_knob(root, knob("train.py", "PACKED", "features"), ["x", "y"])
    assert 'PACKED = ["x", "y"]\n' in (root / "train.py").read_text()


def test_config_files_keep_comments_and_format(root):
    write_knob(root, knob("conf/model.toml", "model.C", "float", **FLOAT), 0.5)
    assert (root / "conf/model.toml").read_text() == TOML.replace("C = 1.0  ", "C = 0.5  ")
    write_knob(root, knob("conf/model.yaml", "model.kind", "categorical", **KIND), "hgb")
    assert (root / "conf/model.yaml").read_text() == YAML.replace('"logreg"   #', '"hgb"      #')  # comment column kept
    write_knob(root, knob("conf/model.json", "model.params.features", "features"), ["genres"])
    expected = JSON.replace('[\n        "age",\n        "zip"\n      ]', '[\n        "genres"\n      ]')
    assert (root / "conf/model.json").read_text() == expected
    assert json.loads(expected)["model"]["params"]["features"] == ["genres"]


def test_an_unchanged_value_leaves_the_file_alone(root):
    (root / "train.py").write_text(PYTHON.replace("C = 1.0", "C = 1.00"))
    write_knob(root, knob("train.py", "C", "float", **FLOAT), 1.0)
    assert "C = 1.00  # regularisation" in (root / "train.py").read_text()


@pytest.mark.parametrize("spec,words", [
    (knob("train.py", "MISSING", "float", **FLOAT), ["train.py", "MISSING", "module-level constant"]),
    (knob("conf/model.toml", "model.nope", "float", **FLOAT), ["conf/model.toml", "model.nope"]),
    (knob("conf/model.yaml", "model.params.nope", "int", **INT), ["conf/model.yaml", "model.params.nope"]),
    (knob("conf/model.json", "nope.depth", "int", **INT), ["conf/model.json", "nope.depth", "'nope'"]),
    (knob("conf/model.yaml", "model.C.inner", "float", **FLOAT), ["conf/model.yaml", "model.C.inner", "model.C"]),
    (knob("other.py", "C", "float", **FLOAT), ["other.py", "no such file"]),
])
def test_missing_constant_or_key_is_a_clear_error(root, spec, words):
    for action in (lambda: read_knob(root, spec), lambda: write_knob(root, spec, 2.0 if spec.type == "float" else 2)):
        with pytest.raises(KnobError) as info:
            action()
        for word in words:
            assert word in str(info.value), (word, str(info.value))
    assert "\n" not in str(info.value)


def test_twice_assigned_constant_is_refused(root):
    (root / "train.py").write_text(PYTHON + "C = 2.0\n")
    with pytest.raises(KnobError, match=r"train.py: C is assigned 2 times \(lines 5, 21\)"):
        read_knob(root, knob("train.py", "C", "float", **FLOAT))


@pytest.mark.parametrize("spec,value,words", [
    (knob("train.py", "C", "float", **FLOAT), 500.0, ["outside"]),
    (knob("train.py", "C", "float", **FLOAT), "big", ["not a finite number"]),
    (knob("train.py", "DEPTH", "int", **INT), 2.5, ["whole number"]),
    (knob("train.py", "MODEL", "categorical", **KIND), "svm", ["not one of"]),
    (knob("train.py", "NUMERIC", "features", choices=["age", "zip"]), ["genres"], ["genres", "choices"]),
    (knob("train.py", "NUMERIC", "features", min_size=2), ["age"], ["min_size 2"]),
    (knob("train.py", "NUMERIC", "features"), ["age", "age"], ["twice"]),
])
def test_values_are_checked_before_writing(root, spec, value, words):
    with pytest.raises(KnobError) as info:
        write_knob(root, spec, value)
    assert all(word in str(info.value) for word in words), str(info.value)
    assert (root / "train.py").read_text() == PYTHON
