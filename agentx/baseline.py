"""Train the base commit over several seeds: the reference every experiment is measured against.

The harness adds a popularity reference (an item's click rate in train) to full-tier runs
when the manifest names an `item_column`; without one there is none, and the report says so."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from agentx.context import Workspace
from agentx.workspace import metric_sign
from tools.harness import RunOutcome


@dataclass(frozen=True)
class BaselineReport:
    commit: str
    tier: str
    runs: list[RunOutcome]
    metric: str                              # the primary metric
    item_column: str | None                  # the manifest's [data] item_column: None, no popularity reference
    metrics: list[str]                       # every metric the runs are scored on, the primary first

    @property
    def ok_runs(self) -> list[RunOutcome]:
        return [r for r in self.runs if r.ok]

    def values(self, split: str = "test", name: str | None = None) -> list[float]:
        return [r.metric(split, name or self.metric) for r in self.ok_runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values())

    @property
    def spread(self) -> float:
        """Sample standard deviation over seeds (0 with one seed)."""
        values = self.values()
        return statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def popularity(self) -> float | None:
        values = [v for v in self.values("test", f"popularity_{self.metric}") if v is not None]
        return values[0] if values else None

    @property
    def reference_line(self) -> str | None:
        """How the model compares with the popularity reference, or why there is none (None: no
        line, e.g. the micro tier, where the reference is not computed)."""
        if self.item_column is None:
            return "no popularity reference (no item_column in [data])"
        if self.popularity is None or not self.ok_runs:
            return None
        margin = metric_sign(self.metric) * (self.mean - self.popularity)   # > 0: the model is better
        return (f"popularity baseline (item click rate in train) test {self.metric}: {self.popularity:.4f} "
                f"-> model {'beats' if margin > 0 else 'does NOT beat'} it by {margin:+.4f}")


def run_baseline(ws: Workspace, *, seeds: int, tier: str, reuse: bool = False) -> BaselineReport:
    checkout, commit = ws.base_checkout()
    ws.kb.log_event("baseline_started", {"commit": commit, "seeds": seeds, "tier": tier})
    runs = [ws.harness.run(checkout, commit, tier=tier, seed=seed, arm="baseline", reuse=reuse)
            for seed in range(seeds)]
    report = BaselineReport(commit, tier, runs, ws.manifest.metric.primary, ws.manifest.data.item_column,
                            ws.manifest.metric.names)
    ws.kb.log_event("baseline_finished", {"commit": commit, "tier": tier, "ok": len(report.ok_runs),
                                          "failed": len(runs) - len(report.ok_runs)})
    return report
