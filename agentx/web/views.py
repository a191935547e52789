"""What the web pages show, read from the KB (and, for diffs and logs, git and the run
directories): plain functions that return dicts, so a page is a template over one call."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

from agentx import plots
from agentx.errors import UserError
from knowledge.queue import Request, RequestQueue

SORTABLE = ("id", "title", "decision", "delta", "ci_low", "recipe", "brain", "harness_version", "branch")
LOG_TAIL = 6000


def fmt(value, spec: str = "+.4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def sort_rows(rows: list[dict], key: str, desc: bool) -> list[dict]:
    if key not in SORTABLE:
        key = "id"
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]
    return sorted(present, key=lambda r: r[key], reverse=desc) + missing


def facets(kb) -> dict[str, list[str]]:
    decisions = kb.query("SELECT DISTINCT coalesce(v.decision, e.status) AS d FROM experiments e LEFT JOIN "
                         "(SELECT * FROM verdicts QUALIFY row_number() OVER (PARTITION BY experiment_id ORDER BY id "
                         "DESC) = 1) v ON v.experiment_id = e.id ORDER BY d")
    recipes = kb.query("SELECT DISTINCT coalesce(recipe, 'free-form') AS r FROM experiments ORDER BY r")
    return {"decisions": [r["d"] for r in decisions], "recipes": [r["r"] for r in recipes]}


def run_status(kb, queue: RequestQueue) -> dict[str, Any]:
    """The run in progress (its request, stage, kernels, elapsed time) and the queue."""
    open_requests = queue.open()
    running = next((r for r in open_requests if r.status == "running"), None)
    out: dict[str, Any] = {"running": None, "queued": [_request_json(r) for r in open_requests if r.status == "queued"],
                           "recent": [_request_json(r) for r in queue.recent(10)]}
    if running is None:
        return out
    lines = queue.tail(running.id, 12)
    kernels = kb.query("SELECT id, experiment_id, arm, tier, seed, started_at, sandbox FROM runs "
                       "WHERE status = 'running' ORDER BY started_at")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    experiments = kb.query("SELECT id, title, status FROM experiments WHERE request_id = ? ORDER BY id", [running.id])
    out["running"] = {**_request_json(running), "lines": [f"{p.at:%H:%M:%S} {p.line}" for p in lines],
                      "stage": lines[-1].line if lines else "starting",
                      "experiments": experiments,
                      "kernels": [{**k, "elapsed_s": round((now - k["started_at"]).total_seconds(), 1),
                                   "started_at": k["started_at"].isoformat()} for k in kernels]}
    return out


def _request_json(r: Request) -> dict[str, Any]:
    return {"id": r.id, "kind": r.kind, "source": r.source, "status": r.status, "summary": r.summary,
            "error": r.error, "created_at": r.created_at.isoformat(timespec="seconds"),
            "elapsed_s": None if r.elapsed_s is None else round(r.elapsed_s, 1)}


def request_outcome(kb, request: Request) -> dict[str, Any]:
    """The end of a request: its status and, per experiment it made, the verdict and PR."""
    from agentx.app import experiment_rows

    rows = experiment_rows(kb, request_id=request.id)
    return {"request": _request_json(request), "result": request.result,
            "experiments": [{k: r[k] for k in ("id", "title", "status", "decision", "delta", "ci_low", "ci_high",
                                               "pr", "pr_state", "branch")} for r in rows]}


def message_json(m) -> dict[str, Any]:
    return {"id": m.id, "role": m.role, "kind": m.kind, "text": m.text, "payload": m.payload,
            "at": m.created_at.isoformat(timespec="seconds")}


def experiment_detail(root: Path, kb, experiment_id: str, manifest) -> dict[str, Any]:
    from agentx.app import experiment_report

    report = experiment_report(kb, experiment_id)
    e = report["experiment"]
    seeds = [plots.Interval(f"seed {s['seed']}", s["delta"], None, None, "seed") for s in report["per_seed"]
             if s.get("delta") is not None]
    if report["delta"] is not None:
        seeds.append(plots.Interval(f"all {report['n_seeds']} seeds", report["delta"], report["ci_low"],
                                    report["ci_high"], report["decision"] or ""))
    figures = [plots.forest(seeds, f"test {report['metric'] or manifest.metric.primary} effect per seed (95% CI "
                                   "on all seeds)", "treatment - control")]
    runs = report["runs"]                     # in the order they started
    per_run = {f"{r['arm']} s{r['seed']} {r['tier']}": learning_curve(r["run_dir"]) for r in runs}
    names = {name for curve in per_run.values() for name in curve}
    curves = {(run if len(names) == 1 else f"{run} {name}"): points
              for run, curve in per_run.items() for name, points in curve.items()}
    if curves:
        figures.append(plots.lines(curves, "learning curves (the runs' curve.csv)", "epoch",
                                   names.pop() if len(names) == 1 else "value", width=640))
    logs = [{**r, "log": kernel_log(r["run_dir"])} for r in runs]
    return {"r": report, "e": e, "figures": figures, "runs": logs, "diff": branch_diff(root, e),
            "has_curves": bool(curves)}


def learning_curve(run_dir: str | None) -> dict[str, list[tuple[float, float]]]:
    """The run's own curve.csv (a step column, then one column per series), if it wrote one."""
    path = Path(run_dir or "") / "curve.csv"
    if not run_dir or not path.is_file():
        return {}
    try:
        with path.open() as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        return {name: [(float(row[0]), float(row[i])) for row in body if len(row) > i]
                for i, name in enumerate(header) if i > 0}
    except (ValueError, IndexError, OSError):
        return {}


def kernel_log(run_dir: str | None) -> str:
    path = Path(run_dir or "") / "kernel.log"
    if not run_dir or not path.is_file():
        return ""
    text = path.read_text(errors="replace")
    return text if len(text) <= LOG_TAIL else "…" + text[-LOG_TAIL:]


def branch_diff(root: Path, experiment: dict) -> str:
    from tools.git_repo import WorkspaceRepo

    if not experiment.get("branch") or not experiment.get("head_commit"):
        return ""
    try:
        return WorkspaceRepo(root).diff(experiment["branch"], experiment.get("base_commit"))
    except Exception as exc:  # noqa: BLE001  a branch deleted by hand: say so on the page
        return f"(the diff could not be read: {exc})"


def pr_detail(root: Path, kb, number: int, manifest) -> dict[str, Any]:
    pr = kb.get_pull_request(number)
    if pr is None:
        raise UserError(f"no pull request #{number}; /prs lists them")
    detail = experiment_detail(root, kb, pr["experiment_id"], manifest)
    return {"pr": pr, **detail}
