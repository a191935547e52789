"""Edit blocks for the LLM developer: applied strictly, all or nothing; a block whose search
text is not in its file exactly once is refused and the model is told why and asked again;
the commit changes exactly the lines the blocks named."""

from __future__ import annotations

import pytest
from conftest import TINY_TRAIN
from fake_llm import FakeChatModel

from agents.developer import ChangeRejected, CodeChange, EditRefused, LLMDeveloper, apply_change
from agentx.context import Workspace
from agentx.llm import LLMClient
from tools.git_repo import WorkspaceRepo

PRIOR = "(clicks[k] + prior) / (seen[k] + 1)"
assert TINY_TRAIN.count(PRIOR) == 1 and TINY_TRAIN.count("\n") > 20


@pytest.fixture
def ws(tiny_template, tmp_path):
    manifest = tiny_template / "agentx.toml"
    manifest.write_text(manifest.read_text().replace('editable = ["train.py"]', 'editable = ["train.py", "lib"]'))
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    with Workspace.open(tmp_path / "ws", warm_kernels=False) as opened:
        yield opened


def change(*edits, files=()) -> CodeChange:
    return CodeChange(summary="s", edits=[{"path": p, "search": a, "replace": b} for p, a, b in edits],
                      files=[{"path": p, "content": c} for p, c in files])


def test_blocks_apply_in_order_and_new_files_are_whole(ws, tmp_path):
    root = ws.root
    touched = apply_change(ws, root, change(("train.py", PRIOR, "(clicks[k] + 2 * prior) / (seen[k] + 2)"),
                                            ("train.py", "2 * prior", "3 * prior"),
                                            ("lib/util.py", "A = 1", "A = 2"), files=[("lib/util.py", "A = 1\n")]))
    assert touched == ["lib/util.py", "train.py"] and (root / "lib" / "util.py").read_text() == "A = 2\n"
    with pytest.raises(EditRefused, match="edit 1: lib/other.py does not exist"):
        apply_change(ws, root, change(("lib/other.py", "a", "b")))
    assert (root / "train.py").read_text() == TINY_TRAIN.replace(PRIOR, "(clicks[k] + 3 * prior) / (seen[k] + 2)")


@pytest.mark.parametrize("edits, files, says", [
    ([("train.py", "no such text", "x")], [], r"edit 2 \(train.py\): its search text is not in train.py"),
    ([("train.py", "\n", "x")], [], "its search text appears"),
    ([("train.py", "", "x")], [], "its search text is empty"),
    ([], [("train.py", "print(1)\n")], "train.py exists: change it with edit blocks"),
])
def test_a_block_that_does_not_apply_exactly_once_changes_nothing(ws, edits, files, says):
    with pytest.raises(EditRefused, match=says):
        apply_change(ws, ws.root, change(("train.py", PRIOR, "changed"), *edits, files=files))
    assert (ws.root / "train.py").read_text() == TINY_TRAIN           # nothing was written


def test_protected_paths_are_refused_outright(ws):
    with pytest.raises(ChangeRejected, match="may not edit: data.py"):
        apply_change(ws, ws.root, change(("data.py", "def", "x")))


def test_the_model_is_told_why_and_its_second_answer_is_committed_touching_only_those_lines(ws):
    model = FakeChatModel()
    model.enqueue({"summary": "prior 2", "edits": [{"path": "train.py", "search": "prior) / (seen[k] + 9)",
                                                     "replace": "x"}]})
    model.enqueue({"summary": "prior 2", "edits": [{"path": "train.py", "search": "\n", "replace": ""}]})
    model.enqueue({"summary": "prior 2", "edits": [{"path": "train.py", "search": PRIOR,
                                                     "replace": "(clicks[k] + 2 * prior) / (seen[k] + 2)"}]})
    client = LLMClient(model, kb=ws.kb, provider="openai-compatible", model_name="scripted", dollar_cap=None)
    developer = LLMDeveloper(client)
    exp = {"id": "E0001", "title": "Prior weight 2", "hypothesis": "h", "recipe": None, "params": {}}
    worktree = ws.repo.create_experiment("E0001", "prior-weight-2")
    assert developer.implement(ws, exp, worktree.path) == "prior 2"
    second, third = model.calls[1].messages[-1].text, model.calls[2].messages[-1].text
    assert "could not be applied" in second and "its search text is not in train.py" in second
    assert "appears" in third and "times in train.py" in third
    assert len(ws.kb.events("edit_refused", experiment_id="E0001")) == 2
    ws.repo.commit(worktree, "prior weight 2", "E0001")
    diff = [line for line in ws.repo.diff(worktree.branch).splitlines()
            if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
    assert len(diff) == 2 and PRIOR in diff[0] and "2 * prior" in diff[1], diff


def test_after_the_retries_the_change_is_rejected_with_the_reason(ws):
    model = FakeChatModel()
    for _ in range(3):
        model.enqueue({"summary": "s", "edits": [{"path": "train.py", "search": "not there", "replace": "x"}]})
    developer = LLMDeveloper(LLMClient(model, kb=ws.kb, provider="openai-compatible", model_name="scripted",
                                       dollar_cap=None))
    worktree = ws.repo.create_experiment("E0001", "nothing")
    exp = {"id": "E0001", "title": "t", "hypothesis": "h", "recipe": None, "params": {}}
    with pytest.raises(ChangeRejected, match="did not apply after 3 tries: edit 1 \\(train.py\\)"):
        developer.implement(ws, exp, worktree.path)
    assert (worktree.path / "train.py").read_text() == TINY_TRAIN
