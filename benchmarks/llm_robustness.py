"""LLM robustness: how a real small model (SmolLM2-135M-Instruct, llama.cpp on this CPU) fares
against agentx's LLM plumbing, agent by agent.

    python benchmarks/llm_robustness.py [--calls 20] [--threads 2]

It starts the local server (agentx/llm/local.py), makes a fresh adult-income workspace and
asks each agent for at least `--calls` decisions:

- brainstorm: `LLMBrainstorm.propose(ws, 2)` (the loop's round);
- chat: `LLMBrainstorm.propose(ws, 1, request)` over a list of plain-words requests;
- developer: `develop()` on a fixed proposal (edit blocks, then the micro tier, with up to
  two repairs): does the branch end as a commit that passed micro, or a recorded failure?
- mofa: `LLMFeatureBrain.select` (buckets, merge, refinement) under the template's
  constraints: is the selection valid after repair?

Per decision it records whether the first attempt validated, a later one did (a retry that
showed the model its validation error), or the client gave up (LLMError); an exception of
any other kind is a loop crash. Tokens and seconds come from the KB's `llm_calls` rows.
Last line: one JSON object with at least `first_try_valid`, `after_retry_valid`,
`micro_pass`, `loop_crashes`.

Read it as what it is: a robustness figure for a 135M model, which has the right shapes and
often the wrong content; it says nothing about what a frontier model would do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.brainstorm import LLMBrainstorm  # noqa: E402
from agents.developer import LLMDeveloper, develop  # noqa: E402
from agents.feature_selection_llm import LLMFeatureBrain  # noqa: E402
from agentx import mofa  # noqa: E402
from agentx.context import Workspace  # noqa: E402
from agentx.graph import create_experiment  # noqa: E402
from agentx.llm import LLMClient, LLMError  # noqa: E402
from agentx.llm import local as lm  # noqa: E402
from agentx.state import Proposal  # noqa: E402
from tools.git_repo import WorkspaceRepo  # noqa: E402

REQUESTS = [
    "try gradient boosted trees", "use a stronger regularisation", "add the native country feature",
    "drop fnlwgt", "make the model deeper", "try more trees with a smaller learning rate",
    "use fewer features", "calibrate the probabilities", "try a logistic regression with C of 1",
    "add an interaction of age and hours per week", "remove the education number",
    "try a random forest", "increase the learning rate", "use all features", "try shallower trees",
    "balance the classes", "standardise the numeric inputs", "try 400 trees", "bucket the age",
    "make training faster",
]


class Tally:
    """Decisions of one agent (counted by its `CountingClient`): first-try valid, valid after
    a retry, refused; crashes (exceptions other than LLMError) apart; its llm_calls rows."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.crashes: list[str] = []
        self.calls: list[dict] = []

    @property
    def decisions(self) -> int:
        return sum(self.outcomes.values())

    def ask(self, fn):
        try:
            return fn()
        except LLMError:
            return None                       # counted as refused by the client
        except Exception:                     # anything else escaping an agent is a crash of the loop
            self.crashes.append(traceback.format_exc(limit=3))
            return None


class CountingClient(LLMClient):
    """The client, with each `decide` tallied as one decision (an agent may decide several times)."""

    tally: Tally

    def decide(self, agent, prompt, schema, **kw):
        before = len(self.kb.llm_calls())
        try:
            decision = super().decide(agent, prompt, schema, **kw)
        except LLMError:
            self.tally.outcomes["refused"] += 1
            raise
        # a retry is an answer that did not validate (a server refusing a method is not the model's fault)
        retried = any((c["error"] or "").startswith("malformed output") for c in self.kb.llm_calls()[before:])
        self.tally.outcomes["after_retry" if retried else "first_try"] += 1
        return decision


def collect(ws, tally: Tally, mark: int) -> int:
    """Give `tally` the llm_calls rows logged since `mark`; the new mark."""
    calls = ws.kb.llm_calls()
    tally.calls = calls[mark:]
    return len(calls)


