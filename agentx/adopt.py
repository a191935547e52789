"""`agentx adopt PATH`: starter `agentx.toml` and `features.yaml` for an existing model repo.

The repository must already follow the data-module and run-directory contracts
(docs/contracts.md): a `prepare(cache_dir, out_dir)` that writes train/valid/test CSVs, and
an entrypoint `main(run_dir)`. `adopt` finds both (or is told), runs the data module ONCE in
a child process (its code is not trusted yet, so never in agentx's own) into a temporary
folder, reads the columns of train.csv and writes:

- `agentx.toml`: [workspace] named after the folder, [train] entrypoint (and a preload of the
  entrypoint's third-party imports), [data] module and columns, [metric] AUC, micro and full
  tiers, [paths] (editable: the other Python files and config files; protected: the data
  module, the repo modules it imports, config files it names, the manifest and the
  catalog), commented [knobs] and [recipes] examples;
- `features.yaml`: one entry per input column, with TODO definitions and groups and a type
  guessed from the values.

Both are validated with the same parsers agentx uses before anything is written. What it
guesses is marked TODO; a person edits, declares knobs, commits, and runs `agentx check`.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agentx.errors import UserError
from agentx.paths import cache_dir
from agentx.workspace import MANIFEST, TrainSpec, parse_manifest
from tools.feature_catalog import parse_catalog
from tools.git_repo import WorkspaceRepo
from tools.sandbox import scrub_env

CATALOG = "features.yaml"
CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
SAMPLE_ROWS = 5000            # rows of train.csv read to guess a column's type
PROBE = """
import importlib.util, pathlib, sys
root, module, cache, out = sys.argv[1:5]
sys.path.insert(0, root)
spec = importlib.util.spec_from_file_location("agentx_adopt_data", pathlib.Path(root) / module)
data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(data)
if not callable(getattr(data, "prepare", None)):
    sys.exit(f"{module} defines no prepare(cache_dir, out_dir) function")
