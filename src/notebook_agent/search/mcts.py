"""MCTS over agent states: select by PUCT, expand k sampled steps in kernel forks, value, back up.

One iteration: walk from the root to an open leaf by PUCT; sample k next steps from the model
(one call with n=k); run each in its own `fork()` of the leaf's kernel (so a node costs the
same at depth 10 as at depth 1); value each child (terminal reward, value model, or neutral);
back each value up to the root. The leaf's kernel is closed once its children exist (it is
never expanded again), terminal children's kernels at once, and the worst open leaves are
pruned when more than `max_live_sessions` kernels would be alive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..agent.session import close_session
from ..agent.state import AgentState, StepOutcome, initial_state
from ..agent.step import apply_step, sample_steps
from ..agent.tools import TOOLS
from ..agent.trajectory import RunStatus, Trajectory
from ..kernel.base import KernelError, KernelSession
from ..models.base import ChatModel, Completion, ModelError
from ..tasks.scoring import Scorer
from ..tasks.task import Task
from .aggregate import AGGREGATIONS, Candidate, aggregate
from .config import SearchConfig
from .puct import backup, close_up, select_leaf
from .tree import Node, Tree
from .value import FAILED, NEUTRAL, ValueScorer, clamp, terminal_reward

log = logging.getLogger(__name__)
# Why a search stopped (not a run status: SearchResult.trajectory carries the run's).
SearchStatus = Literal["iterations", "exhausted", "timeout", "max_tokens", "cancelled", "model_error"]


@dataclass
class SearchEvent:
    """kinds: "start", "iteration" (a leaf was selected), "expand" (its children exist),
    "candidate" (an answer was found), "prune", "end"."""

    kind: str
    tree: Tree
    data: dict[str, Any] = field(default_factory=dict)


SearchEventHandler = Callable[[SearchEvent], None]


@dataclass
class SearchResult:
    tree: Tree
    answer: str | None
    chosen: int | None                 # node of the chosen answer (or of the best path when none)
    candidates: list[Candidate]
    aggregates: dict[str, str | None]  # aggregation -> its answer
    trajectory: Trajectory             # the chosen path, with the whole search's tokens and time
    status: SearchStatus               # why the search stopped
    detail: str = ""
    iterations: int = 0


def _step_record(c: Completion) -> dict[str, Any]:
    return {"raw_text": c.raw_text, "content": c.content, "tool_calls": [t.to_openai() for t in c.tool_calls],
            "parse_error": c.parse_error.message if c.parse_error else None, "finish_reason": c.finish_reason,
            "usage": {"prompt_tokens": c.usage.prompt_tokens, "completion_tokens": c.usage.completion_tokens},
            "mean_logprob": c.mean_logprob}


class _Search:
    def __init__(self, task: Task, model: ChatModel, session: KernelSession, config: SearchConfig,
                 value_scorer: ValueScorer | None, reward_scorer: Scorer | None,
                 on_event: SearchEventHandler | None, stop: asyncio.Event | None):
        self.task, self.model, self.config = task, model, config
        self.value_scorer, self.reward_scorer = value_scorer, reward_scorer
        self.on_event = on_event or (lambda e: None)
        self.stop = stop
        self.tree = Tree(task=task.to_dict(), config={
            "search": dataclasses.asdict(config), "agent": dataclasses.asdict(config.agent),
            "value_scorer": type(value_scorer).__name__ if value_scorer is not None else None,
            "reward_scorer": getattr(reward_scorer, "name", None)})
        root_state = initial_state(task, model, session, config.agent)
        if config.max_wall_s is not None:  # the search's budget bounds its cells' time too
            root_state.deadline = time.monotonic() + config.max_wall_s
        self.isolation = root_state.traj.isolation
        self.tree.add(Node(id=0, parent=None, depth=0, messages=root_state.traj.messages, state=root_state))
        self.root_session = session
        self.sessions: set[KernelSession] = set()   # forks we own (the root's session is the caller's)
        self.candidates: list[Candidate] = []
        self.prompt_tokens = self.completion_tokens = 0
        self.model_s = self.kernel_s = 0.0
        self.stats = {"forks": 0, "fork_failures": 0, "pruned": 0, "max_live_sessions": 0, "expansions": 0}

    def emit(self, kind: str, **data: Any) -> None:
        self.on_event(SearchEvent(kind, self.tree, data))

    # -- kernels --------------------------------------------------------------------------
    async def release(self, node: Node) -> None:
        """Close the node's kernel (unless it is the caller's root session) and drop its state."""
        state: AgentState | None = node.state
        node.state = None
        if state is not None and state.session in self.sessions:
            self.sessions.discard(state.session)
            await close_session(state.session)

    async def make_room(self, keep: Node, need: int) -> None:
        """Prune the worst open leaves until `need` more kernels fit under the cap."""
        while len(self.sessions) + need > self.config.max_live_sessions:
            open_leaves = [n for n in self.tree.leaves() if n.state is not None and n is not keep
                           and n.state.session in self.sessions]
            if not open_leaves:
                return
            worst = min(open_leaves, key=lambda n: (n.q, n.prior, -n.id))
            await self.release(worst)
            worst.terminal, worst.reason = True, "pruned"
            close_up(self.tree, worst)
            self.stats["pruned"] += 1
            self.emit("prune", node=worst.id)

    # -- one expansion --------------------------------------------------------------------
    async def child_state(self, parent: Node, completion: Completion, model_s: float
                          ) -> tuple[AgentState | None, StepOutcome]:
        """Run one sampled step in a fork of the parent's kernel."""
        assert parent.state is not None
        try:
            fork = await parent.state.session.fork()
        except KernelError as e:
            self.stats["fork_failures"] += 1
            return None, StepOutcome("kernel_error", f"fork failed: {e}")
        self.sessions.add(fork)
        self.stats["forks"] += 1
        self.stats["max_live_sessions"] = max(self.stats["max_live_sessions"], len(self.sessions))
        try:
            return await apply_step(parent.state, completion, fork, turn=parent.depth + 1, model_s=model_s)
        except KernelError as e:
            self.sessions.discard(fork)
            await close_session(fork)
            return None, StepOutcome("kernel_error", str(e))

    async def expand(self, leaf: Node, round_: int) -> list[Node]:
        assert leaf.state is not None
        cfg = self.config
        await self.make_room(leaf, cfg.k)
        t0 = time.monotonic()
        completions = await sample_steps(leaf.state, cfg.k, cfg.logprobs)
        model_s = (time.monotonic() - t0) / max(1, len(completions))
        self.model_s += time.monotonic() - t0
        for c in completions:
            self.prompt_tokens += c.usage.prompt_tokens
            self.completion_tokens += c.usage.completion_tokens
        t1 = time.monotonic()
        made = await asyncio.gather(*(self.child_state(leaf, c, model_s) for c in completions))
        self.kernel_s += time.monotonic() - t1
        children = []
        for c, (state, outcome) in zip(completions, made):
            node = Node(id=self.tree.next_id(), parent=leaf.id, depth=leaf.depth + 1, step=_step_record(c),
                        prior=c.prior if c.prior is not None else 1.0, round=round_, state=state)
            if state is not None:
                node.messages = state.traj.messages
                node.cells = [s.to_dict() for s in state.traj.steps[len(leaf.state.traj.steps):]]
                node.consecutive_errors = state.consecutive_errors
                node.best_effort = state.best_effort
            else:
                node.messages = leaf.messages
            if outcome.ended:
                node.terminal, node.reason = True, outcome.status
                if outcome.status == "answered" and state is not None:
                    node.answer = state.traj.answer
            elif cfg.parse_failure_terminal and c.parse_error and not c.tool_calls:
                node.terminal, node.reason = True, "parse_error"
            elif node.depth >= cfg.max_depth:
                node.terminal, node.reason = True, "max_depth"
            self.tree.add(node)
            children.append(node)
        await self.release(leaf)  # never expanded again
        for node in children:
            if node.terminal:
                await self.release(node)
        await self.evaluate(children)
        for node in children:
            assert node.value is not None
            backup(self.tree, node, node.value)
            if node.terminal:
                close_up(self.tree, node)
            if node.reason == "answered" and node.answer is not None:
                cand = Candidate(node.answer, node.id, round_, node.value)
                self.candidates.append(cand)
                self.emit("candidate", node=node.id, answer=node.answer, value=node.value)
        if not children:
            leaf.terminal, leaf.reason = True, "no_children"
            close_up(self.tree, leaf)
        self.stats["expansions"] += 1
        self.emit("expand", node=leaf.id, children=[n.id for n in children])
        return children

    async def evaluate(self, nodes: list[Node]) -> None:
        """Set each new node's value (see value.py for the rules)."""
        to_score: list[Node] = []
        for n in nodes:
            if n.terminal and n.reason != "answered":
                n.value = FAILED
            elif n.terminal and self.reward_scorer is not None:
                n.value = terminal_reward(self.task, self.reward_scorer, n.answer)
            elif self.value_scorer is not None and (n.terminal or self.config.value_nodes == "all"):
                to_score.append(n)
            else:
                n.value = NEUTRAL
        if to_score:
            assert self.value_scorer is not None
            values = await asyncio.to_thread(self.value_scorer.score, [n.messages for n in to_score])
            if len(values) != len(to_score):
                raise ValueError(f"the value scorer returned {len(values)} values for {len(to_score)} nodes")
            for n, v in zip(to_score, values):
                n.value = clamp(v)

    # -- the search -----------------------------------------------------------------------
    def budget_left(self, t_start: float) -> tuple[SearchStatus, str] | None:
        cfg = self.config
        if self.stop is not None and self.stop.is_set():
            return "cancelled", "stopped by the user"
        if cfg.max_wall_s is not None and time.monotonic() - t_start >= cfg.max_wall_s:
            return "timeout", f"wall time limit of {cfg.max_wall_s:g} s reached"
        if cfg.max_tokens is not None and self.prompt_tokens + self.completion_tokens >= cfg.max_tokens:
            return "max_tokens", f"token limit of {cfg.max_tokens} reached"
        return None

    async def run(self) -> SearchResult:
        cfg = self.config
        t_start = time.monotonic()
        status: SearchStatus = "iterations"
        detail, it = f"{cfg.iterations} iterations done", 0
        self.emit("start")
        try:
            for it in range(1, cfg.iterations + 1):
                ended = self.budget_left(t_start)
                if ended:
                    status, detail = ended
                    it -= 1
                    break
                leaf = select_leaf(self.tree, cfg.c_puct)
                if leaf is None:
                    status, detail, it = "exhausted", "every path ended", it - 1
                    break
                self.emit("iteration", iteration=it, node=leaf.id)
                try:
                    async with asyncio.timeout(None if cfg.max_wall_s is None
                                               else max(0.0, cfg.max_wall_s - (time.monotonic() - t_start))):
                        await self.expand(leaf, it)
                except TimeoutError:
                    status, detail = "timeout", f"wall time limit of {cfg.max_wall_s:g} s reached"
                    break
            if status == "iterations" and select_leaf(self.tree, cfg.c_puct) is None:
                status, detail = "exhausted", "every path ended"
        except ModelError as e:
            status, detail = "model_error", str(e)
        finally:
            for n in self.tree.nodes.values():
                n.state = None
            sessions, self.sessions = list(self.sessions), set()
            await asyncio.gather(*(close_session(s) for s in sessions))
        return self.result(status, detail, it, time.monotonic() - t_start)

    def best_path_end(self) -> int:
        """With no answer: follow the most visited child from the root (ties: higher Q)."""
        node = self.tree.root
        while node.children:
            node = max(self.tree.children(node), key=lambda c: (c.visits, c.q, -c.id))
        return node.id

    def result(self, status: SearchStatus, detail: str, iterations: int, wall_s: float) -> SearchResult:
        cfg = self.config
        picks = {m: aggregate(self.candidates, m) for m in AGGREGATIONS}
        chosen = picks[cfg.aggregate]
        node_id = chosen.node if chosen else self.best_path_end()
        if chosen:
            traj = self.tree.path_trajectory(node_id, "answered", f"search: {status}")
            traj.answer = chosen.answer
        else:
            run_status: RunStatus = {"timeout": "timeout", "max_tokens": "max_tokens", "cancelled": "cancelled",
                                     "model_error": "model_error"}.get(status, "max_turns")  # type: ignore[assignment]
            traj = self.tree.path_trajectory(node_id, run_status, f"search found no answer ({status}: {detail})")
            traj.answer = self.tree.nodes[node_id].best_effort  # like run_agent: a best-effort answer, if any
        traj.tools = TOOLS
        traj.isolation = dict(self.isolation)
        traj.model = getattr(self.model, "name", type(self.model).__name__)
        traj.prompt_tokens, traj.completion_tokens = self.prompt_tokens, self.completion_tokens
        traj.wall_s, traj.model_s, traj.kernel_s = wall_s, self.model_s, self.kernel_s
        aggregates = {m: (c.answer if c else None) for m, c in picks.items()}
        stats = {**self.stats, "status": status, "detail": detail, "iterations": iterations,
                 "nodes": len(self.tree.nodes), "depth": self.tree.max_depth(), "candidates": len(self.candidates),
                 "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                 "wall_s": round(wall_s, 3), "model_s": round(self.model_s, 3), "kernel_s": round(self.kernel_s, 3)}
        self.tree.candidates = [c.to_dict() for c in self.candidates]
        self.tree.aggregates = aggregates
        self.tree.chosen = node_id
        self.tree.stats = stats
        traj.settings = dataclasses.asdict(cfg.agent)
        traj.search = {"method": "mcts", "config": dataclasses.asdict(cfg), "stats": stats,
                       "aggregates": aggregates, "candidates": self.tree.candidates}
        self.emit("end", status=status, answer=chosen.answer if chosen else None)
        return SearchResult(self.tree, chosen.answer if chosen else None, node_id, list(self.candidates),
                            aggregates, traj, status, detail, iterations)


async def run_search(
    task: Task,
    model: ChatModel,
    session: KernelSession,
    config: SearchConfig | None = None,
    *,
    value_scorer: ValueScorer | None = None,
    reward_scorer: Scorer | None = None,
    on_event: SearchEventHandler | None = None,
    stop: asyncio.Event | None = None,
) -> SearchResult:
    """Grow a tree from `session` (started, holding the task's files; it stays the caller's).

    `reward_scorer` (collection only: it reads the gold answer) rewards answered terminal
    nodes; `value_scorer` values new nodes at inference; with neither, see value.py. Every
    fork the search makes is closed before it returns, whatever happens.
    """
    search = _Search(task, model, session, config or SearchConfig(), value_scorer, reward_scorer, on_event, stop)
    return await search.run()