def client_for(server: lm.LocalServer, kb, tally: Tally) -> CountingClient:
    client = CountingClient.from_spec(server.spec, kb=kb, dollar_cap=None, backoff_s=0.2)
    client.tally = tally
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Last line: one JSON object. A robustness figure for a 135M model, "
                                            "not a quality claim.")
    parser.add_argument("--calls", type=int, default=20, help="decisions per agent at least (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the model")
    args = parser.parse_args()
    started = time.perf_counter()
    tallies = {agent: Tally() for agent in ("brainstorm", "chat", "developer", "mofa")}
    micro = Counter()
    with tempfile.TemporaryDirectory() as tmp, \
            lm.LocalServer(lm.model_file(), port=lm.free_port(), threads=args.threads,
                           log=Path(tmp) / "server.log") as server:
        root = Path(tmp) / "ws"
        WorkspaceRepo.init_from_template(root, "adult-income")
        with Workspace.open(root, progress=lambda _: None) as ws:
            ws.harness.splits
            # brainstorm and chat: each propose() is one decision (the client retries inside)
            mark = len(ws.kb.llm_calls())
            brainstorm = LLMBrainstorm(client_for(server, ws.kb, tallies["brainstorm"]))
            while tallies["brainstorm"].decisions < args.calls:
                tallies["brainstorm"].ask(lambda: brainstorm.propose(ws, 2))
                print(f"brainstorm {dict(tallies['brainstorm'].outcomes)}", flush=True)
            mark = collect(ws, tallies["brainstorm"], mark)
            chat = LLMBrainstorm(client_for(server, ws.kb, tallies["chat"]))
            for request in (REQUESTS * 3)[:args.calls]:
                tallies["chat"].ask(lambda: chat.propose(ws, 1, request))
            print(f"chat {dict(tallies['chat'].outcomes)}", flush=True)
            mark = collect(ws, tallies["chat"], mark)
            # developer: implement (edit blocks) + micro tier + repairs, one experiment at a time
            developer = LLMDeveloper(client_for(server, ws.kb, tallies["developer"]), max_repairs=2)
            proposal = Proposal(title="Use 300 trees", hypothesis="more boosting rounds fit the data better",
                                source="cli", rationale="fixed for the benchmark")
            while tallies["developer"].decisions < args.calls:
                exp_id = create_experiment(ws, proposal)
                result = tallies["developer"].ask(lambda: develop(ws, ws.kb.get_experiment(exp_id), developer))
                if result is not None:
                    micro["pass" if result.ok else (result.failure_kind or "failed")] += 1
                    micro["repairs"] += result.repairs
                print(f"developer {dict(tallies['developer'].outcomes)} micro {dict(micro)}", flush=True)
            # mofa: a selection is several decisions (buckets, merge, refinement)
            stats = mofa.workspace_stats(ws)
            problem = mofa.build_problem(ws, stats, budget=8)
            brain = LLMFeatureBrain(client_for(server, ws.kb, tallies["mofa"]))
            valid = selections = 0
            mark = collect(ws, tallies["developer"], mark)
            while tallies["mofa"].decisions < args.calls:
                selection = tallies["mofa"].ask(lambda: brain.select(problem))
                selections += 1
                valid += bool(selection is not None and selection.valid)
                print(f"mofa {dict(tallies['mofa'].outcomes)} valid selections {valid}/{selections}", flush=True)
            collect(ws, tallies["mofa"], mark)
            calls = ws.kb.llm_calls()

    print(f"\n{'agent':<12}{'decisions':>10}{'first try':>11}{'after retry':>13}{'refused':>9}{'crashes':>9}"
          f"{'calls':>7}{'tokens in/out':>16}{'s per call':>12}  methods")
    out: dict = {"model": lm.ALIAS, "threads": args.threads}
    totals = Counter()
    for agent, tally in tallies.items():
        mine = tally.calls
        n = tally.decisions
        totals.update(tally.outcomes)
        totals["crashes"] += len(tally.crashes)
        seconds = statistics.median(c["latency_s"] for c in mine) if mine else 0.0
        tokens = (sum(c["input_tokens"] or 0 for c in mine), sum(c["output_tokens"] or 0 for c in mine))
        methods = dict(Counter(c["method"] for c in mine))
        print(f"{agent:<12}{n:>10}{tally.outcomes['first_try'] / max(n, 1):>11.0%}"
              f"{tally.outcomes['after_retry'] / max(n, 1):>13.0%}{tally.outcomes['refused'] / max(n, 1):>9.0%}"
              f"{len(tally.crashes):>9}{len(mine):>7}{f'{tokens[0]}/{tokens[1]}':>16}{seconds:>12.2f}  {methods}")
        out[agent] = {"decisions": n, **dict(tally.outcomes), "crashes": len(tally.crashes)}
        for crash in tally.crashes[:2]:
            print(crash)
    n = sum(totals[k] for k in ("first_try", "after_retry", "refused"))
    experiments = sum(v for k, v in micro.items() if k != "repairs")
    out.update({"first_try_valid": round(totals["first_try"] / max(n, 1), 3),
                "after_retry_valid": round((totals["first_try"] + totals["after_retry"]) / max(n, 1), 3),
                "refused": round(totals["refused"] / max(n, 1), 3),
                "micro_pass": round(micro["pass"] / max(experiments, 1), 3), "developer_experiments": experiments,
                "repairs_per_experiment": round(micro["repairs"] / max(experiments, 1), 2),
                "mofa_valid_selections": f"{valid}/{selections}", "loop_crashes": totals["crashes"],
                "llm_calls": len(calls), "wall_s": round(time.perf_counter() - started, 1)})
    print(f"micro tier: {micro['pass']} of {experiments} developer experiments passed "
          f"({micro['repairs']} repairs); mofa: {valid} of {selections} selections valid after repair")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
