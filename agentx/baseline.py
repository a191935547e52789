"""Train the base commit over several seeds: the reference every experiment is measured against."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from agentx.context import Workspace
from tools.harness import RunOutcome


@dataclass(frozen=True)
class BaselineReport:
    commit: str
    tier: str
    runs: list[RunOutcome]
    metric: str

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
        values = [v for v in self.values("test", "popularity_auc") if v is not None]
        return values[0] if values else None


def run_baseline(ws: Workspace, *, seeds: int, tier: str, reuse: bool = False) -> BaselineReport:
    checkout, commit = ws.base_checkout()
    ws.kb.log_event("baseline_started", {"commit": commit, "seeds": seeds, "tier": tier})
    runs = [ws.harness.run(checkout, commit, tier=tier, seed=seed, arm="baseline", reuse=reuse)
            for seed in range(seeds)]
    report = BaselineReport(commit, tier, runs, ws.manifest.metric.primary)
    ws.kb.log_event("baseline_finished", {"commit": commit, "tier": tier, "ok": len(report.ok_runs),
                                          "failed": len(runs) - len(report.ok_runs)})
    return report
