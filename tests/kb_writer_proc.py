"""Helper for tests/test_kb.py: one process writing to a shared knowledge base.

    python tests/kb_writer_proc.py <kb_path> <writer_name> <seconds>

Until <seconds> have passed it logs events, and every fifth round (the first included) a run with metrics in a
session; each row is counted only after its call returned (committed). At the end it
prints one JSON line: {"writer", "events", "runs", "metrics", "max_wait_s"}. Any error
(for instance KnowledgeBaseLocked) propagates and the exit status is non-zero.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from knowledge import KnowledgeBase  # noqa: E402


def main(kb_path: str, writer: str, seconds: float) -> None:
    kb = KnowledgeBase(kb_path)
    counts = {"writer": writer, "events": 0, "runs": 0, "metrics": 0, "max_wait_s": 0.0}
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        if i % 5 == 0:                  # a run first, so even a starved writer has both kinds
            with kb.session() as s:
                run_id = s.add_run(arm="baseline", device=writer, seed=i)
                s.add_metrics(run_id, "valid", {"auc": 0.5 + i * 1e-6, "logloss": 0.69})
                s.finish_run(run_id, status="ok", wall_s=0.0)
            counts["runs"] += 1
            counts["metrics"] += 2
        else:
            kb.log_event("tick", {"writer": writer, "i": i})
            counts["events"] += 1
        counts["max_wait_s"] = max(counts["max_wait_s"], time.monotonic() - started)
        i += 1
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
