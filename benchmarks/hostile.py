"""Hostile experiment code against the sandboxed harness: attacks tried, blocked, seconds each.

    python benchmarks/hostile.py [--unsandboxed]

Builds the tiny stdlib workspace of the test suite as a git repo in a temp dir, plants each
attack in train.py on its own branch (inside `main`, after the honest training), and runs
it through the real harness. An attack is *effective* when any of its effects is seen
from outside the run: the workspace's files, git refs or hooks changed; a KB row was
added or changed; the planted secret reached a file of the run; a file appeared outside
the run directory; the host's TCP listener got a connection; a process outlived the run;
the run directory grew past its cap; or the run was scored with labels it should not have
(test AUC above 0.99). It also prints each run's status and failure kind. The last line is
one JSON object: tried, blocked, effective, seconds per attack. `--unsandboxed` shows what
the same attacks do without the sandbox (for comparison; expect effective attacks).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import TINY_DATA, TINY_MANIFEST, TINY_TRAIN, wrap_main  # noqa: E402
from agentx.context import Workspace  # noqa: E402
from tools.git_repo import WorkspaceRepo  # noqa: E402

SECRET = "sk-hostile-benchmark-secret"
CAP_MB = 64          # the run directory's cap in this benchmark ([sandbox] run_dir_mb)
SLACK_MB = 64        # the cap is polled every 50 ms: what a fast writer may add before the kill


def attacks(ws: Workspace, port: int, outside: Path) -> dict[str, str]:
    labels = ws.harness.splits.file("test")
    kb = ws.root / ".agentx" / "kb.duckdb"
    return {
        "native label read (duckdb)": f"import duckdb\nduckdb.sql(\"SELECT * FROM read_csv('{labels}')\").fetchall()",
        "native label read (numpy)": f"import numpy as np\nnp.fromfile({str(labels)!r}, dtype=np.uint8)",
        "labels into predictions": textwrap.dedent(f"""
            import csv, duckdb
            truth = dict(duckdb.sql("SELECT row_id, label FROM read_csv('{labels}')").fetchall())
            p = os.path.join(run_dir, 'predictions', 'test.csv')
            rows = list(csv.reader(open(p)))
            csv.writer(open(p, 'w', newline='')).writerows([rows[0]] + [[r[0], truth[int(r[0])]] for r in rows[1:]])"""),
        "commit to a protected file": textwrap.dedent(f"""
            import subprocess
            open({str(ws.root / 'data.py')!r}, 'a').write('# label for free')
            subprocess.run(['git', '-C', {str(ws.root)!r}, 'commit', '-qam', 'tune'], check=True)"""),
        "write the checkout's data.py": "open('data.py', 'a').write('# tuned')",
        "forge the KB": textwrap.dedent(f"""
            import duckdb
            duckdb.connect({str(kb)!r}).execute("INSERT INTO verdicts (experiment_id, decision) VALUES ('E9', 'ship')")"""),
        "parent environment": textwrap.dedent(f"""
            import glob
            stolen = []
            for path in glob.glob('/proc/*/environ') + ['/proc/{os.getpid()}/environ']:
                try:
                    stolen.append(open(path, 'rb').read().decode(errors='replace'))
                except OSError:
                    pass
            open(os.path.join(run_dir, 'stolen.txt'), 'w').write(repr(stolen) + repr(dict(os.environ)))"""),
        "plant a git hook": textwrap.dedent(f"""
            path = {str(ws.root / '.git' / 'hooks' / 'post-commit')!r}
            open(path, 'w').write('#!/bin/sh\\ntouch {outside}/hook-ran\\n')
            os.chmod(path, 0o755)"""),
        "write outside the run directory": textwrap.dedent(f"""
            for target in ({str(outside / 'escape.txt')!r}, {str(ws.root / 'escape.txt')!r},
                           os.path.expanduser('~/escape.txt')):
                try:
                    open(target, 'w').write('x')
                except OSError:
                    pass"""),
        "network": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'hi')",
        "orphan process": textwrap.dedent("""
            import subprocess
            if os.fork() == 0:
                os.setsid()
                subprocess.Popen(['sleep', '331'], start_new_session=True)
                os._exit(0)"""),
        "fill the disk": "f = open(os.path.join(run_dir, 'fill'), 'wb')\nwhile True:\n    f.write(b'x' * 2**20)",
        "fill the disk, many files": ("i = 0\nwhile True:\n    open(os.path.join(run_dir, f'f{i}'), 'wb')"
                                      ".write(b'x' * 2**20); i += 1"),
        "memory": "hog = []\nwhile True:\n    hog.append(bytearray(50 * 2**20))",
        "hang, ignoring SIGINT": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
    }


def state(ws: Workspace) -> dict:
    files = {str(p.relative_to(ws.root)): p.read_bytes() for p in ws.root.rglob("*")
             if p.is_file() and ".agentx" not in p.parts and ".git" not in p.parts}
    kb = {t: ws.kb.query(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in ("experiments", "verdicts", "lessons")}
    return {"files": files, "head": ws.repo.head(), "refs": ws.repo.repo.git.for_each_ref(),
            "hooks": sorted(p.name for p in (ws.root / ".git" / "hooks").iterdir()), "kb": kb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unsandboxed", action="store_true", help="run the attacks without the OS sandbox")
    args = parser.parse_args()
    os.environ["OPENAI_API_KEY"] = SECRET
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        template = tmp / "tiny"
        template.mkdir()
        (template / "agentx.toml").write_text(TINY_MANIFEST + f"\n[sandbox]\nrun_dir_mb = {CAP_MB}\ntmp_mb = 64\n")
        (template / "data.py").write_text(textwrap.dedent(TINY_DATA))
        (template / "train.py").write_text(textwrap.dedent(TINY_TRAIN))
        WorkspaceRepo.init_from_template(tmp / "ws", template)
        outside = tmp / "outside"
        outside.mkdir()
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        with Workspace.open(tmp / "ws", warm_kernels=False) as ws:
            ws.harness.sandboxed = not args.unsandboxed
            ws.harness.memory_limit_mb = 1024
            micro = ws.manifest.tiers.micro.model_copy(update={"timeout_s": 5})
            ws.harness.manifest = ws.manifest.model_copy(update={"tiers": ws.manifest.tiers.model_copy(
                update={"micro": micro})})
            rows, seconds = [], {}
            original = state(ws)
            for i, (name, body) in enumerate(attacks(ws, server.getsockname()[1], outside).items()):
                wt = ws.repo.create_experiment(f"E{i + 1:04d}", "attack")
                (wt.path / "train.py").write_text(textwrap.dedent(TINY_TRAIN) + "\n" + wrap_main("import os\n" + body))
                head = ws.repo.commit(wt, name)
                before = state(ws)
                strays = [outside / "escape.txt", outside / "hook-ran", ws.root / "escape.txt", Path.home() / "escape.txt"]
                present = {p for p in strays if p.exists()}     # not this attack's doing
                t0 = time.perf_counter()
                run = ws.harness.run(wt.path, head, tier="micro", seed=0, arm="treatment")
                seconds[name] = round(time.perf_counter() - t0, 2)
                effects = []
                after = state(ws)
                effects += [key for key in before if before[key] != after[key]]
                run_dir = Path(ws.kb.get_run(run.run_id)["run_dir"])
                run_files = [p for p in run_dir.rglob("*") if p.is_file()]
                if any(SECRET in p.read_text(errors="replace") for p in run_files):
                    effects.append("secret in run files")
                held = sum(p.stat().st_size for p in run_files) / 2**20
                if held > CAP_MB + SLACK_MB:
                    effects.append(f"run directory at {held:.0f} MB, past its cap")
                if {p for p in strays if p.exists()} - present:
                    effects.append("file outside the run")
                try:
                    server.accept()[0].close()
                    effects.append("network connection")
                except BlockingIOError:
                    pass
                time.sleep(0.3)
                orphans = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "331"]]
                if orphans:
                    effects.append("orphan alive")
                    for p in orphans:
                        p.kill()
                if (run.metric("test", "auc") or 0) > 0.99:
                    effects.append(f"scored with the labels (test AUC {run.metric('test', 'auc'):.3f})")
                # undo what an unsandboxed attack did, so the next one starts from the same main
                ws.repo.repo.git.reset("-q", "--hard", original["head"])
                for stray in set(strays) - present:
                    stray.unlink(missing_ok=True)
                for hook in set(after["hooks"]) - set(original["hooks"]):
                    (ws.root / ".git" / "hooks" / hook).unlink()
                rows.append((name, run.status, run.failure_kind, effects))
                print(f"{name:34s} {run.status:8s} {str(run.failure_kind):9s} {seconds[name]:6.2f} s  {held:5.0f} MB  "
                      f"{'EFFECTIVE: ' + ', '.join(effects) if effects else 'blocked'}", flush=True)
        server.close()
    effective = [name for name, *_, effects in rows if effects]
    print(f"attacks tried {len(rows)}, blocked {len(rows) - len(effective)}, effective {len(effective)} "
          f"({'sandboxed' if not args.unsandboxed else 'UNSANDBOXED'}); median {sorted(seconds.values())[len(seconds) // 2]:.2f} s each")
    print(json.dumps({"sandbox": not args.unsandboxed, "tried": len(rows), "blocked": len(rows) - len(effective),
                      "effective": len(effective), "effective_attacks": effective, "seconds": seconds}))


if __name__ == "__main__":
    main()
