"""Prompt templates ship as markdown files in `agents/prompts/<name>.md` and seed the default
harness version (agents/harness_spec.py), whose sections the loop renders; code only fills
them in. Placeholders are `$name` (string.Template), so the JSON braces that prompts often
contain need no escaping; `$$` is a literal dollar sign.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

PROMPTS_DIR = Path(__file__).with_name("prompts")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def prompt_names() -> list[str]:
    """The names of the shipped prompt templates."""
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.md"))


def load_prompt(name: str) -> str:
    """The raw text of template `name` (no placeholders filled in)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad prompt name {name!r}: use lowercase letters, digits, '_' or '-'")
    path = PROMPTS_DIR / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {name!r} in {PROMPTS_DIR}; "
                                f"available: {', '.join(prompt_names()) or 'none'}")
    return path.read_text(encoding="utf-8")


def render_prompt(name: str, harness=None, **values: object) -> str:
    """Prompt `name` of `harness` (an agents.harness_spec.HarnessSpec: its sections and its
    agent's playbook; the loop passes the workspace's active version) with its `$placeholders`
    filled in; a missing value raises KeyError. Without a harness, the shipped template."""
    if harness is not None:
        return harness.render(name, **values)
    template = Template(load_prompt(name))
    try:
        return template.substitute({k: str(v) for k, v in values.items()})
    except KeyError as err:
        raise KeyError(f"prompt {name!r} needs a value for ${err.args[0]}") from err
