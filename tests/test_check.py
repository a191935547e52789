"""`agentx check` on real tiny workspaces: a ready one passes every line; each broken one fails
the line that names its problem, with a fix, and skips what cannot run after it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from agentx.check import CHECKS
from agentx.cli import app
from knowledge import KnowledgeBase
from tools.git_repo import WorkspaceRepo


def check(ws: Path) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Exit code, {check name: (status, detail)} and the whole output of `agentx check`."""
    result = CliRunner().invoke(app, ["check", "--workspace", str(ws)])
    lines = {}
    for line in result.output.splitlines():
        status, _, rest = line.partition(" ")
        for name in CHECKS:
            if status in ("ok", "FAIL", "skipped") and rest.strip().startswith(name):
                lines[name] = (status, rest.strip()[len(name):].strip())
    return result.exit_code, lines, result.output


def make_ws(template: Path, tmp_path: Path) -> Path:
    WorkspaceRepo.init_from_template(tmp_path / "ws", template)
    return tmp_path / "ws"


def test_a_ready_workspace_passes_every_check(tiny_template, tmp_path):
    code, lines, output = check(make_ws(tiny_template, tmp_path))
    assert code == 0, output
    assert list(lines) == list(CHECKS) and {s for s, _ in lines.values()} == {"ok"}, output
    assert "user_column 'user_id'" in lines["columns"][1] and "400 / 100 / 100 rows" in lines["columns"][1]
    assert "imports (in the sandbox)" in lines["entrypoint"][1]
    assert "valid auc" in lines["predictions"][1] and output.strip().endswith("next: agentx baseline)")
    (run,) = KnowledgeBase.for_workspace(tmp_path / "ws").runs()
    assert (run["tier"], run["status"], run["sandbox"]) == ("micro", "ok", "bwrap")


def test_a_missing_entrypoint_module_fails_that_line_with_its_fix(tiny_template, tmp_path):
    manifest = tiny_template / "agentx.toml"
    manifest.write_text(manifest.read_text().replace('entrypoint = "train:main"', 'entrypoint = "trainer:main"'))
    code, lines, output = check(make_ws(tiny_template, tmp_path))
    assert code == 1, output
    status, fix = lines["entrypoint"]
    assert status == "FAIL" and "'trainer'" in fix and "add trainer.py, or fix [train] entrypoint" in fix
    assert [lines[n][0] for n in CHECKS] == ["ok", "ok", "ok", "ok", "ok", "ok", "FAIL", "skipped", "skipped"]
    assert not KnowledgeBase.for_workspace(tmp_path / "ws").runs()          # no kernel was spent


def test_an_entrypoint_that_does_not_import_fails_with_the_error(tiny_template, tmp_path):
    train = tiny_template / "train.py"
    train.write_text("import a_library_nobody_installed\n" + train.read_text())
    code, lines, output = check(make_ws(tiny_template, tmp_path))
    status, fix = lines["entrypoint"]
    assert code == 1 and status == "FAIL", output
    assert "No module named 'a_library_nobody_installed'" in fix and lines["micro run"][0] == "skipped"


def test_an_entrypoint_without_its_function_names_it(tiny_template, tmp_path):
    train = tiny_template / "train.py"
    train.write_text(train.read_text().replace("def main(run_dir):", "def run(run_dir):"))
    code, lines, output = check(make_ws(tiny_template, tmp_path))
    fix = "module train defines no function main(): define it, or fix [train] entrypoint in agentx.toml"
    assert code == 1 and lines["entrypoint"] == ("FAIL", fix), output


def test_a_data_module_without_the_label_column_fails_the_data_line(tiny_template, tmp_path):
    data = tiny_template / "data.py"
    data.write_text(data.read_text().replace('"item_id", "label"]', '"item_id", "clicked"]'))
    code, lines, output = check(make_ws(tiny_template, tmp_path))
    assert code == 1, output
    status, fix = lines["data module"]
    assert status == "FAIL" and "train.csv has no 'label' column" in fix and "clicked" in fix
    assert lines["columns"][0] == "skipped" and lines["entrypoint"][0] == "ok"
    assert [lines[n][0] for n in ("micro run", "predictions")] == ["skipped", "skipped"]


def test_uncommitted_edits_and_a_missing_declared_column_fail_but_the_run_still_checks(tiny_template, tmp_path):
    manifest = tiny_template / "agentx.toml"
    manifest.write_text(manifest.read_text().replace('item_column = "item_id"\n',
                                                     'item_column = "item_id"\ncluster_column = "session"\n'))
    ws = make_ws(tiny_template, tmp_path)
    (ws / "train.py").write_text((ws / "train.py").read_text() + "\n# not committed\n")
    code, lines, output = check(ws)
    assert code == 1, output
    assert lines["git"][0] == "FAIL" and "uncommitted changes to train.py" in lines["git"][1]
    status, fix = lines["columns"]
    assert status == "FAIL" and "no 'session' column ([data] cluster_column" in fix
    assert [lines[n][0] for n in ("entrypoint", "micro run", "predictions")] == ["ok", "ok", "ok"]


def test_a_folder_that_is_not_a_repository_skips_everything_after_git(tiny_template):
    code, lines, output = check(tiny_template)
    assert code == 1 and lines["manifest"][0] == "ok", output
    assert lines["git"][0] == "FAIL" and "not a git repository" in lines["git"][1]
    assert all(lines[n][0] == "skipped" for n in CHECKS[2:])
    assert not (tiny_template / ".agentx").exists()


def test_a_catalog_naming_a_missing_column_and_a_knob_without_its_constant_fail_their_lines(tiny_template, tmp_path):
    (tiny_template / "features.yaml").write_text(
        "- name: user_id\n  definition: the user\n  group: user\n  type: categorical\n  serving_cost: 1.0\n"
        "  leaky: false\n"
        "- name: device\n  definition: the device\n  group: context\n  type: categorical\n  serving_cost: 0.1\n"
        "  leaky: false\n")
    manifest = tiny_template / "agentx.toml"
    manifest.write_text(manifest.read_text() + '\n[knobs.LR]\nfile = "train.py"\nname = "LR"\ntype = "float"\n'
                                               'low = 0.001\nhigh = 0.1\n')
    code, lines, output = check(make_ws(tiny_template, tmp_path))
    assert code == 1, output
    status, fix = lines["catalog"]
    assert status == "FAIL" and "features.yaml lists device, which train.csv lacks" in fix, output
    status, fix = lines["knobs"]
    assert status == "FAIL" and "train.py: no module-level constant LR" in fix, output
    # a bad catalog or knob does not stop the run checks: runs need neither
    assert [lines[n][0] for n in ("entrypoint", "micro run", "predictions")] == ["ok", "ok", "ok"]


def test_a_catalog_that_is_not_yaml_fails_with_the_parse_error(tiny_template, tmp_path):
    (tiny_template / "features.yaml").write_text("- name: user_id\n  definition: id: of the user\n")
    code, lines, output = check(make_ws(tiny_template, tmp_path))
    status, fix = lines["catalog"]
    assert code == 1 and status == "FAIL" and "not valid YAML" in fix and "agentx trust" in fix, output
    assert lines["knobs"][0] == "ok" and "no [knobs.*]" in lines["knobs"][1]
