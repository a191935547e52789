"""Questions about the knowledge base, answered from it: "why did E0003 fail?", "what helped most?".

Two brains behind one `Answerer` protocol, as everywhere in agentx:
- `HeuristicAnswerer` (the default) knows a handful of question shapes and answers each with
  one SQL read, quoting the rows; a question it has no shape for gets a refusal that lists
  the ones it knows. It does not understand language; it matches words.
- `LLMAnswerer` hands an LLM a bounded extract of the KB (the latest experiments and
  lessons) and asks for a structured `Answer` naming the experiments it rests on; the ids it
  names that are not in the KB are dropped.
"""

from __future__ import annotations

import re
from typing import Protocol

from pydantic import BaseModel, Field

from agents.brainstorm import history_table
from agents.harness_spec import active_version
from agents.prompts import render_prompt

_QUESTION_WORDS = ("why", "what", "which", "how", "when", "who", "where", "did", "does", "is", "are", "was",
                   "were", "list", "show", "tell", "explain", "summarise", "summarize")
_ID = re.compile(r"\b[eE](\d{1,6})\b")


class Answer(BaseModel):
    text: str = Field(description="the answer, in a few sentences")
    experiments: list[str] = Field(default_factory=list, description="ids of the experiments the answer rests on")
    answered: bool = Field(default=True, description="false when the KB does not hold the answer")


class Answerer(Protocol):
    name: str

    def answer(self, kb, question: str, *, higher_is_better: bool = True) -> Answer: ...


def is_question(text: str) -> bool:
    """A question about what happened, not a request to try something."""
    words = text.strip().lower().split()
    return bool(words) and (text.strip().endswith("?") or words[0] in _QUESTION_WORDS)


def experiment_ids(text: str) -> list[str]:
    return [f"E{int(n):04d}" for n in _ID.findall(text)]