pathlib.Path(cache).mkdir(parents=True, exist_ok=True)
data.prepare(pathlib.Path(cache), pathlib.Path(out))
"""


class AdoptError(UserError):
    """The repository cannot be adopted as it is; the message says what to pass or fix."""


@dataclass(frozen=True)
class Column:
    name: str
    role: str                 # id | label | user | item | feature
    type: str                 # numeric | categorical (what features.yaml gets)


@dataclass(frozen=True)
class Adoption:
    """What `adopt` found and wrote."""

    root: Path
    data_module: str
    entrypoint: str
    columns: list[Column]
    editable: list[str]
    protected: list[str]
    preload: list[str]
    train_rows: int
    written: list[Path] = field(default_factory=list)

    @property
    def features(self) -> list[Column]:
        return [c for c in self.columns if c.role in ("feature", "user", "item")]

    def column(self, role: str) -> str | None:
        return next((c.name for c in self.columns if c.role == role), None)


def adopt(path: Path, *, data: str | None = None, entrypoint: str | None = None, id_column: str = "row_id",
          label_column: str = "label", force: bool = False, timeout_s: float = 600.0) -> Adoption:
    """Write `agentx.toml` and `features.yaml` into the git repository at `path`."""
    repo = WorkspaceRepo(path)
    root = repo.root
    if Path(path).resolve() != root:
        raise AdoptError(f"{path} is inside the git repository {root}; adopt its top folder")
    if (root / MANIFEST).exists() and not force:
        raise AdoptError(f"{root / MANIFEST} already exists; edit it, or pass --force to overwrite it "
                         f"(and {CATALOG})")
    files = _python_and_config_files(repo)
    python = [f for f in files if f.endswith(".py")]
    data = _data_module(root, python, data)
    entrypoint = _entrypoint(root, python, data, entrypoint)
    columns, train_rows = _columns(root, data, id_column, label_column, timeout_s)
    if not [c for c in columns if c.role != "id" and c.role != "label"]:
        raise AdoptError(f"{data}: train.csv has only the id and label columns; a model needs input columns")
    protected = _protected(root, data, files)
    entry_file = _module_file(root, TrainSpec(entrypoint=entrypoint).module)
    if entry_file in protected:
        raise AdoptError(f"the data module {data} imports the entrypoint's module {entry_file}, so it would be "
                         "protected and experiments could not change it; move what data.py needs out of it")
    editable = [entry_file] + sorted(f for f in files if f not in protected and f != entry_file
                                     and Path(f).name not in (MANIFEST, CATALOG) and not _is_test(f))
    adoption = Adoption(root, data, entrypoint, columns, editable, protected,
                        _preload(root, entry_file, python), train_rows)
    manifest, catalog = manifest_text(adoption), catalog_text(adoption)
    parse_manifest(tomllib.loads(manifest), source=f"{MANIFEST} (generated)")   # our own bug if either fails
    parse_catalog(yaml.safe_load(catalog), source=f"{CATALOG} (generated)")
    (root / MANIFEST).write_text(manifest, encoding="utf-8")
    (root / CATALOG).write_text(catalog, encoding="utf-8")
    adoption.written.extend([root / MANIFEST, root / CATALOG])
    return adoption


# -- finding the parts ---------------------------------------------------------------------

def _python_and_config_files(repo: WorkspaceRepo) -> list[str]:
    """Tracked and untracked-but-not-ignored .py and config files, repo-relative."""
    listed = repo.repo.git.ls_files("--cached", "--others", "--exclude-standard").splitlines()
    return sorted({f for f in listed if f.endswith((".py",) + CONFIG_SUFFIXES)
                   and not any(part.startswith(".") for part in Path(f).parts)
                   and (repo.root / f).is_file()})


def _is_test(rel: str) -> bool:
    parts = Path(rel).parts
    return "tests" in parts[:-1] or parts[-1].startswith("test_") or parts[-1] == "conftest.py"


def _parse(root: Path, rel: str) -> ast.Module | None:
    try:
        return ast.parse((root / rel).read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None


def _functions(tree: ast.Module | None) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in (tree.body if tree else []) if isinstance(n, ast.FunctionDef)}


def _data_module(root: Path, python: list[str], given: str | None) -> str:
    if given is not None:
        if not given.endswith(".py") or not (root / given).is_file():
            raise AdoptError(f"--data {given}: no such .py file in {root}")
        if "prepare" not in _functions(_parse(root, given)):
            raise AdoptError(f"--data {given}: defines no module-level prepare(cache_dir, out_dir)")
        return Path(given).as_posix()
    found = [f for f in python if not _is_test(f) and "prepare" in _functions(_parse(root, f))]
    if len(found) != 1:
        what = f"several files define prepare() ({', '.join(found)})" if found else \
            "no .py file defines a module-level prepare(cache_dir, out_dir)"
        raise AdoptError(f"{root}: {what}; pass --data FILE (the data module: docs/contracts.md)")
    return found[0]


def _entrypoint(root: Path, python: list[str], data: str, given: str | None) -> str:
    if given is not None:
        try:
            spec = TrainSpec(entrypoint=given)
        except ValueError:
            raise AdoptError(f'--entrypoint {given!r}: must look like "module:function", e.g. "train:main"') from None
        rel = _module_file(root, spec.module)
        if spec.function not in _functions(_parse(root, rel)):
            raise AdoptError(f"--entrypoint {given}: {rel} defines no module-level function {spec.function}")
        return given
    found = []
    for rel in python:
        main = _functions(_parse(root, rel)).get("main")
        if rel != data and not _is_test(rel) and main and main.args.args and main.args.args[0].arg == "run_dir":
            module = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            if all(p.isidentifier() for p in module.split(".")):
                found.append(f"{module}:main")
    if len(found) != 1:
        what = f"several files define main(run_dir) ({', '.join(found)})" if found else \
            "no .py file defines a module-level main(run_dir, ...)"
        raise AdoptError(f"{root}: {what}; pass --entrypoint module:function")
    return found[0]


def _module_file(root: Path, module: str) -> str:
    base = module.replace(".", "/")
    for rel in (f"{base}.py", f"{base}/__init__.py"):
        if (root / rel).is_file():
            return rel
    raise AdoptError(f"module {module}: neither {base}.py nor {base}/__init__.py exists in {root}")


def _imports(tree: ast.Module | None) -> list[str]:
    """Top-level module names imported at the top of a module (absolute imports only)."""
    names = []
    for node in tree.body if tree else []:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _protected(root: Path, data: str, files: list[str]) -> list[str]:
    """The data module, the repo's modules it imports, the config files it names, the
    manifest and the catalog: what decides the data must not change in an experiment."""
    local = {f.removesuffix(".py").removesuffix("/__init__").replace("/", "."): f for f in files if f.endswith(".py")}
    source = (root / data).read_text(encoding="utf-8")
    imported = [local[name] for name in _imports(_parse(root, data)) if name in local]
    configs = [f for f in files if f.endswith(CONFIG_SUFFIXES) and Path(f).name in source
               and Path(f).name not in (MANIFEST, CATALOG)]
    return list(dict.fromkeys([data, *imported, *configs, MANIFEST, CATALOG]))


def _preload(root: Path, entry_file: str, python: list[str]) -> list[str]:
    """The entrypoint's third-party imports, for warm kernels to import ahead of a run."""
    local = {Path(f).parts[0].removesuffix(".py") for f in python}
    return list(dict.fromkeys(name for name in _imports(_parse(root, entry_file))
                              if name.split(".")[0] not in sys.stdlib_module_names
                              and name.split(".")[0] not in local and name.split(".")[0] != "__future__"))


