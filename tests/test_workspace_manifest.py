"""The manifest parser: a good manifest loads; every broken one names file, key and fix."""

import re

import pytest

from agentx.workspace import ManifestError, load_manifest

GOOD = """
[workspace]
name = "demo"

[train]
entrypoint = "train:main"

[data]
module = "data.py"

[metric]
primary = "auc"
direction = "maximize"
min_effect = 0.002
secondary = ["logloss"]

[tiers.micro]
train_rows = 400
eval_rows = 100
epochs = 1
timeout_s = 60

[tiers.full]
epochs = 4
timeout_s = 600

[guardrails]
max_params = 1000000
max_secondary_regression = { logloss = 0.01 }

[paths]
editable = ["model.py", "train.py"]
protected = ["data.py", "agentx.toml", "eval/"]
"""


def write(tmp_path, text):
    (tmp_path / "agentx.toml").write_text(text)
    return tmp_path


def test_good_manifest_loads(tmp_path):
    m = load_manifest(write(tmp_path, GOOD))
    assert m.train.module == "train" and m.train.function == "main"
    assert m.metric.sign == 1
    assert m.tiers.micro.train_rows == 400 and m.tiers.full.train_rows is None
    assert m.guardrails.max_secondary_regression == {"logloss": 0.01}
    assert m.paths.is_protected("eval/score.py") and not m.paths.is_protected("evaluate.py")
    assert m.paths.is_editable("model.py") and not m.paths.is_editable("data.py")
    assert m.features.catalog == "features.yaml"


# (name, change to GOOD, words the error must contain)
BROKEN = [
    ("not toml", lambda t: t + "\n[paths\n", ["not valid TOML"]),
    ("missing section", lambda t: t.replace('[train]\nentrypoint = "train:main"\n', ""), ["'train'", "missing"]),
    ("missing key", lambda t: t.replace('entrypoint = "train:main"', ""), ["'train.entrypoint'", "missing"]),
    ("bad entrypoint", lambda t: t.replace('"train:main"', '"train.py"'), ["'train.entrypoint'", "module:function"]),
    ("unknown metric", lambda t: t.replace('primary = "auc"', 'primary = "ndcg"'), ["'metric.primary'", "unknown metric 'ndcg'", "ndcg@K"]),
    ("direction mismatch", lambda t: t.replace('"maximize"', '"minimize"'), ["'metric'", "auc is a metric to maximize"]),
    ("negative effect", lambda t: t.replace("0.002", "-1"), ["'metric.min_effect'", "greater than or equal to 0"]),
    ("wrong type", lambda t: t.replace("epochs = 4", 'epochs = "four"'), ["'tiers.full.epochs'", "integer"]),
    ("zero timeout", lambda t: t.replace("timeout_s = 600", "timeout_s = 0"), ["'tiers.full.timeout_s'", "greater than 0"]),
    ("micro without rows", lambda t: t.replace("train_rows = 400\n", ""), ["'tiers'", "train_rows"]),
    ("typo key", lambda t: t.replace("max_params", "max_param"), ["'guardrails.max_param'", "not a known setting"]),
    ("absolute path", lambda t: t.replace('"model.py", "train.py"', '"/etc/passwd"'), ["'paths.editable'", "inside the workspace"]),
    ("escaping path", lambda t: t.replace('"eval/"', '"../secrets"'), ["'paths.protected'", "no '..'"]),
    ("data module unprotected", lambda t: t.replace('"data.py", "agentx.toml"', '"agentx.toml"'), ["paths.protected must cover 'data.py'"]),
    ("manifest unprotected", lambda t: t.replace('"data.py", "agentx.toml"', '"data.py"'), ["paths.protected must cover 'agentx.toml'"]),
    ("overlap", lambda t: t.replace('"model.py", "train.py"', '"model.py", "data.py"'), ["both editable and protected: data.py"]),
    ("data module not python", lambda t: t.replace('module = "data.py"', 'module = "data.csv"'), ["'data.module'", ".py"]),
    ("empty editable", lambda t: t.replace('["model.py", "train.py"]', "[]"), ["'paths.editable'", "at least 1"]),
    ("bad secondary", lambda t: t.replace('secondary = ["logloss"]', 'secondary = ["mse"]'), ["'metric.secondary'", "unknown metric 'mse'"]),
]


@pytest.mark.parametrize("name,change,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_manifest_names_file_key_and_fix(tmp_path, name, change, words):
    path = write(tmp_path, change(GOOD))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "agentx.toml") + ":"), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(ManifestError, match=re.escape("agentx init DIR")):
        load_manifest(tmp_path)


def test_bundled_template_manifest_is_valid():
    from pathlib import Path

    import workspaces

    manifest = load_manifest(Path(workspaces.__file__).parent / "movielens-ctr")
    assert manifest.metric.primary == "auc"
    assert manifest.paths.is_protected(manifest.data.module)
