"""The morning report: what ran since a moment, what shipped, what failed and why, what it
cost and where the time went, as text for the terminal and as one self-contained HTML file.

Every figure is one of the SQL queries below over the workspace's KB (nothing is read from
files or kept elsewhere), so a number in the report can be checked by running its query.
The HTML has no scripts and fetches nothing: its plots are inline SVG (agentx/plots.py).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from html import escape
from typing import Any

from agentx import plots
from agentx.errors import UserError

LATEST_VERDICT = ("(SELECT * FROM verdicts QUALIFY row_number() OVER (PARTITION BY experiment_id "
                  "ORDER BY id DESC) = 1)")

SQL = {
    "experiments": f"""
        SELECT e.id, e.title, e.status, coalesce(e.recipe, 'free-form') AS recipe, e.brain, e.source,
               e.created_at, v.decision, v.metric, v.delta, v.ci_low, v.ci_high, v.control, v.treatment,
               v.created_at AS judged_at
        FROM experiments e LEFT JOIN {LATEST_VERDICT} v ON v.experiment_id = e.id
        WHERE e.created_at >= ? ORDER BY e.created_at, e.id""",
    "failures": """
        SELECT l.experiment_id, coalesce(l.failure_kind, l.decision, 'unknown') AS kind, l.text
        FROM lessons l JOIN experiments e ON e.id = l.experiment_id
        WHERE e.created_at >= ? AND l.outcome = 'failure'
        QUALIFY row_number() OVER (PARTITION BY l.experiment_id ORDER BY l.id DESC) = 1
        ORDER BY l.experiment_id""",
    "families": """
        SELECT CASE WHEN coalesce(l.recipe_family, 'free-form') = 'free-form' THEN coalesce(e.recipe, 'free-form')
                    ELSE l.recipe_family END AS family, l.outcome, count(*) AS n
        FROM lessons l JOIN experiments e ON e.id = l.experiment_id
        WHERE e.created_at >= ? GROUP BY ALL ORDER BY family, l.outcome""",
    "stages": """
        SELECT CASE WHEN tier = 'micro' THEN 'micro tier (develop)' ELSE tier || ' tier, ' || arm END AS stage,
               count(*) AS runs, sum(coalesce(kernel_start_s, 0)) AS kernel_start_s,
               sum(coalesce(exec_s, 0)) AS training_s,
               sum(greatest(coalesce(wall_s, 0) - coalesce(exec_s, 0) - coalesce(kernel_start_s, 0), 0)) AS harness_s
        FROM runs WHERE started_at >= ? AND status <> 'running' GROUP BY ALL ORDER BY stage""",
    "spend": """
        SELECT (SELECT coalesce(sum(dollars), 0) FROM llm_calls WHERE created_at >= $since) AS llm_dollars,
               (SELECT count(*) FROM llm_calls WHERE created_at >= $since) AS llm_calls,
               (SELECT coalesce(sum(wall_s), 0) / 60 FROM runs WHERE started_at >= $since) AS run_minutes,
               (SELECT coalesce(sum(wall_s), 0) / 60 FROM runs WHERE started_at >= $since
                  AND coalesce(device, 'cpu') NOT LIKE 'cpu%') AS gpu_minutes,
               (SELECT count(*) FROM runs WHERE started_at >= $since) AS runs""",
    "requests": """
        SELECT id, kind, source, status, error, created_at, started_at, finished_at FROM requests
        WHERE created_at >= ? ORDER BY id""",
}


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """'24h', '90m', '7d' back from now, or an ISO date/time (UTC): the report's start."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhd])\s*", text)
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return now - dt.timedelta(**{unit: float(match.group(1))})
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        raise UserError(f"--since wants a span like 24h, 90m or 7d, or an ISO time like 2026-12-01T18:00; "
                        f"got {text!r}") from None


