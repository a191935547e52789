"""Harness evolution (SGPO): a placeholder until its own issue.

The loop calls `evolve()` every N experiments. For now it records that the step ran and
changes nothing; the real layer will reflect on trajectories, propose playbook edits and
accept them only when a replay shows no regression.
"""

from __future__ import annotations


def evolve(ws) -> dict:
    summary = {"changed": False, "note": "placeholder: harness evolution is not implemented yet"}
    ws.kb.log_event("evolve_harness", summary)
    return summary
