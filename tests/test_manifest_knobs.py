"""`[knobs.NAME]` in agentx.toml: the documented form loads; each mistake is one line naming the knob."""

import pytest
from conftest import TINY_MANIFEST

from agentx.workspace import ManifestError, load_manifest

KNOBS = """
[knobs.C]
file = "train.py"      # or "conf/model.yaml"
name = "C"             # constant name, or a dotted key path in a config file
type = "float"         # float | int | categorical | bool | features
low = 0.001
high = 100.0
log = true

[knobs.MODEL]
file = "train.py"
name = "MODEL"
type = "categorical"
choices = ["logreg", "hgb"]

[knobs.NUMERIC]
file = "train.py"
name = "NUMERIC"
type = "features"      # a list of catalog feature names (add, drop, subset)

[knobs.DEPTH]
file = "conf/model.yaml"
name = "model.params.depth"
type = "int"
low = 2
high = 12

[knobs.SHUFFLE]
file = "conf/model.yaml"
name = "train.shuffle"
type = "bool"
"""

GOOD = TINY_MANIFEST.replace('editable = ["train.py"]', 'editable = ["train.py", "conf/"]') + KNOBS


def write(tmp_path, text):
    (tmp_path / "agentx.toml").write_text(text)
    return tmp_path


def test_knobs_load(tmp_path):
    knobs = load_manifest(write(tmp_path, GOOD)).knobs
    assert list(knobs) == ["C", "MODEL", "NUMERIC", "DEPTH", "SHUFFLE"]
    assert (knobs["C"].low, knobs["C"].high, knobs["C"].log) == (0.001, 100.0, True)
    assert knobs["MODEL"].choices == ["logreg", "hgb"]
    assert knobs["NUMERIC"].choices is None and knobs["NUMERIC"].min_size is None
    assert knobs["DEPTH"].keys == ["model", "params", "depth"] and not knobs["DEPTH"].is_python
    assert knobs["C"].keys == ["C"] and knobs["C"].is_python


def test_no_knobs_is_fine(tmp_path):
    assert load_manifest(write(tmp_path, TINY_MANIFEST)).knobs == {}


# (name, change to GOOD, words the one-line error must contain)
BROKEN = [
    ("low above high", lambda t: t.replace("low = 0.001", "low = 1000.0"), ["'knobs.C'", "low must be below high"]),
    ("log needs positive low", lambda t: t.replace("low = 0.001", "low = 0.0"), ["'knobs.C'", "log = true needs low > 0"]),
    ("float without range", lambda t: t.replace("high = 100.0\n", ""), ["'knobs.C'", "needs low and high"]),
    ("int with fractional bound", lambda t: t.replace("low = 2\n", "low = 2.5\n"), ["'knobs.DEPTH'", "whole"]),
    ("categorical without choices", lambda t: t.replace('choices = ["logreg", "hgb"]\n', ""),
     ["'knobs.MODEL'", "needs choices"]),
    ("one choice", lambda t: t.replace('["logreg", "hgb"]', '["logreg"]'), ["'knobs.MODEL'", "at least two"]),
    ("choice twice", lambda t: t.replace('["logreg", "hgb"]', '["hgb", "hgb"]'), ["'knobs.MODEL'", "listed twice"]),
    ("file not editable", lambda t: t.replace('file = "train.py"      #', 'file = "data.py"      #'),
     ["'knobs'", "knob 'C'", "data.py", "paths.editable", "train.py"]),
    ("file outside workspace", lambda t: t.replace('file = "train.py"      #', 'file = "../x.py"      #'),
     ["'knobs.C.file'", "inside the workspace"]),
    ("unknown file kind", lambda t: t.replace('file = "conf/model.yaml"\nname = "model.params.depth"',
                                              'file = "conf/model.ini"\nname = "model.params.depth"'),
     ["'knobs.DEPTH.file'", ".toml"]),
    ("bad constant name", lambda t: t.replace('name = "C"', 'name = "C.x"'), ["'knobs.C'", "constant's name"]),
    ("bad key path", lambda t: t.replace('"train.shuffle"', '"train..shuffle"'), ["'knobs.SHUFFLE'", "dotted key path"]),
    ("unknown type", lambda t: t.replace('type = "float"', 'type = "real"'), ["'knobs.C.type'", "'features'"]),
    ("typo key", lambda t: t.replace("log = true", "logscale = true"), ["'knobs.C.logscale'", "not a known setting"]),
    ("range on a bool", lambda t: t.replace('type = "bool"', 'type = "bool"\nlow = 0'),
     ["'knobs.SHUFFLE'", "low do not apply to a bool knob"]),
    ("choices on a float", lambda t: t.replace("log = true", 'log = true\nchoices = [1.0, 2.0]'),
     ["'knobs.C'", "choices do not apply to a float knob"]),
    ("min_size above choices", lambda t: t.replace('type = "features"  ', 'min_size = 3\nchoices = ["age"]\ntype = "features"  '),
     ["'knobs.NUMERIC'", "min_size 3 is more than the 1 choices"]),
    ("feature names not strings", lambda t: t.replace('type = "features"  ', 'choices = [1, 2]\ntype = "features"  '),
     ["'knobs.NUMERIC'", "feature names"]),
]


@pytest.mark.parametrize("name,change,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_knob_is_one_line_naming_it(tmp_path, name, change, words):
    text = change(GOOD)
    assert text != GOOD
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, text))
    message = str(info.value)
    assert message.startswith(str(tmp_path / "agentx.toml") + ":") and "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