@dataclass
class MorningReport:
    workspace: str
    metric: str
    higher_is_better: bool
    since: dt.datetime
    made_at: dt.datetime
    experiments: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    families: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    spend: dict[str, Any]
    requests: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def build(cls, kb, *, since: dt.datetime, workspace: str, metric: str, higher_is_better: bool) -> MorningReport:
        q = {name: kb.query(sql, {"since": since} if "$since" in sql else [since]) for name, sql in SQL.items()}
        return cls(workspace, metric, higher_is_better, since, dt.datetime.now(dt.UTC).replace(tzinfo=None),
                   q["experiments"], q["failures"], q["families"], q["stages"], q["spend"][0], q["requests"])

    @property
    def shipped(self) -> list[dict[str, Any]]:
        return [e for e in self.experiments if e["decision"] == "ship"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.experiments:
            key = e["decision"] or e["status"]
            out[key] = out.get(key, 0) + 1
        return out

    def best_over_time(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(each judged treatment's test metric, the running best of controls and treatments), by hours since `since`."""
        sign = 1 if self.higher_is_better else -1
        judged = sorted((e for e in self.experiments if e["treatment"] is not None), key=lambda e: e["judged_at"])
        points, best, running = [], [], None
        for e in judged:
            hours = (e["judged_at"] - self.since).total_seconds() / 3600
            points.append((hours, e["treatment"]))
            for value in (e["control"], e["treatment"]):
                if value is not None and (running is None or sign * value > sign * running):
                    running = value
            best.append((hours, running))
        return points, best

    # -- text ---------------------------------------------------------------------------

    def text(self) -> str:
        span = f"since {self.since:%Y-%m-%d %H:%M} UTC"
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts().items())) or "none"
        s = self.spend
        lines = [f"agentx report for {self.workspace}, {span}",
                 f"ran: {len(self.experiments)} experiments ({counts}); {s['runs']} training runs"]
        for e in self.shipped:
            lines.append(f"  shipped {e['id']} {e['title']}: {e['metric']} {_f(e['delta'])} "
                         f"[{_f(e['ci_low'])}, {_f(e['ci_high'])}]")
        if not self.shipped:
            lines.append("  nothing shipped")
        for f in self.failures:
            lines.append(f"  failed {f['experiment_id']} ({f['kind']}): {_short(f['text'])}")
        lines.append(f"spend: ${s['llm_dollars']:.2f} on {s['llm_calls']} LLM calls; {s['run_minutes']:.1f} "
                     f"run-minutes, {s['gpu_minutes']:.1f} of them on a GPU")
        for st in self.stages:
            lines.append(f"  {st['stage']}: {st['runs']} runs, {st['training_s']:.0f} s training, "
                         f"{st['kernel_start_s']:.0f} s kernel start, {st['harness_s']:.0f} s harness")
        return "\n".join(lines)

    # -- HTML ---------------------------------------------------------------------------

    def figures(self) -> dict[str, str]:
        effects = [plots.Interval(f"{e['id']} {e['title'][:18]}", e["delta"], e["ci_low"], e["ci_high"],
                                  e["decision"] or "") for e in self.experiments if e["delta"] is not None]
        points, best = self.best_over_time()
        families: dict[str, dict[str, float]] = {}
        for r in self.families:
            families.setdefault(r["family"], {})[r["outcome"]] = float(r["n"])
        stages = [(r["stage"], {"training": r["training_s"], "kernel start": r["kernel_start_s"],
                                "harness": r["harness_s"]}) for r in self.stages]
        return {
            "effects": plots.forest(effects, f"test {self.metric} effect per experiment (95% CI)",
                                    f"treatment - control, {self.metric}"),
            "best": plots.lines({"treatment": points, "best so far": best},
                                f"best test {self.metric} over time", "hours since the report's start",
                                self.metric, steps={"best so far"}),
            "families": plots.bars(list(families.items()), "outcomes by recipe family", "experiments"),
            "time": plots.bars(stages, "where the time went", "seconds"),
        }

    def html(self) -> str:
        fig = self.figures()
        rows = "".join(
            f"<tr><td>{e['id']}</td><td>{escape(e['title'])}</td><td>{escape(e['recipe'])}</td>"
            f"<td class='{e['decision'] or e['status']}'>{e['decision'] or e['status']}</td>"
            f"<td>{_f(e['delta'])}</td><td>[{_f(e['ci_low'])}, {_f(e['ci_high'])}]</td>"
            f"<td>{escape(e['brain'] or '-')}</td></tr>" for e in self.experiments)
        failures = "".join(f"<li><b>{f['experiment_id']}</b> ({escape(f['kind'])}): {escape(_short(f['text'], 300))}</li>"
                           for f in self.failures) or "<li>none</li>"
        return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>agentx report: {escape(self.workspace)}</title><style>{REPORT_CSS}</style></head><body>
<h1>agentx report: {escape(self.workspace)}</h1>
<p class="meta">since {self.since:%Y-%m-%d %H:%M} UTC, made {self.made_at:%Y-%m-%d %H:%M} UTC.
Every figure is a SQL query over the knowledge base.</p>
<pre class="summary">{escape(self.text())}</pre>
<section class="figures">{fig['effects']}{fig['best']}{fig['families']}{fig['time']}</section>
<h2>Experiments</h2><table><tr><th>id</th><th>title</th><th>recipe</th><th>decision</th><th>effect</th>
<th>95% CI</th><th>brain</th></tr>{rows}</table>
<h2>What failed and why</h2><ul>{failures}</ul></body></html>"""


REPORT_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#111827;max-width:1200px}
h1{font-size:22px}.meta{color:#6b7280}.summary{background:#f3f4f6;padding:12px;white-space:pre-wrap}
.figures{display:flex;flex-wrap:wrap;gap:16px}.plot{background:#fff;border:1px solid #e5e7eb}
table{border-collapse:collapse}td,th{border-bottom:1px solid #e5e7eb;padding:4px 8px;text-align:left}
.ship{color:#16a34a;font-weight:600}.reject{color:#dc2626}.vetoed,.failed{color:#d97706}"""


def _f(value) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _short(text: str | None, n: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def for_workspace(workspace, since: dt.datetime) -> MorningReport:
    from agentx.workspace import load_manifest
    from knowledge import KnowledgeBase

    manifest = load_manifest(workspace)
    return MorningReport.build(KnowledgeBase.for_workspace(workspace), since=since,
                               workspace=manifest.workspace.name, metric=manifest.metric.primary,
                               higher_is_better=manifest.metric.direction == "maximize")
