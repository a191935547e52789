"""Honest exit codes: `run`, `ask` and `select-features --run` exit 1 when no experiment they
started got a verdict (the last line says why), 0 when one did, and 2 in one line, without a
traceback, when an LLM provider cannot be used."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentx.cli import app
from conftest import TINY_MANIFEST, TINY_TRAIN
from fake_llm import FakeOpenAIServer, edit_reply
from test_graph import BETTER_TRAIN, proposal
from test_select_features import FEATURE_CATALOG, FEATURE_DATA, FEATURE_TRAIN
from tools.git_repo import WorkspaceRepo


@pytest.fixture
def tiny_ws(tiny_template, tmp_path) -> Path:
    WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template)
    return tmp_path / "ws"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def last_line(result) -> str:
    return result.output.strip().splitlines()[-1]


def test_run_where_the_brain_has_no_proposals_exits_1(tiny_ws):
    result = invoke("run", "--experiments", "1", "--workspace", str(tiny_ws))
    assert result.exit_code == 1, result.output
    assert last_line(result).startswith("no verdict: no experiment ran (no untried proposals left: this workspace "
                                        "has no recipes (agentx.toml names no [recipes] sets;")


def test_ask_whose_experiment_fails_exits_1_naming_it(tiny_template, tmp_path):
    # the heuristic brain matches the request to the movielens-ctr set's dcn_v2, which the
    # tiny workspace (naming that set) cannot take
    manifest = tiny_template / "agentx.toml"
    manifest.write_text(manifest.read_text() + '\n[recipes]\nsets = ["movielens-ctr"]\n')
    tiny_ws = WorkspaceRepo.init_from_template(tmp_path / "ws", tiny_template).root
    result = invoke("ask", "try a cross network on the ranker", "--workspace", str(tiny_ws))
    assert result.exit_code == 1, result.output
    assert last_line(result) == ("no verdict: E0001 failed (contract); "
                                 f"`agentx show E0001 --workspace {tiny_ws}` says why")


def test_ask_with_a_request_no_recipe_matches_is_bad_input(tiny_ws):
    result = invoke("ask", "make it sing opera", "--workspace", str(tiny_ws))
    assert result.exit_code == 2 and "found no recipe" in result.output


def develop(content: str, path: str = "train.py") -> dict:
    if path == "train.py":
        return edit_reply(f"edit {path}", path, TINY_TRAIN, content)
    return {"summary": f"edit {path}", "files": [{"path": path, "content": content}]}


def test_ask_and_run_exit_0_once_an_experiment_is_judged(tiny_ws):
    with FakeOpenAIServer() as server:
        llm = f"openai-compatible:{server.base_url}#scripted"
        (one,) = proposal()["proposals"]           # a request is answered with one proposal
        server.enqueue(one).enqueue(develop(BETTER_TRAIN))
        asked = invoke("ask", "smooth the item rates", "--llm", llm, "--workspace", str(tiny_ws))
        assert asked.exit_code == 0, asked.output
        # one judged, one failed (it edits a protected file): still 0
        server.enqueue(proposal("Prior weight 3")).enqueue(develop(BETTER_TRAIN.replace("2 * prior", "3 * prior")))
        server.enqueue(proposal("Move the goalposts")).enqueue(develop("def prepare(c, o): pass\n", "data.py"))
        ran = invoke("run", "--experiments", "2", "--llm", llm, "--workspace", str(tiny_ws))
    assert ran.exit_code == 0, ran.output
    assert "no verdict" not in ran.output and "E0002" in ran.output and "E0003" in ran.output


def test_a_missing_api_key_is_one_line_naming_the_variable(tiny_ws, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = invoke("run", "--llm", "openai:gpt-4.1", "--workspace", str(tiny_ws))
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "OPENAI_API_KEY" in line


def test_an_unreachable_provider_is_one_line_with_what_to_check(tiny_ws):
    result = invoke("run", "--llm", "openai-compatible:http://127.0.0.1:9/v1#nothing-here", "--workspace",
                    str(tiny_ws))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert last_line(result).startswith("error: LLM call failed") and "--llm heuristic" in last_line(result)
    assert "reachable" in last_line(result)


def test_select_features_run_whose_experiment_fails_exits_1(tmp_path):
    # a train.py without the CATEGORICAL list the feature_subset recipe edits: development fails
    template = tmp_path / "template"
    template.mkdir()
    manifest = TINY_MANIFEST.replace('protected = ["data.py", "agentx.toml"]',
                                     'protected = ["data.py", "agentx.toml", "features.yaml"]')
    (template / "agentx.toml").write_text(manifest + '\n[features]\ncatalog = "features.yaml"\n\n'
                                          '[features.constraints]\nbudget = 3\n\n[recipes]\nsets = ["feature-lists"]\n')
    (template / "data.py").write_text(textwrap.dedent(FEATURE_DATA))
    (template / "features.yaml").write_text(FEATURE_CATALOG.lstrip())
    (template / "train.py").write_text(textwrap.dedent(FEATURE_TRAIN).replace("CATEGORICAL", "CATS"))
    WorkspaceRepo.init_from_template(tmp_path / "ws", template)
    result = invoke("select-features", "--run", "--seeds", "1", "--max-seeds", "1", "--workspace",
                    str(tmp_path / "ws"))
    assert result.exit_code == 1, result.output
    assert last_line(result) == "no verdict: experiment E0001 failed before a verdict; `agentx show E0001` says why"
