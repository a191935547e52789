"""The harness's own cells: code the harness runs in a run's kernel, before and after the
workspace's entrypoint, and how it reads their answers.

- `AUDIT_HOOK` + `BOOT`: the audit hook (see tools/harness.py's docstring, "leak"), then
  the entrypoint, timed;
- `REPORT`: parameter count, p95 inference latency on a fixed batch of the run's own test
  rows, and predict()'s scores for the alignment check;
- `AUDIT_READ` / `read_audit`: the hook's hits, from the kernel and from its log file.

The workspace's code shares the kernel with these cells and may break what they rely on:
every answer is parsed defensively (`kernel_json`), never trusted for a metric.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

from tools.sandbox import Sandbox

# Harness-owned, first in the kernel: the audit hook (see the module docstring). It must never
# raise: an exception from an audit hook aborts the operation that raised the event.
AUDIT_HOOK = r"""
def _agentx_install_audit(log_path, watched, allowed, needles, limit=200):
    import json, os, sys, threading
    log = open(log_path, "a", buffering=1, encoding="utf-8")   # opened before the hook exists
    hits, state, sep = [], threading.local(), os.sep
    watched, allowed, needles = tuple(watched), tuple(allowed), tuple(needles)
    libraries = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
                      | {sys.prefix, sys.base_prefix, sys.exec_prefix})
    path_args = {"open": (0,), "os.listdir": (0,), "os.scandir": (0,), "os.chdir": (0,), "glob.glob": (0,),
                 "glob.glob/2": (0, 2), "os.symlink": (0, 1), "os.link": (0, 1), "os.rename": (0, 1),
                 "os.truncate": (0,), "os.remove": (0,), "shutil.copyfile": (0, 1), "shutil.copytree": (0, 1),
                 "shutil.rmtree": (0,)}
    command_args = {"subprocess.Popen": (0, 1, 2), "os.system": (0,), "os.exec": (0, 1),
                    "os.posix_spawn": (0, 1), "os.spawn": (1, 2)}

    def depth(path, prefixes):   # the longest prefix that covers path (-1: none); the deepest rule wins
        return max((len(p) for p in prefixes if path == p or path.startswith(p + sep)), default=-1)

    def touched(raw):
        if raw is None or isinstance(raw, int):
            return None
        try:
            path = os.path.abspath(os.fsdecode(raw))
            inside = depth(path, watched)
            if inside > depth(path, allowed):
                return path
            if inside >= 0 or depth(path, libraries) >= 0:
                return None
            real = os.path.realpath(path)
        except (TypeError, ValueError, OSError):
            return None
        return real if real != path and depth(real, watched) > depth(real, allowed) else None

    def words(value):
        if isinstance(value, (str, bytes, os.PathLike)):
            try:
                yield os.fsdecode(value)
            except (TypeError, ValueError):
                pass
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from words(item)

    def record(event, what):
        if len(hits) < limit:
            hits.append({"event": event, "path": what})
            try:
                log.write(json.dumps({"event": event, "path": what}) + "\n")
            except (OSError, ValueError):
                pass

    def hook(event, args):
        if (event not in path_args and event not in command_args) or getattr(state, "busy", False):
            return
        state.busy = True
        try:
            if event in path_args:
                for i in path_args[event]:
                    if i < len(args) and (found := touched(args[i])):
                        record(event, found)
            else:
                text = " ".join(w for i in command_args[event] if i < len(args) for w in words(args[i]))
                if any(n in text for n in needles):
                    record(event, text[:300])
        finally:
            state.busy = False

    sys.addaudithook(hook)
    return lambda: json.dumps(hits)
"""

BOOT = """
_agentx_audit = _agentx_install_audit({log!r}, {watched!r}, {allowed!r}, {needles!r})
del _agentx_install_audit
import importlib, os, sys, time
os.chdir({cwd!r})
importlib.invalidate_caches()
sys.path.insert(0, os.getcwd())
_agentx_t0 = time.perf_counter()
_agentx_model = getattr(importlib.import_module({module!r}), {function!r})({run_dir!r})
_agentx_train_s = time.perf_counter() - _agentx_t0
"""

AUDIT_READ = "_agentx_audit()"
AUDIT_LOG = ".agentx-audit.jsonl"   # in the run directory: the one place a confined kernel may write

# Harness-owned measurement in the kernel: parameter count and inference latency of the
# trained model on a fixed batch of the run's own test rows.
REPORT = """\
def _agentx_report(model, batch_csv, id_column, repeats=30, rows=256):
    import json, time
    out = {{"train_seconds": _agentx_train_s, "num_params": getattr(model, "num_params", None),
           "device": str(getattr(model, "device", "cpu")), "p95_latency_ms": None}}
    predict = getattr(model, "predict", None)
    if callable(predict):
        import numpy as np
        import pandas as pd
        batch = pd.read_csv(batch_csv).head(rows)
        first = predict(batch)
        for _ in range(2):
            predict(batch)
        times = []
        for _ in range(repeats):
            t = time.perf_counter(); last = predict(batch); times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out["p95_latency_ms"] = times[min(len(times) - 1, int(0.95 * len(times)))]
        try:   # the scores predict() gives these rows: the harness compares them with the files
            out["check"] = {{"ids": batch[id_column].tolist(),
                            "first": np.asarray(first, dtype=float).ravel().tolist(),
                            "last": np.asarray(last, dtype=float).ravel().tolist()}}
        except (TypeError, ValueError, RuntimeError, KeyError) as exc:
            out["check_error"] = repr(exc)[:300]
    return json.dumps(out)
_agentx_report(_agentx_model, {batch_csv!r}, {id_column!r})
"""


@dataclass(frozen=True)
class AuditSpec:
    """The audit hook's settings for one run: its log file and the path prefixes it judges."""

    log: Path
    watched: list[str]
    allowed: list[str]
    needles: list[str]


def kernel_json(result_text: str | None):
    """The JSON string a harness cell returned (its repr), or None when it is not one: the
    workspace's code shares the kernel and may have broken what the cell relies on."""
    try:
        return json.loads(ast.literal_eval(result_text)) if result_text else None
    except (ValueError, SyntaxError, TypeError):
        return None


def read_audit(box: Sandbox, log: Path, report: dict) -> list[dict]:
    """The hook's hits: the kernel's own list (when it is still alive) and the log it appended to."""
    hits: list = []
    if box.alive:
        seen = box.execute(AUDIT_READ, timeout_s=10)
        report["exec_s"] = report.get("exec_s", 0.0) + seen.duration_s
        if seen.ok and isinstance(listed := kernel_json(seen.result_text), list):
            hits += listed
    if log.is_file():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                hits.append(json.loads(line))
            except json.JSONDecodeError:   # a line cut short when the kernel was killed mid-write
                continue
    unique = dict.fromkeys((str(h.get("event")), str(h.get("path"))) for h in hits if isinstance(h, dict))
    return [{"event": event, "path": path} for event, path in unique]