# -- running the data module once ----------------------------------------------------------

def _columns(root: Path, data: str, id_column: str, label_column: str,
             timeout_s: float) -> tuple[list[Column], int]:
    with tempfile.TemporaryDirectory(prefix="agentx-adopt.") as tmp:
        out = Path(tmp) / "splits"
        out.mkdir()
        env = scrub_env(os.environ) | {"PYTHONDONTWRITEBYTECODE": "1"}
        try:
            done = subprocess.run([sys.executable, "-c", PROBE, str(root), data, str(cache_dir() / "datasets"),
                                   str(out)], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise AdoptError(f"{data}: prepare() ran over {timeout_s:.0f} s; pass a larger --timeout") from None
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise AdoptError(f"{data}: prepare(cache_dir, out_dir) failed in a child process: {tail}")
        missing = [f"{s}.csv" for s in ("train", "valid", "test") if not (out / f"{s}.csv").is_file()]
        if missing:
            raise AdoptError(f"{data}: prepare() wrote no {', '.join(missing)} into out_dir (docs/contracts.md)")
        with (out / "train.csv").open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = [row for _, row in zip(range(SAMPLE_ROWS), reader)]
            train_rows = len(rows) + sum(1 for _ in reader)
    for role, name, option in (("id", id_column, "--id-column"), ("label", label_column, "--label-column")):
        if name not in header:
            raise AdoptError(f"{data}: train.csv has no {role} column {name!r} (its columns: "
                             f"{', '.join(header)}); pass {option} NAME")
    roles = {id_column: "id", label_column: "label", "user_id": "user", "item_id": "item"}
    return [Column(name, roles.get(name, "feature"),
                   _guess_type(name, [row[i] for row in rows if i < len(row)]))
            for i, name in enumerate(header)], train_rows


def _guess_type(name: str, values: list[str]) -> str:
    """numeric when every non-empty value is a number and the name is not an id's; else categorical."""
    present = [v for v in values if v.strip() not in ("", "nan", "NaN", "NA")]
    if name.lower().endswith(("_id", "id")) or not present:
        return "categorical"
    try:
        [float(v) for v in present]
    except ValueError:
        return "categorical"
    return "numeric"


# -- what is written -----------------------------------------------------------------------

def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _knob_example(adoption: Adoption) -> list[str]:
    """Commented [knobs] tables for real candidates in editable YAML files (the first
    positive number; a list of catalog names), else a placeholder."""
    names = {c.name for c in adoption.features}
    number = features = None
    for rel in adoption.editable:
        if rel.endswith((".yaml", ".yml")):
            try:
                loaded = yaml.safe_load((adoption.root / rel).read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            number = number or _leaf(loaded, [], lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                                     and v > 0, rel)
            features = features or _leaf(loaded, [], lambda v: isinstance(v, list) and v and all(isinstance(x, str) and x in names for x in v), rel)
    if not number and not features:
        return ["# [knobs.LEARNING_RATE]", f'# file = "{adoption.editable[0]}"', '# name = "LEARNING_RATE"',
                '# type = "float"', "# low = 0.001", "# high = 0.1", "# log = true"]
    lines = []
    if number:
        rel, keys, value = number
        kind = "int" if isinstance(value, int) else "float"
        low, high = (max(1, value // 10), value * 10) if kind == "int" else (value / 100, value * 100)
        lines += [f"# [knobs.{keys[-1]}]", f'# file = "{rel}"', f'# name = "{".".join(keys)}"', f'# type = "{kind}"',
                  f"# low = {low!r}", f"# high = {high!r}", "# log = true"]
    if features:
        rel, keys, value = features
        lines += ["#" if lines else "", f"# [knobs.{keys[-1]}]", f'# file = "{rel}"', f'# name = "{".".join(keys)}"',
                  '# type = "features"             # candidates: every name in features.yaml',
                  f"# min_size = {max(1, len(value) // 2)}"]
    return [line for line in lines if line]


def _leaf(node, keys: list[str], wanted, rel: str):
    """(rel, key path, value) of the first value under a mapping key that `wanted` accepts."""
    if keys and wanted(node):
        return rel, keys, node
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and (found := _leaf(value, keys + [key], wanted, rel)):
                return found
    return None


def manifest_text(a: Adoption) -> str:
    user, item = a.column("user"), a.column("item")
    micro_rows = min(2000, max(10, a.train_rows))
    lines = [
        "# Written by `agentx adopt`; every TODO is a guess to check. Format: agentx docs/contracts.md.",
        "[workspace]", f'name = "{a.root.name}"', 'description = "TODO: what this repository predicts"', "",
        "[train]", f'entrypoint = "{a.entrypoint}"      # module:function; called in a kernel as main(run_dir)',
        f"preload = {_toml_list(a.preload)}   # libraries a warm kernel imports before a run", "",
        "[data]", f'module = "{a.data_module}"             # protected; the harness calls prepare(cache_dir, out_dir)',
        f'id_column = "{a.column("id")}"', f'label_column = "{a.column("label")}"',
        f'user_column = "{user}"' if user else "# user_column = \"...\"   # the bootstrap's unit; absent: each row",
        f'item_column = "{item}"' if item else "# item_column = \"...\"   # gives the popularity reference",
        "",
        "[metric]", 'primary = "auc"', 'direction = "maximize"',
        "min_effect = 0.002             # TODO: the smallest AUC gain worth shipping on this data",
        'secondary = ["logloss"]', "",
        "[tiers.micro]                  # the smoke tier: sampled rows", f"train_rows = {micro_rows}",
        "eval_rows = 500", "epochs = 1", "timeout_s = 120", "",
        "[tiers.full]", "epochs = 1                     # TODO: passed to main in run.json",
        "timeout_s = 1800               # TODO: a full run's time limit", "",
        "[paths]", f"editable = {_toml_list(a.editable)}", f"protected = {_toml_list(a.protected)}", "",
        "[features]", f'catalog = "{CATALOG}"', "",
        "# Values the default brain may search with Optuna (tools/knobs.py edits them in place):",
        "# a module-level constant of an editable .py file (name = the constant) or a dotted key",
        "# of an editable .yaml/.toml/.json file. type: float | int | categorical | bool | features.",
        *_knob_example(a), "",
        "# Code-level recipe sets written for this kind of code (agentx recipes lists them):",
        "# [recipes]", '# sets = ["feature-lists"]', "",
    ]
    return "\n".join(lines)


def catalog_text(a: Adoption) -> str:
    groups = {"user": "user", "item": "item"}
    out = ["# Feature catalog (PROTECTED), written by `agentx adopt`: one entry per model input.",
           "# TODO: write each definition (feature selection reads them), a group per entry",
           "# (user, item, context, ...), check the guessed type, set serving_cost (relative,",
           "# 1.0 = one key-value lookup per request) and mark post-event columns leaky: true."]
    for c in a.features:
        name = c.name if c.name.replace("_", "a").isalnum() and not c.name[0].isdigit() else json.dumps(c.name)
        out += [f"- name: {name}",
                '  definition: "TODO: what this column means"', f'  group: {groups.get(c.role, "TODO")}',
                f"  type: {c.type}", "  serving_cost: 1.0", "  leaky: false"]
    return "\n".join(out) + "\n"


def next_steps(a: Adoption) -> list[str]:
    return [f"1. read {MANIFEST} and {CATALOG}; fix every TODO",
            (f"2. declare knobs in {MANIFEST} (the commented [knobs] example shows how); a knob's file must "
             "be under paths.editable"),
            f"3. git -C {a.root} add {MANIFEST} {CATALOG} && git -C {a.root} commit -m 'agentx manifest'",
            f"4. agentx check --workspace {a.root}",
            ("   (after the first check agentx trusts the protected files; change them later and run "
             f"`agentx trust --workspace {a.root}`)")]
