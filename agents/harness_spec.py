"""The harness: everything the agents' behaviour depends on that is not the model repository.

One `HarnessSpec` holds, per agent, the prompt sections and a playbook of bullets; the
heuristic brain's policy (prior means per recipe family and per arm, the prior's spread,
how much a sibling recipe's outcome counts, the failure penalty); the evaluator's seed
policy (initial and maximum paired seeds); and the micro tier's settings (a timeout that
overrides the manifest's when set). It is content-hashed: a version is its hash, and every
version is a row of `harness_versions` with its parent, its status, the proposer that made
it and the gate's evidence. Exactly one row is `active`; every experiment records the id
of the version that proposed it.

What evolution may not change is not in here: the evaluator, the harness that scores runs
and the guardrails live in code and the manifest; `FROZEN_FILES` are hash-checked by every
evolution step (agents/harness_evolution.py).

Prompts are rendered from the active version (`render`), not read from files at run time:
the shipped templates under agents/prompts/ seed the default version only. A template is
split into sections at its `# ` and `## ` headings ("intro" before the first); the playbook's
bullets of the prompt's agent are rendered after the last section.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.prompts import load_prompt, prompt_names
from agentx.errors import UserError

# Which agent reads which prompt (the playbook is per agent).
PROMPT_AGENT = {"brainstorm": "brainstorm", "chat": "brainstorm", "develop": "developer", "repair": "developer",
                "select_features": "feature_selection", "select_features_refine": "feature_selection",
                "echo": "echo", "evolve": "evolution"}
AGENTS = ("brainstorm", "developer", "feature_selection")
STATUSES = ("active", "accepted", "rejected", "rolled_back")
ROOT = Path(__file__).resolve().parents[1]
# Outside what evolution may change: the evaluator, the harness that scores runs, the guardrails.
FROZEN_FILES = ("agents/evaluator.py", "tools/harness.py", "tools/scoring.py", "tools/stats.py",
                "tools/rollout.py", "tools/ranking.py")
# Before any outcome: explicit feature interactions, user-history pooling and cold-start
# gating are the changes CTR work most often reports gains from; capacity and optimisation
# knobs are a coin flip. Each prior weighs as one observation.
DEFAULT_FAMILY_PRIOR = {"interaction": 0.002, "sequence": 0.002, "cold_start": 0.001, "ensemble": 0.001}


class Bullet(BaseModel):
    """One playbook entry (ACE): a lesson with where it came from and how it has fared."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    text: str = Field(min_length=1, max_length=400)
    source: str = Field(description="provenance: 'offline: E0003, E0007', 'llm: ...', 'import'")
    helpful: int = Field(default=0, ge=0)
    harmful: int = Field(default=0, ge=0)


class Policy(BaseModel):
    """The heuristic brainstorm's Thompson-sampling policy over arms (recipes, knobs, interactions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family_prior: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FAMILY_PRIOR))
    arm_prior: dict[str, float] = Field(default_factory=dict, description="per arm; overrides its family's")
    arm_weight: dict[str, float] = Field(default_factory=dict, description="pseudo-outcomes an arm's prior counts "
                                         "as (default 1); evolution raises it as evidence from earlier runs grows")
    prior_sd: float = Field(default=0.01, gt=0)
    family_weight: float = Field(default=0.5, ge=0, le=1)
    failure_reward: float = Field(default=-0.005, le=0)

    def prior(self, arm: str, family: str) -> float:
        return self.arm_prior.get(arm, self.family_prior.get(family, 0.0))

    def weight(self, arm: str) -> float:
        return self.arm_weight.get(arm, 1.0)


class SeedPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    initial: int = Field(default=2, ge=2, le=20)
    max: int = Field(default=3, ge=2, le=20)


class MicroSettings(BaseModel):
    """Overrides of the manifest's micro tier; None keeps the manifest's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    timeout_s: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0, description="kernel memory cap at micro (below the harness's)")


class HarnessSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prompts: dict[str, dict[str, str]]           # prompt name -> section name -> text (in order)
    playbook: dict[str, list[Bullet]] = Field(default_factory=dict)   # agent -> bullets
    policy: Policy = Field(default_factory=Policy)
    seeds: SeedPolicy = Field(default_factory=SeedPolicy)
    micro: MicroSettings = Field(default_factory=MicroSettings)

    def content(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.content(), sort_keys=True).encode()).hexdigest()

    def bullets(self, agent: str) -> list[Bullet]:
        return list(self.playbook.get(agent, []))

    def render(self, name: str, **values: object) -> str:
        """Prompt `name` from this version's sections and its agent's playbook, `$placeholders` filled."""
        # a prompt added to agentx after this version was made: the shipped template's sections
        sections = self.prompts.get(name) or default_harness().prompts.get(name)
        if sections is None:
            raise KeyError(f"no prompt {name!r}; there are {', '.join(sorted(default_harness().prompts))}")
        text = join_sections(sections)
        bullets = self.bullets(PROMPT_AGENT.get(name, name))
        if bullets:
            lines = [f"- [{b.id}] {b.text} (helpful {b.helpful}, harmful {b.harmful})" for b in bullets]
            text += ("\n\n## Playbook: lessons from past experiments (helpful/harmful counts)\n"
                     + "\n".join(lines).replace("$", "$$") + "\n")
        try:
            return Template(text).substitute({k: str(v) for k, v in values.items()})
        except KeyError as err:
            raise KeyError(f"prompt {name!r} needs a value for ${err.args[0]}") from err


def split_sections(text: str) -> dict[str, str]:
    """A markdown template as {section: text}, split at `# `/`## ` headings; 'intro' before the first."""
    sections: dict[str, str] = {}
    name, lines = "intro", []
    for line in text.splitlines(keepends=True):
        if (heading := re.match(r"#{1,2} (.*)", line)) is not None:
            if lines or name != "intro":
                sections[name] = "".join(lines)
            name = _slug(heading.group(1)) or f"section{len(sections)}"
            while name in sections:
                name += "_"
            lines = [line]
        else:
            lines.append(line)
    sections[name] = "".join(lines)
    return sections


def join_sections(sections: dict[str, str]) -> str:
    return "".join(sections.values())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]


@lru_cache(maxsize=1)
def default_harness() -> HarnessSpec:
    """The shipped starting point: the prompt templates, empty playbooks, the default policy."""
    return HarnessSpec(prompts={name: split_sections(load_prompt(name)) for name in prompt_names()})


def placeholders(text: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in re.finditer(r"\$(?:(\w+)|\{(\w+)\})", text.replace("$$", ""))}


def rewrite_ratio(old: str, new: str) -> float:
    """How much of `old` an edit replaces, 0 (identical) to 1 (nothing kept)."""
    return 1.0 - difflib.SequenceMatcher(None, old, new, autojunk=False).ratio()


def frozen_hash(root: Path = ROOT) -> str:
    """One hash over the files evolution may not change (the evaluator, scoring, guardrails)."""
    digest = hashlib.sha256()
    for rel in FROZEN_FILES:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()


# -- versions in the KB ---------------------------------------------------------------------


@dataclass(frozen=True)
class HarnessVersion:
    id: int
    hash: str
    spec: HarnessSpec
    parent_id: int | None
    status: str
    proposer: str
    reason: str | None
    evidence: dict | None
    delta: list | None
    created_at: object

    @property
    def short(self) -> str:
        return f"v{self.id} ({self.hash[:10]})"


def _version(row: dict) -> HarnessVersion:
    return HarnessVersion(row["id"], row["hash"], HarnessSpec.model_validate(row["content"]), row["parent_id"],
                          row["status"], row["proposer"] or "-", row["reason"], row["evidence"], row["delta"],
                          row["created_at"])


_COLUMNS = "id, hash, content, parent_id, status, proposer, reason, evidence, delta, created_at"


def versions(kb) -> list[HarnessVersion]:
    return [_version(r) for r in kb.query(f"SELECT {_COLUMNS} FROM harness_versions WHERE hash IS NOT NULL "
                                          "ORDER BY id")]


def get_version(kb, version_id: int) -> HarnessVersion:
    rows = kb.query(f"SELECT {_COLUMNS} FROM harness_versions WHERE id = ? AND hash IS NOT NULL", [version_id])
    if not rows:
        known = ", ".join(f"v{v.id}" for v in versions(kb)) or "none"
        raise UserError(f"no harness version v{version_id}; the versions are {known} (`agentx harness list`)")
    return _version(rows[0])


