"""The search's bookkeeping with a branching scripted model and the real forking kernel:
terminal rules, rewards and backup, budgets, the session cap, export, the chosen notebook."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from search_helpers import BranchingModel, depth, step

from notebook_agent.agent.loop import AgentConfig
from notebook_agent.agent.notebook import trajectory_to_notebook
from notebook_agent.kernel import make_session
from notebook_agent.models.base import Completion, ParseError, Usage
from notebook_agent.search import SearchConfig, Tree, run_search
from notebook_agent.tasks.scoring import get_scorer
from notebook_agent.tasks.task import Task

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales.csv"
TOTAL = int(pd.read_csv(SALES).units.sum())


@pytest.fixture
def task() -> Task:
    return Task(id="sales-total", question="What is the total number of units sold?", files=[SALES],
                format="@total_units[value] where value is an integer.", answer=[["total_units", str(TOTAL)]])


def record_forks(session, forks: list) -> None:
    """Bookkeeping only: remember every session forked from `session` (and from its forks)."""
    real_fork = session.fork

    async def fork():
        child = await real_fork()
        forks.append(child)
        record_forks(child, forks)
        return child

    session.fork = fork


@pytest.fixture
async def session(task):
    s = make_session("forking", files=task.files)
    await s.start()
    s.forks = []
    record_forks(s, s.forks)
    yield s
    await s.close()


def last_tool(messages) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "tool"), "")


def collection_policy(messages, i):
    """Root: sample 0 computes the total, 1 raises, 2 is unparsable. Below: a computed total is
    answered (right, wrong, right); an error is repeated."""
    if depth(messages) == 0:
        if i == 0:
            return step("execute_code", logprob=-0.1, comment="Sum the units.",
                        code="import pandas as pd\nprint(pd.read_csv('sales.csv').units.sum())")
        if i == 1:
            return step("execute_code", logprob=-0.5, comment="Oops.", code="1/0")
        return Completion(raw_text="<tool_call>{oops", parse_error=ParseError("not JSON"), usage=Usage(10, 4),
                          token_logprobs=[-2.0] * 4)
    out = last_tool(messages)
    if "Error" in out or "ZeroDivision" in out:
        return step("execute_code", logprob=-0.3, comment="Again.", code="1/0")
    value = out.strip() if i != 1 else "0"
    return step("final_answer", logprob=-0.2, answer=f"@total_units[{value}]")


async def test_collection_rewards_terminals_backup_and_export(task, session, tmp_path):
    model = BranchingModel(collection_policy)
    cfg = SearchConfig(c_puct=1.25, k=3, iterations=10, max_depth=4, parse_failure_terminal=True,
                       agent=AgentConfig(max_consecutive_errors=2, temperature=0.8))
    events = []
    result = await run_search(task, model, session, cfg,
                              reward_scorer=get_scorer("dabench"), on_event=events.append)
    tree = result.tree
    # one model call per expansion, with n = k
    assert all(n == 3 for _, n in model.requests) and len(model.requests) == result.iterations == 3
    root = tree.root
    n_ok, n_err, n_parse = tree.children(root)
    assert (n_parse.terminal, n_parse.reason, n_parse.value) == (True, "parse_error", -1.0)
    assert not n_ok.terminal and n_ok.value == 0.0 and n_ok.cells[0]["result"]["status"] == "ok"
    assert n_err.consecutive_errors == 1 and not n_err.terminal
    answers = tree.children(n_ok)
    assert [n.reason for n in answers] == ["answered"] * 3
    assert [n.value for n in answers] == [1.0, -1.0, 1.0]  # fraction right, else -1
    assert [n.reason for n in tree.children(n_err)] == ["max_errors"] * 3
    assert all(n.value == -1.0 for n in tree.children(n_err))
    # backup: one visit per created node, values summed along the path
    assert root.visits == 9 and root.value_sum == pytest.approx(-1 + 1 - 3)
    assert n_ok.visits == 4 and n_ok.q == pytest.approx(1 / 4)
    assert n_err.visits == 4 and n_err.q == pytest.approx(-3 / 4)
    # priors are the geometric mean token probability
    assert n_ok.prior == pytest.approx(0.904837, rel=1e-5)
    # every path ended; candidates and aggregation
    assert result.status == "exhausted" and root.closed
    assert [c.answer for c in result.candidates] == [f"@total_units[{TOTAL}]", "@total_units[0]",
                                                     f"@total_units[{TOTAL}]"]
    assert result.answer == f"@total_units[{TOTAL}]" == result.aggregates["majority"]
    assert result.aggregates["best_value"] == f"@total_units[{TOTAL}]"
    assert result.chosen == answers[0].id
    # the chosen path as a notebook: the one cell of its path, and the answer
    traj = result.trajectory
    assert traj.status == "answered" and traj.answer == result.answer and len(traj.steps) == 1
    assert traj.completion_tokens == 9 * 4 and traj.prompt_tokens == 9 * 10
    nb = trajectory_to_notebook(traj)
    nbformat.validate(nb)
    assert [c.source for c in nb.cells if c.cell_type == "code"] == [n_ok.cells[0]["result"]["code"]]
    # events
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("expand") == 3 and kinds.count("candidate") == 3
    # every fork was closed
    assert len(session.forks) == 9 and all(f._closed and not f.is_alive for f in session.forks)
    assert session.is_alive  # the caller's session is left alone
    # export and load back
    path = tree.save(tmp_path / "tree.json")
    back = Tree.load(path)
    assert len(back.nodes) == 10 and back.chosen == result.chosen
    assert back.nodes[answers[1].id].answer == "@total_units[0]" and back.nodes[answers[1].id].value == -1.0
    assert back.nodes[n_ok.id].messages == n_ok.messages
    data = json.loads(path.read_text())
    assert data["config"]["search"]["c_puct"] == 1.25 and data["stats"]["forks"] == 9
    rebuilt = back.path_trajectory(back.chosen)
    assert rebuilt.answer == result.answer and [s.result.code for s in rebuilt.steps] == [s.result.code for s in traj.steps]


async def test_fork_isolation_between_siblings(task, session):
    """A variable or file made in one child is absent from its sibling (and the parent)."""

    def policy(messages, i):
        if depth(messages) == 0:
            return step("execute_code", comment="mark", code=f"marker_{i} = {i}\nopen('f{i}.txt', 'w').write('x')")
        return step("execute_code", comment="look",
                    code="import os\nprint(sorted(k for k in globals() if k.startswith('marker_')), "
                         "sorted(f for f in os.listdir('.') if f.endswith('.txt')))")

    cfg = SearchConfig(k=2, iterations=3, max_depth=3, c_puct=1.25)  # exploration visits both siblings
    result = await run_search(task, BranchingModel(policy), session, cfg)
    tree = result.tree
    a, b = tree.children(tree.root)
    seen_a = {n.cells[0]["result"]["text"].strip() for n in tree.children(a)}
    seen_b = {n.cells[0]["result"]["text"].strip() for n in tree.children(b)}
    assert seen_a == {"['marker_0'] ['f0.txt']"}
    assert seen_b == {"['marker_1'] ['f1.txt']"}
    probe = await session.execute("print('marker_0' in globals())")
    assert probe.text.strip() == "False"  # the root's kernel never ran a child's cell


async def test_depth_limit_token_budget_and_no_answer(task, session):
    policy = lambda messages, i: step("execute_code", comment="step", code=f"x = {depth(messages)}")
    result = await run_search(task, BranchingModel(policy), session, SearchConfig(k=1, iterations=9, max_depth=2))
    tree = result.tree
    assert result.status == "exhausted" and result.iterations == 2 and tree.max_depth() == 2
    leaf = tree.nodes[2]
    assert (leaf.terminal, leaf.reason, leaf.value) == (True, "max_depth", -1.0)
    assert result.answer is None and result.candidates == [] and result.trajectory.status == "max_turns"
    nbformat.validate(trajectory_to_notebook(result.trajectory))

    # tokens: 14 per completion, budget 30 -> 3 expansions, then the budget stops the search
    result = await run_search(task, BranchingModel(policy), session,
                              SearchConfig(k=1, iterations=9, max_depth=10, max_tokens=30))
    assert result.status == "max_tokens" and result.iterations == 3 and len(result.tree.nodes) == 4


class CountingValue:
    """A value scorer for bookkeeping: more cells run = more valuable."""

    def __init__(self):
        self.batches: list[int] = []

    def score(self, batch):
        self.batches.append(len(batch))
        return [0.1 * sum(m["role"] == "tool" for m in msgs) + (5.0 if "final" in json.dumps(msgs) else 0.0)
                for msgs in batch]


async def test_value_scorer_guides_and_the_session_cap_prunes(task, session):
    def policy(messages, i):
        if depth(messages) >= 3 and i == 0:
            return step("final_answer", answer="@total_units[1]")
        return step("execute_code", comment="step", code=f"y = {i}")

    value = CountingValue()
    cfg = SearchConfig(k=2, iterations=6, max_depth=10, max_live_sessions=3)
    result = await run_search(task, BranchingModel(policy), session, cfg, value_scorer=value)
    tree = result.tree
    assert value.batches and all(b == 2 for b in value.batches)
    # c_puct = 0 and values growing with depth: the search dives
    assert tree.max_depth() >= 4
    answered = [n for n in tree.nodes.values() if n.reason == "answered"]
    assert answered and all(n.value == 1.0 for n in answered)  # clamped to [-1, 1]
    assert tree.stats["max_live_sessions"] <= 3 and tree.stats["pruned"] >= 1
    assert any(n.reason == "pruned" for n in tree.nodes.values())
    assert all(f._closed for f in session.forks)


async def test_value_on_terminal_nodes_only(task, session):
    """value_nodes="terminal" (JUPITER's released inference): the value model scores answered
    nodes only; inner nodes get the neutral 0, failed ones -1."""
    def policy(messages, i):
        if depth(messages) >= 1 and i == 0:
            return step("final_answer", answer="@total_units[1]")
        return step("execute_code", comment="step", code=f"y = {i}")

    value = CountingValue()
    cfg = SearchConfig(k=2, iterations=3, max_depth=10, value_nodes="terminal")
    tree = (await run_search(task, BranchingModel(policy), session, cfg, value_scorer=value)).tree
    answered = [n for n in tree.nodes.values() if n.reason == "answered"]
    inner = [n for n in tree.nodes.values() if n.parent is not None and not n.terminal]
    assert answered and inner and sum(value.batches) == len(answered)
    assert all(n.value == 1.0 for n in answered) and all(n.value == 0.0 for n in inner)
    with pytest.raises(ValueError, match="value_nodes"):
        SearchConfig(value_nodes="inner")  # type: ignore[arg-type]


async def test_majority_vote_baseline_runs_k_isolated_agents(task, session):
    answers = iter(["@total_units[5]", "@total_units[7]", "@total_units[5]"])

    def policy(messages, i):
        if depth(messages) == 0:
            return step("execute_code", comment="c", code="import os\nprint(sorted(os.listdir('.')))\nseen = 1")
        return step("final_answer", answer=next(answers))

    from notebook_agent.search import run_vote

    result = await run_vote(task, BranchingModel(policy), session,
                            SearchConfig(k=3, agent=AgentConfig(seed=11, temperature=0.7)))
    assert len(result.runs) == 3 and all(r.status == "answered" for r in result.runs)
    assert sorted(r.answer for r in result.runs) == ["@total_units[5]", "@total_units[5]", "@total_units[7]"]
    assert result.answer == "@total_units[5]" == result.aggregates["majority"]
    assert [r.settings["temperature"] for r in result.runs] == [0.7] * 3
    assert sorted(r.settings["seed"] for r in result.runs) == [11, 12, 13]
    traj = result.trajectory
    assert traj.answer == "@total_units[5]" and traj.completion_tokens == 3 * 2 * 4
    assert traj.search["method"] == "vote"
    assert all(r.steps[0].result.text.strip() == "['sales.csv']" for r in result.runs)  # fresh forks
    assert len(session.forks) == 3 and all(f._closed for f in session.forks)
    assert (await session.execute("print('seen' in globals())")).text.strip() == "False"


async def test_stop_and_cancellation_close_every_fork(task, session):
    import asyncio

    stop = asyncio.Event()

    def policy(messages, i):
        if depth(messages) >= 1:
            stop.set()  # asked for at the 2nd expansion: the search ends before a 3rd
        return step("execute_code", comment="c", code="x = 1")

    result = await run_search(task, BranchingModel(policy), session, SearchConfig(k=2, iterations=10),
                              stop=stop)
    assert result.status == "cancelled" and result.iterations == 2 and len(result.tree.nodes) == 5
    assert all(f._closed for f in session.forks)

    slow = lambda messages, i: step("execute_code", comment="c", code="import time\ntime.sleep(30)")  # noqa: E731
    run = asyncio.create_task(run_search(task, BranchingModel(slow), session, SearchConfig(k=2)))
    while len(session.forks) < 6:  # the two forks of the first (slow) expansion exist
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert all(f._closed and not f.is_alive for f in session.forks)
    assert session.is_alive


async def test_eval_collect_mode_rewards_with_the_scorer_and_saves_the_tree(task, session, tmp_path):
    """`eval run --search mcts --collect`: answered nodes get the scorer's reward (the gold
    answer is read), and the tree lands in the run's trees/; without collect they do not."""
    from notebook_agent.eval.search_fn import SearchRunConfig, search_agent_fn

    cfg = SearchConfig(c_puct=1.25, k=3, iterations=10, max_depth=4, parse_failure_terminal=True,
                       agent=AgentConfig(max_consecutive_errors=2, temperature=0.8))
    values = {}
    for collect in (True, False):
        trees = tmp_path / f"trees-{collect}"
        agent_fn = search_agent_fn(trees, reward_scorer=get_scorer("dabench"))
        run_config = SearchRunConfig(method="mcts", search=cfg, collect=collect)
        await agent_fn(task, BranchingModel(collection_policy), session, run_config)
        tree = Tree.load(trees / "sales-total.json")
        answered = [n for n in tree.nodes.values() if n.reason == "answered"]
        values[collect] = [n.value for n in answered]
        assert tree.config["reward_scorer"] == ("dabench" if collect else None)
    assert values[True] == [1.0, -1.0, 1.0]
    assert values[False] and set(values[False]) == {0.0}  # no scorer, no value model: unvalued

    with pytest.raises(ValueError, match="needs the task's scorer"):
        await search_agent_fn(tmp_path / "t")(task, BranchingModel(collection_policy), session,
                                              SearchRunConfig(method="mcts", search=cfg, collect=True))