class HeuristicAnswerer:
    name = "heuristic brain (SQL over the KB; matches question words, does not read language)"

    def answer(self, kb, question: str, *, higher_is_better: bool = True) -> Answer:
        q = question.lower()
        if ids := experiment_ids(question):
            return self._about(kb, ids[0])
        if re.search(r"\b(help(ed|s)?|best|most|gain|improv\w*|work(ed)?)\b", q):
            return self._best(kb, higher_is_better)
        if re.search(r"\b(fail\w*|crash\w*|broke|error\w*|veto\w*)\b", q):
            return self._failures(kb)
        if re.search(r"\b(ship\w*|merged?)\b", q):
            return self._shipped(kb)
        if re.search(r"\b(how many|summary|summari[sz]e|status|so far|overall)\b", q):
            return self._counts(kb)
        return Answer(answered=False, text=(
            "The heuristic brain answers questions of these shapes only: 'why did E0003 fail?' (any question "
            "naming an experiment), 'what helped most?', 'what failed?', 'what shipped?', 'how many experiments "
            "so far?'. Ask one of those, or start agentx with an LLM brain (--llm SPEC) for other questions."))

    def _about(self, kb, exp_id: str) -> Answer:
        rows = kb.query("SELECT id, title, status FROM experiments WHERE id = ?", [exp_id])
        if not rows:
            return Answer(answered=False, text=f"There is no experiment {exp_id} in this workspace.")
        e = rows[0]
        verdict = kb.query("SELECT decision, metric, delta, ci_low, ci_high, rationale, guardrails FROM verdicts "
                           "WHERE experiment_id = ? ORDER BY id DESC LIMIT 1", [exp_id])
        lesson = kb.query("SELECT failure_kind, text FROM lessons WHERE experiment_id = ? "
                          "ORDER BY id DESC LIMIT 1", [exp_id])
        parts = [f"{exp_id} '{e['title']}' is {e['status']}."]
        if verdict:
            v = verdict[0]
            parts.append(f"Its verdict was {v['decision']}: test {v['metric']} delta {_f(v['delta'])}, "
                         f"95% CI [{_f(v['ci_low'])}, {_f(v['ci_high'])}]. {v['rationale'] or ''}".strip())
            breached = [g for g in v["guardrails"] or [] if not g.get("ok")]
            if breached:
                parts.append("Guardrails breached: " + "; ".join(
                    f"{g['name']} measured {g.get('value')} against limit {g.get('limit')}" for g in breached) + ".")
        elif lesson and lesson[0]["failure_kind"]:
            parts.append(f"It failed before evaluation ({lesson[0]['failure_kind']}).")
        if lesson and lesson[0]["text"]:
            parts.append(f"Lesson: {lesson[0]['text']}")
        return Answer(text=" ".join(parts), experiments=[exp_id])

    def _best(self, kb, higher_is_better: bool) -> Answer:
        sign = 1 if higher_is_better else -1
        rows = kb.query(
            "SELECT e.id, e.title, v.decision, v.metric, v.delta, v.ci_low, v.ci_high FROM experiments e "
            "JOIN (SELECT * FROM verdicts QUALIFY row_number() OVER (PARTITION BY experiment_id ORDER BY id DESC) = 1)"
            " v ON v.experiment_id = e.id WHERE v.delta IS NOT NULL ORDER BY ? * v.delta DESC LIMIT 3", [sign])
        if not rows:
            return Answer(answered=False, text="No experiment has a measured effect yet.")
        helped = [r for r in rows if sign * r["delta"] > 0]
        if not helped:
            return Answer(text=f"Nothing helped yet: the best effect so far is {rows[0]['id']} "
                               f"'{rows[0]['title']}' at {_f(rows[0]['delta'])} ({rows[0]['decision']}).",
                          experiments=[rows[0]["id"]])
        lines = [f"{r['id']} '{r['title']}': {r['metric']} {_f(r['delta'])} [{_f(r['ci_low'])}, "
                 f"{_f(r['ci_high'])}], {r['decision']}" for r in helped]
        return Answer(text="What helped most (test effect, 95% CI, decision): " + "; ".join(lines) + ".",
                      experiments=[r["id"] for r in helped])

    def _failures(self, kb) -> Answer:
        rows = kb.query("SELECT coalesce(failure_kind, decision, 'unknown') AS kind, count(*) AS n, "
                        "list(experiment_id ORDER BY experiment_id) AS ids FROM lessons "
                        "WHERE outcome = 'failure' GROUP BY ALL ORDER BY n DESC")
        if not rows:
            return Answer(text="No experiment has failed or been vetoed.")
        parts = [f"{r['kind']}: {r['n']} ({', '.join(r['ids'][:5])})" for r in rows]
        return Answer(text="Failures and vetoes by kind: " + "; ".join(parts) + ". Ask 'why did EXXXX fail?' "
                      "for one of them.", experiments=[i for r in rows for i in r["ids"][:5]])

    def _shipped(self, kb) -> Answer:
        rows = kb.query("SELECT e.id, e.title, e.status FROM experiments e JOIN verdicts v ON v.experiment_id = e.id "
                        "WHERE v.decision = 'ship' GROUP BY ALL ORDER BY e.id")
        if not rows:
            return Answer(text="Nothing has shipped yet.")
        return Answer(text="Shipped: " + "; ".join(f"{r['id']} '{r['title']}' ({r['status']})" for r in rows) + ".",
                      experiments=[r["id"] for r in rows])

    def _counts(self, kb) -> Answer:
        rows = kb.query(
            "SELECT coalesce(v.decision, e.status) AS outcome, count(*) AS n FROM experiments e LEFT JOIN "
            "(SELECT * FROM verdicts QUALIFY row_number() OVER (PARTITION BY experiment_id ORDER BY id DESC) = 1) v "
            "ON v.experiment_id = e.id GROUP BY ALL ORDER BY n DESC")
        total = sum(r["n"] for r in rows)
        return Answer(text=f"{total} experiments so far: " + ", ".join(f"{r['n']} {r['outcome']}" for r in rows) + ".")


class LLMAnswerer:
    def __init__(self, client):
        self.client = client
        self.name = f"LLM brain ({client.provider}:{client.model_name})"

    def answer(self, kb, question: str, *, higher_is_better: bool = True) -> Answer:
        lessons = kb.query("SELECT experiment_id, text FROM lessons ORDER BY created_at DESC, id DESC LIMIT 20")
        prompt = render_prompt("kb_question", active_version(kb).spec, question=question,
                               history=history_table(kb, limit=40),
                               lessons="\n".join(f"- {r['experiment_id']}: {r['text']}" for r in lessons) or "(none)")
        answer = self.client.decide("chat", prompt, Answer)
        named = answer.experiments
        known = {r["id"] for r in kb.query("SELECT id FROM experiments WHERE list_contains(?, id)", [named])} \
            if named else set()
        return answer.model_copy(update={"experiments": [i for i in named if i in known]})


def _f(value) -> str:
    return "-" if value is None else f"{value:+.4f}"