def active_version(kb) -> HarnessVersion:
    """The active version; the shipped default is stored (and activated) the first time."""
    rows = kb.query(f"SELECT {_COLUMNS} FROM harness_versions WHERE status = 'active' ORDER BY id DESC LIMIT 1")
    if rows:
        return _version(rows[0])
    spec = default_harness()
    with kb.session() as s:
        again = s.query(f"SELECT {_COLUMNS} FROM harness_versions WHERE status = 'active' LIMIT 1")
        if again:
            return _version(again[0])
        s.add_harness_version(agent="all", version=spec.content_hash()[:12], hash=spec.content_hash(),
                              content=spec.content(), parent_id=None, accepted=True, status="active",
                              proposer="default", reason="the shipped prompts and policy")
    return active_version(kb)


def tier_overrides(kb, tier: str) -> dict:
    """What the active version overrides of a manifest tier: the micro tier's timeout and memory cap."""
    if tier != "micro":
        return {}
    micro = active_version(kb).spec.micro
    return {k: v for k, v in (("timeout_s", micro.timeout_s), ("memory_mb", micro.memory_mb)) if v is not None}


def save_version(kb, spec: HarnessSpec, *, parent_id: int | None, status: str, proposer: str,
                 reason: str, evidence: dict | None = None, delta: list | None = None) -> int:
    """Store a candidate (accepted ones become active: the previous active turns 'accepted')."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    with kb.session() as s:
        if status == "active":
            s.query("UPDATE harness_versions SET status = 'accepted' WHERE status = 'active'")
        return s.add_harness_version(agent="all", version=spec.content_hash()[:12], hash=spec.content_hash(),
                                     content=spec.content(), parent_id=parent_id, accepted=status == "active",
                                     status=status, proposer=proposer, reason=reason, evidence=evidence,
                                     delta=delta)


def activate(kb, version_id: int, *, why: str) -> HarnessVersion:
    """Make an existing version the active one (rollback, or re-activating an import)."""
    target = get_version(kb, version_id)
    if target.status == "rejected":
        raise UserError(f"v{version_id} was rejected by the gate ({target.reason}); it cannot be activated")
    current = active_version(kb)
    with kb.session() as s:      # one transaction: whatever is active now (even if another process moved it) goes
        s.query("UPDATE harness_versions SET status = 'rolled_back' WHERE status = 'active'")
        s.query("UPDATE harness_versions SET status = 'active' WHERE id = ?", [version_id])
    kb.log_event("harness_activated", {"from": current.id, "to": version_id, "why": why})
    return get_version(kb, version_id)


def rollback(kb, to: int | None = None) -> tuple[HarnessVersion, HarnessVersion]:
    """Back to `to` (default: the active version's parent). Returns (left, now active)."""
    current = active_version(kb)
    target = to if to is not None else current.parent_id
    if target is None:
        raise UserError(f"{current.short} is the first version: there is nothing to roll back to")
    return current, activate(kb, target, why=f"rollback from v{current.id}")


def export_version(kb, path: Path, version_id: int | None = None) -> HarnessVersion:
    version = get_version(kb, version_id) if version_id is not None else active_version(kb)
    path.write_text(json.dumps({"agentx_harness": 1, "hash": version.hash, "content": version.spec.content(),
                                "source_version": version.id}, indent=1, sort_keys=True))
    return version


def import_version(kb, path: Path) -> HarnessVersion:
    """Start from another workspace's evolved harness: the file's content becomes the active version."""
    try:
        data = json.loads(path.read_text())
        spec = HarnessSpec.model_validate(data["content"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a harness export (`agentx harness export`): {exc}") from None
    if spec.content_hash() != data.get("hash"):
        raise UserError(f"{path}: its content does not match its hash {str(data.get('hash'))[:12]}: "
                        "the file was edited or is damaged; export it again")
    current = active_version(kb)
    new_id = save_version(kb, spec, parent_id=current.id, status="active", proposer="import",
                          reason=f"imported from {path.name}")
    return get_version(kb, new_id)


def diff_versions(a: HarnessVersion, b: HarnessVersion) -> str:
    """A unified diff of two versions' content (sorted JSON, one value per line)."""
    left = json.dumps(a.spec.content(), indent=1, sort_keys=True).splitlines()
    right = json.dumps(b.spec.content(), indent=1, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(left, right, f"v{a.id}", f"v{b.id}", lineterm="")) or "(identical)"

